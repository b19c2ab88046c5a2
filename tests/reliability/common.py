"""Shared pieces of the reliability suite (issue 7).

The suite has two sizes: the quick form runs in `.ci/run` (`make test`), the full form with
`INBOXD_RELIABILITY=full` (see docs/reliability.md). `scale(quick, full)` picks.
Every test records its figures with `record(test, **figures)`; with
`INBOXD_RELIABILITY_REPORT=path` they are appended there as JSON lines, which
`python -m tests.reliability.report path` turns into the table in docs/reliability.md.

The files, sidecars and exactly-once helpers are `tests/helpers/files.py`, shared with the
other daemon tests.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

FULL = os.environ.get("INBOXD_RELIABILITY") == "full"


def scale(quick: Any, full: Any) -> Any:
    return full if FULL else quick


def record(test: str, **figures: Any) -> None:
    figures = {"test": test, "form": "full" if FULL else "quick", **figures}
    print(f"\nRELIABILITY {json.dumps(figures)}")
    path = os.environ.get("INBOXD_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(figures) + "\n")


def vm_hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self.t0, 1)
