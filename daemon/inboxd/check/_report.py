"""What a check says: the counts and hash of one pass, and the issues found, each with its
line, a stable rule id and a message. `to_json()` is the stable form the error sidecar embeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA = "inboxd.check/v1"


@dataclass(frozen=True)
class CheckIssue:
    line: int | None
    rule: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "rule": self.rule, "message": self.message}

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.rule}: {self.message}"


@dataclass
class CheckReport:
    name: str
    purpose: str
    mode: str
    bytes: int = 0
    sha256: str = ""
    lines: int = 0
    records: int = 0
    format: str | None = None
    errors: list[CheckIssue] = field(default_factory=list)
    truncated: bool = False  # stopped collecting errors at max_errors

    @property
    def passed(self) -> bool:
        return not self.errors

    @property
    def first_error(self) -> CheckIssue | None:
        return self.errors[0] if self.errors else None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "name": self.name,
            "purpose": self.purpose,
            "mode": self.mode,
            "passed": self.passed,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "lines": self.lines,
            "records": self.records,
            "format": self.format,
            "errors": [e.to_json() for e in self.errors],
            "truncated": self.truncated,
        }
