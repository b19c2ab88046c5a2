"""The event body (SPEC §11): the Standard Webhooks shape ``{"type", "timestamp", "data"}``.

The pydantic models below are the contract: `schemas/event.schema.json` is generated from
`EventBody` (`python -m inboxd.events.payload > daemon/inboxd/schemas/event.schema.json`), and a
test compares the shipped file with the model. The builders make a body from what the stage
that publishes a sidecar already has in hand (the journal row's sidecar text, the batch.json),
so recording an event reads no file on the hot path.
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

SCHEMA_ID = "inboxd.event/v1"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inbox: str = Field(description="The inbox folder (absolute path) the file was dropped in.")
    name: str = Field(description="The file's name as it was dropped.")
    host: str = Field(description="The host that published the sidecar (and owns the event).")


class FileArchivedData(_Data):
    manifest: str = Field(description="Absolute path of the published manifest (`inboxd.manifest/v1`).")
    file_id: str | None = Field(description="The Together file id.")
    sha256: str | None = Field(description="sha256 (hex) of the uploaded content.")
    purpose: str | None = Field(description="The file's purpose (fine-tune, batch-api, eval, ...).")
    bytes: int | None = Field(description="Size of the uploaded file in bytes.")
    path: str | None = Field(description="Where the data file lies now (done/, or in place with on_success = "
                                         "\"keep\"); null when it was deleted (on_success = \"delete\").")
    method: str | None = Field(description="single, multipart, existing (the server already had the content), or "
                                          "split (a batch input uploaded part by part by its ledger; file_id null).")


class FileFailedData(_Data):
    error: str = Field(description="Absolute path of the published error sidecar (`inboxd.error/v1`).")
    stage: str | None = Field(description="Where the file failed: inspect, validate, upload or archive.")
    rule: str | None = Field(description="The rule or error kind, e.g. batch.custom_id.missing, "
                                         "processing_failed.")
    message: str | None = Field(description="The error message (redacted like every log line).")
    sha256: str | None = Field(description="sha256 (hex) of the file, where it was read.")
    path: str | None = Field(description="Where the refused data file lies now (failed/).")


class BatchCounts(BaseModel):
    model_config = ConfigDict(extra="allow")

    succeeded: int | None = Field(None, description="Requests answered with success.")
    failed: int | None = Field(None, description="Requests answered with an error.")
    missing: int | None = Field(None, description="Requests without an answer.")


class BatchDeliveredData(_Data):
    batch: str = Field(description="Absolute path of the published `<stem>.batch.json` (`inboxd.batch/v2`; "
                                   "v1 for a job followed since before the ledger).")
    batch_id: str | None = Field(description="The last job's id (of its last part and round).")
    status: str | None = Field(description="COMPLETED when every request has its final answer (counts.missing 0), "
                                           "else the last job's status: FAILED, EXPIRED, CANCELLED.")
    counts: BatchCounts = Field(description="The answers in the outbox, as batch.json counts them.")
    outbox: str | None = Field(description="The outbox folder holding the results.")
    input_file_id: str | None = Field(description="The Together file id of the input (of its first part).")


class PingData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="The host that sent the ping.")
    sink: str = Field(description="The sink's name in inboxd's configuration.")


_TIMESTAMP = "When the event was recorded (RFC 3339, UTC); the same on every redelivery."


class FileArchived(BaseModel):
    """A manifest was published: the file is uploaded."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["file.archived"]
    timestamp: datetime = Field(description=_TIMESTAMP)
    data: FileArchivedData


class FileFailed(BaseModel):
    """An error sidecar was published: the file was refused."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["file.failed"]
    timestamp: datetime = Field(description=_TIMESTAMP)
    data: FileFailedData


class BatchDelivered(BaseModel):
    """A batch.json was published: the results are complete in the outbox."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["batch.delivered"]
    timestamp: datetime = Field(description=_TIMESTAMP)
    data: BatchDeliveredData


class Ping(BaseModel):
    """`inboxd config check --ping`: a test delivery, nothing to act on."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["ping"]
    timestamp: datetime = Field(description=_TIMESTAMP)
    data: PingData


class EventBody(RootModel[Annotated[FileArchived | FileFailed | BatchDelivered | Ping, Field(discriminator="type")]]):
    """One event as a webhook's body (and a command sink's stdin)."""


def json_schema() -> dict[str, Any]:
    schema = EventBody.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            **schema, "title": "inboxd event (Standard Webhooks body)"}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


# --- building bodies --------------------------------------------------------------------


def new_id() -> str:
    """A webhook-id: ``msg_`` + milliseconds (hex, so ids sort by time) + 64 random bits."""
    return f"msg_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(body: dict[str, Any]) -> str:
    """The body's bytes as sent (and signed): compact JSON, ASCII (a name's undecodable bytes are
    escapes, never invalid UTF-8)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True)


def file_archived(sidecar_path: str, sidecar: dict[str, Any], *, inbox: str, name: str, when: float) -> dict[str, Any]:
    source, file, upload = sidecar.get("source") or {}, sidecar.get("file") or {}, sidecar.get("upload") or {}
    return {"type": "file.archived", "timestamp": rfc3339(when), "data": {
        "manifest": sidecar_path, "inbox": inbox, "name": name,
        "host": upload.get("host") or socket.gethostname(),
        "file_id": file.get("id"), "sha256": source.get("sha256"),
        "purpose": file.get("purpose") or ("batch-api" if upload.get("method") == "split" else None),
        "bytes": source.get("bytes"), "path": source.get("path"), "method": upload.get("method"),
    }}


def file_failed(sidecar_path: str, sidecar: dict[str, Any], *, inbox: str, name: str, when: float) -> dict[str, Any]:
    source, error = sidecar.get("source") or {}, sidecar.get("error") or {}
    return {"type": "file.failed", "timestamp": rfc3339(when), "data": {
        "error": sidecar_path, "inbox": inbox, "name": name, "host": sidecar.get("host") or socket.gethostname(),
        "stage": sidecar.get("stage"), "rule": error.get("kind"), "message": error.get("message"),
        "sha256": source.get("sha256"), "path": source.get("path"),
    }}


def batch_delivered(sidecar_path: str, sidecar: dict[str, Any], *, inbox: str, when: float) -> dict[str, Any]:
    batch, inp = sidecar.get("batch") or {}, sidecar.get("input") or {}
    input_path = inp.get("path") or ""
    counts = {k: v for k, v in (sidecar.get("counts") or {}).items() if isinstance(v, int) or v is None}
    jobs = [j for j in sidecar.get("jobs") or [] if isinstance(j, dict) and j.get("id")]
    if jobs:  # inboxd.batch/v2: the input's jobs; its status is COMPLETED once no request is missing
        batch = {"id": jobs[-1]["id"], "input_file_id": jobs[0].get("input_file_id"),
                 "status": "COMPLETED" if not counts.get("missing") else jobs[-1].get("status")}
    return {"type": "batch.delivered", "timestamp": rfc3339(when), "data": {
        "batch": sidecar_path, "inbox": inbox, "name": input_path.rsplit("/", 1)[-1] if input_path else "",
        "host": sidecar.get("host") or socket.gethostname(), "batch_id": batch.get("id"),
        "status": batch.get("status"), "counts": counts, "outbox": sidecar_path.rsplit("/", 1)[0],
        "input_file_id": batch.get("input_file_id"),
    }}


def ping(sink: str, when: float) -> dict[str, Any]:
    return {"type": "ping", "timestamp": rfc3339(when), "data": {"host": socket.gethostname(), "sink": sink}}


if __name__ == "__main__":  # pragma: no cover - regenerates the shipped schema
    sys.stdout.write(schema_text())
