"""`<stem>.batch.json`, `inboxd.batch/v2` (SPEC §10): the model, its JSON Schema (shipped as
``schemas/batch-v2.schema.json``; `python -m inboxd.batch.sidecar` writes it again), and
`publish`, the one place a batch.json is written into an outbox (last, atomically: the signal
that every other file of the set is complete). `publish` calls `on_publish` after the file is
in place, for whoever must hear of a delivery.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonDict

from ..state import sidecars

SCHEMA_V2 = "inboxd.batch/v2"
SCHEMA_FILE = "batch-v2.schema.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InputInfo(_Model):
    manifest: str | None = Field(description="the input's manifest in done/, when the daemon archived it")
    path: str | None = Field(None, description="the input as archived (or as given to `inboxd batch`)")
    sha256: str | None
    requests: int
    bytes: int


class JobInfo(_Model):
    id: str | None
    part: int = Field(ge=1)
    round: int = Field(ge=1)
    status: str | None
    requests: int
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    created_at: str | None
    completed_at: str | None
    error: str | None


class OutputFile(_Model):
    path: str
    bytes: int
    sha256: str
    lines: int


class Outputs(_Model):
    output: OutputFile | None
    errors: OutputFile | None
    results: OutputFile | None


class CountsInfo(_Model):
    succeeded: int
    failed: int
    missing: int


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Timing(_Model):
    dropped_at: str | None
    uploaded_at: str | None
    first_created_at: str | None
    finished_at: str | None
    delivered_at: str | None


class BatchV2(_Model):
    """One input's delivery, whatever the number of its jobs."""

    schema_: str = Field(SCHEMA_V2, alias="schema", pattern=r"^inboxd\.batch/v2$")
    input: InputInfo
    jobs: list[JobInfo]
    outputs: Outputs
    counts: CountsInfo
    errors_by_code: dict[str, int] = Field(description="failed requests by HTTP status (\"unknown\" when none)")
    usage: Usage
    rounds: int
    timing: Timing
    host: str
    inboxd_version: str

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_TIME: JsonDict = {"format": "date-time"}


class OutputFileV1(_Model):
    path: str = Field(min_length=1)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    lines: int = Field(ge=0)


class JobV1(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(pattern=_ID)
    status: Literal["COMPLETED", "FAILED", "EXPIRED", "CANCELLED"]
    endpoint: str
    model_id: str | None = None
    input_file_id: str = Field(pattern=_ID)
    output_file_id: str | None = Field(pattern=_ID)
    error_file_id: str | None = Field(pattern=_ID)
    progress: float | None = Field(ge=0, le=100)
    created_at: Any = Field(None, description="as the server sent it")
    completed_at: Any = Field(None, description="as the server sent it")
    error: Any = Field(description="the job's error (FAILED, EXPIRED, CANCELLED), else null")


class InputV1(_Model):
    manifest: str | None = Field(description="the input's manifest in done/ (null: inboxd batch)")
    path: str | None = Field(None, description="the archived input")
    sha256: str | None = Field(pattern=r"^[0-9a-f]{64}$")
    requests: int | None = Field(ge=0)


class OutputsV1(_Model):
    output: OutputFileV1 | None
    errors: OutputFileV1 | None
    results: OutputFileV1 | None


class CountsV1(_Model):
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    missing: int | None = Field(ge=0, description="input requests in neither output nor error file; null when "
                                "the input count is unknown")


class TimingV1(_Model):
    dropped_at: str | None = Field(json_schema_extra=_TIME)
    uploaded_at: str | None = Field(json_schema_extra=_TIME)
    created_at: str | None = Field(json_schema_extra=_TIME)
    finished_at: str | None = Field(json_schema_extra=_TIME)
    delivered_at: str | None = Field(json_schema_extra=_TIME)


class BatchV1(_Model):
    """inboxd.batch/v1: one job's results delivered into the outbox (the daemon's batch inboxes)."""

    schema_: Literal["inboxd.batch/v1"] = Field(alias="schema")
    batch: JobV1
    input: InputV1
    outputs: OutputsV1
    counts: CountsV1
    timing: TimingV1
    host: str
    inboxd_version: str


def json_schema() -> dict[str, Any]:
    """The JSON Schema of inboxd.batch/v2, as shipped."""
    schema = BatchV2.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_V2, **schema}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


# batch.json goes through the state layer's one sidecar writer, in its one format
SCHEMA_V1, SCHEMA_FILE_V1 = "inboxd.batch/v1", "batch.schema.json"
sidecars.register(SCHEMA_V1, BatchV1)
sidecars.register(SCHEMA_V2, BatchV2)

OnPublish = Callable[[Path, dict[str, Any]], None]


def publish(path: Path, data: dict[str, Any], on_publish: OnPublish | None = None) -> None:
    """Write a batch.json (v1 or v2) atomically, then tell `on_publish`: every delivery goes here."""
    sidecars.write(path, data)
    if on_publish is not None:
        on_publish(path, data)


if __name__ == "__main__":
    folder = Path(__file__).resolve().parent.parent / "schemas"
    (folder / SCHEMA_FILE).write_text(schema_text(), encoding="utf-8")
    (folder / SCHEMA_FILE_V1).write_text(sidecars.schema_text(SCHEMA_V1), encoding="utf-8")
    sys.stdout.write(f"{folder / SCHEMA_FILE}\n{folder / SCHEMA_FILE_V1}\n")
