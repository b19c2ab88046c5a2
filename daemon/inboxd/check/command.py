"""The work of `inboxd validate FILE… --purpose P [--mode basic|strict]`, as data: one
`Verdict` per file, as each is checked (the command line renders them as they come)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ._check import check_file
from ._report import CheckReport


@dataclass(frozen=True)
class Verdict:
    path: Path
    purpose: str
    mode: str
    report: CheckReport | None  # None: the file could not be read
    unreadable: str | None = None  # why not

    @property
    def passed(self) -> bool:
        return self.report is not None and self.report.passed

    def to_json(self) -> dict[str, Any]:
        if self.report is None:
            return {"name": str(self.path), "purpose": self.purpose, "mode": self.mode, "passed": False,
                    "errors": [{"line": None, "rule": "file.unreadable", "message": self.unreadable}]}
        return {**self.report.to_json(), "name": str(self.path)}


def validate_files(config: Config, files: Iterable[Path], purpose: str, mode: str) -> Iterator[Verdict]:
    """A file that cannot be read fails."""
    for path in files:
        try:
            report = check_file(path, purpose, mode, max_line_bytes=config.check.max_line_bytes,
                                max_errors=config.check.max_errors)
        except OSError as exc:
            yield Verdict(path, purpose, mode, None, exc.strerror or str(exc))
            continue
        yield Verdict(path, purpose, mode, report)
