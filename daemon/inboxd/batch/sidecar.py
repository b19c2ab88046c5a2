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
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..state.fs import write_atomic

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


def json_schema() -> dict[str, Any]:
    """The JSON Schema of inboxd.batch/v2, as shipped."""
    schema = BatchV2.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_V2, **schema}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


OnPublish = Callable[[Path, dict[str, Any]], None]


def publish(path: Path, data: dict[str, Any], on_publish: OnPublish | None = None) -> None:
    """Write a batch.json (v1 or v2) atomically, then tell `on_publish`: every delivery goes here."""
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    if on_publish is not None:
        on_publish(path, data)


if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "schemas" / SCHEMA_FILE
    target.write_text(schema_text(), encoding="utf-8")
    sys.stdout.write(f"{target}\n")
