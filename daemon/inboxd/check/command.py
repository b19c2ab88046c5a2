"""`inboxd validate FILE… --purpose P [--mode basic|strict] [--json]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..config import Config
from ._check import check_file
from ._report import CheckReport


def validate_command(config: Config, files: list[Path], purpose: str, mode: str, *, as_json: bool) -> int:
    """Exit 0 if every file passes, 1 if any fails (a file that cannot be read fails)."""
    reports: list[dict] = []
    failed = False
    for path in files:
        try:
            report = check_file(path, purpose, mode, max_line_bytes=config.check.max_line_bytes,
                                max_errors=config.check.max_errors)
        except OSError as exc:
            failed = True
            entry = {"name": str(path), "purpose": purpose, "mode": mode, "passed": False,
                     "errors": [{"line": None, "rule": "file.unreadable", "message": exc.strerror or str(exc)}]}
            reports.append(entry)
            if not as_json:
                print(f"{path}: file.unreadable: {exc.strerror or exc}", file=sys.stderr)
            continue
        failed |= not report.passed
        entry = {**report.to_json(), "name": str(path)}
        reports.append(entry)
        if not as_json:
            _print(path, report)
    if as_json:
        print(json.dumps(reports if len(reports) != 1 else reports[0], indent=2))
    return 1 if failed else 0


def _print(path: Path, report: CheckReport) -> None:
    if report.passed:
        fmt = f", {report.format}" if report.format else ""
        print(f"{path}: ok ({report.records} records, {report.bytes} bytes{fmt}; {report.mode})")
        return
    for issue in report.errors:
        where = f"{path}:{issue.line}" if issue.line is not None else f"{path}"
        print(f"{where}: {issue.rule}: {issue.message}")
    more = " (stopped at the error limit)" if report.truncated else ""
    print(f"{path}: FAILED, {len(report.errors)} error(s){more}")
