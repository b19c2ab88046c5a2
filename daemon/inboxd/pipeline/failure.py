"""One model of a failed file: what `process`, `archive` and `sidecars` pass around.

A `Failure` is raised where a file is found wanting (inspect, validate, upload) and caught
once, in `process.handle`, which sends the file to failed/ with an error sidecar made
from it. Transient trouble is not a Failure: it is retried (see `process.TRANSIENT`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Failure(Exception):
    stage: str  # inspect | validate | upload | archive
    kind: str  # the rule or the error kind, e.g. batch.custom_id.missing, processing_failed
    message: str
    line: int | None = None
    status: int | None = None  # the HTTP status, where one applies
    validation: dict[str, Any] | None = None  # the validation report
    file_kind: str = "regular"  # what the claimed path was: regular, symlink, fifo, ...

    def __str__(self) -> str:
        return f"{self.stage}: {self.kind}: {self.message}"

    def error(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "line": self.line, "status": self.status}
