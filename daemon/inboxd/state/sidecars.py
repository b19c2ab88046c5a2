"""Every sidecar inboxd writes beside a data file, in one byte format: the manifest
(`inboxd.manifest/v1`, done/), the error sidecar (`inboxd.error/v1`, failed/).

Each kind is a pydantic model: `encode` writes any sidecar through its model (so a manifest
has the same bytes whether the normal path, a recovery or a batch update wrote it), and
the JSON Schemas shipped in `inboxd.schemas` are generated from the models
(`python -m inboxd.state.sidecars` rewrites them; a test fails when they differ). No
sidecar ever holds the API key: nothing here is given it, and every error message passes
through `inboxd.log.redact_text`.
"""

from __future__ import annotations

import json
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonDict

from .. import __version__
from ..log import redact_text
from ..schemas import ERROR, MANIFEST
from .fs import write_atomic

MANIFEST_SUFFIX = ".manifest.json"
ERROR_SUFFIX = ".error.json"

_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_SHA256 = r"^[0-9a-f]{64}$"
_TIME: JsonDict = {"format": "date-time"}


def iso(ts: float | None) -> str | None:
    """A POSIX time as RFC 3339 in UTC, to the second (`2026-11-24T22:00:00Z`)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_ns(ns: int | None) -> str | None:
    return iso(ns / 1e9) if ns is not None else None


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileObjectModel(BaseModel):
    """The Files API file object, as the server returned it (unknown fields kept)."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(pattern=_ID)
    object: str | None = None
    created_at: int | None = None
    type: str | None = None
    purpose: str
    filename: str | None = None
    bytes: int | None = Field(default=None, ge=0)
    line_count: int | None = Field(default=None, ge=0)
    processed: bool | None = None
    processing_status: str | None = None


class ManifestSource(_Closed):
    inbox: str = Field(min_length=1)
    name: str = Field(min_length=1)
    path: str | None = Field(description="where the data file is now; null when on_success = delete")
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=_SHA256)
    mtime: str = Field(json_schema_extra=_TIME)


class Validation(BaseModel):
    model_config = ConfigDict(extra="allow")
    mode: Literal["off", "basic", "strict"]
    passed: bool
    records: int | None = Field(default=None, ge=0)
    format: str | None = None


class BatchSection(BaseModel):
    """batch-api inboxes with [inboxes.batch] (SPEC §10): the job, rewritten as it moves."""

    model_config = ConfigDict(extra="allow")
    id: str | None
    status: str | None
    progress: float | None
    updated_at: str = Field(json_schema_extra=_TIME)
    error: Any = None
    sidecar: str | None = Field(default=None, description="<outbox>/<stem>.batch.json, once delivered")
    ledger: str | None = Field(default=None, description="<done>/<archived name>.ledger.json: parts, rounds, jobs")
    jobs: list[str] = Field(default_factory=list, description="every job id of the input, from the moment it exists")


class Upload(_Closed):
    method: Literal["single", "multipart", "existing", "split"] = Field(
        description="split: a batch input cut into parts, each uploaded by its ledger (file is null)")
    parts: int = Field(ge=0)
    attempts: int = Field(ge=1)
    started_at: str = Field(json_schema_extra=_TIME)
    finished_at: str = Field(json_schema_extra=_TIME)
    seconds: float = Field(ge=0)
    host: str
    inboxd_version: str


class Manifest(_Closed):
    """inboxd.manifest/v1: a file uploaded and recorded."""

    schema_: Literal["inboxd.manifest/v1"] = Field(alias="schema")
    file: FileObjectModel | None = Field(description="null for a batch input split in parts (upload.method split)")
    source: ManifestSource
    validation: Validation
    batch: BatchSection | None = None
    upload: Upload


class ErrorSource(_Closed):
    inbox: str = Field(min_length=1)
    name: str = Field(min_length=1)
    path: str = Field(description="where the failed file is now, in failed/")
    kind: Literal["regular", "symlink", "fifo", "socket", "device", "directory", "unknown"]
    bytes: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, pattern=_SHA256)
    mtime: str | None = Field(default=None, json_schema_extra=_TIME)


class ErrorDetail(_Closed):
    kind: str = Field(min_length=1)
    message: str
    line: int | None = Field(default=None, ge=1)
    status: int | None = None


class ErrorSidecar(_Closed):
    """inboxd.error/v1: why a file went to failed/."""

    schema_: Literal["inboxd.error/v1"] = Field(alias="schema")
    source: ErrorSource
    stage: Literal["inspect", "validate", "upload", "batch", "archive", "internal"]
    error: ErrorDetail
    validation: dict[str, Any] | None = Field(
        description="The validation report (inboxd.check), or null when the file was not checked.")
    attempts: int = Field(ge=0)
    time: str = Field(json_schema_extra=_TIME)
    host: str | None = None
    inboxd_version: str | None = None


MODELS: dict[str, type[BaseModel]] = {MANIFEST: Manifest, ERROR: ErrorSidecar}
SCHEMA_FILES = {MANIFEST: "manifest.schema.json", ERROR: "error.schema.json"}


def register(kind: str, model: type[BaseModel]) -> None:
    """A sidecar kind whose model lives above this layer (batch.json): `write` encodes it
    through that model too. Its owner generates its shipped schema (`json_schema(kind)`)."""
    MODELS[kind] = model


def encode(data: dict[str, Any]) -> bytes:
    """A sidecar's bytes, through the model its `schema` names: one format on every path."""
    model = MODELS[data["schema"]].model_validate(data)
    return model.model_dump_json(by_alias=True, indent=2, exclude_unset=True).encode("utf-8") + b"\n"


def write(path: Path, data: dict[str, Any], *, sync_folder: bool = True) -> None:
    """Write a sidecar atomically (temp file, fsync, rename; the folder fsynced unless told not)."""
    write_atomic(path, encode(data), sync_folder=sync_folder)


def manifest(*, file_object: dict[str, Any] | None, inbox: Path, name: str, path: Path | None, size: int, sha256: str,
             mtime_ns: int, validation: dict[str, Any], timing: tuple[float, float], method: str, parts: int,
             attempts: int) -> dict[str, Any]:
    started_at, finished_at = timing
    return {
        "schema": MANIFEST,
        "file": file_object,
        "source": {"inbox": str(inbox), "name": name, "path": str(path) if path is not None else None,
                   "bytes": size, "sha256": sha256, "mtime": iso_ns(mtime_ns)},
        "validation": validation,
        "upload": {"method": method, "parts": parts, "attempts": max(1, attempts), "started_at": iso(started_at),
                   "finished_at": iso(finished_at), "seconds": round(max(0.0, finished_at - started_at), 3),
                   "host": socket.gethostname(), "inboxd_version": __version__},
    }


def error_sidecar(*, inbox: Path, name: str, path: Path, stage: str, kind: str, error: dict[str, Any],
                  validation: dict[str, Any] | None, size: int | None = None, sha256: str | None = None,
                  mtime_ns: int | None = None, attempts: int = 0, when: float) -> dict[str, Any]:
    return {
        "schema": ERROR,
        "source": {"inbox": str(inbox), "name": name, "path": str(path), "kind": kind, "bytes": size,
                   "sha256": sha256, "mtime": iso_ns(mtime_ns)},
        "stage": stage,
        "error": {**error, "message": redact_text(str(error.get("message", "")))},
        "validation": validation,
        "attempts": attempts,
        "time": iso(when),
        "host": socket.gethostname(),
        "inboxd_version": __version__,
    }


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a sidecar kind, generated from its model."""
    schema = MODELS[kind].model_json_schema(by_alias=True, mode="serialization")
    title = (MODELS[kind].__doc__ or "").strip().splitlines()[0]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://inboxd.invalid/schemas/{kind}", **schema, "title": title}


def schema_text(kind: str) -> str:
    return json.dumps(json_schema(kind), indent=2) + "\n"


def main(folder: str) -> None:
    for kind, name in SCHEMA_FILES.items():
        Path(folder, name).write_text(schema_text(kind), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent.parent / "schemas"))
