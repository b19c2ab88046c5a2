"""Shared pieces of the reliability suite (issue 7).

The suite has two sizes: the quick form runs in `.ci/run` (`make test`), the full form with
`INBOXD_RELIABILITY=full` (see the README's Reliability section). `scale(quick, full)` picks.
Every test records its figures with `record(test, **figures)`; with
`INBOXD_RELIABILITY_REPORT=path` they are appended there as JSON lines, which
`python -m tests.reliability.report path` turns into the README's table.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
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


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def batch_bytes(tag: str, lines: int = 20, pad: int = 0) -> bytes:
    out = []
    for i in range(lines):
        body = {"model": "m", "messages": [{"role": "user", "content": f"{tag} #{i} " + "x" * pad}]}
        out.append(json.dumps({"custom_id": f"{tag}-{i}", "body": body}))
    return ("\n".join(out) + "\n").encode()


def big_batch_bytes(tag: str, size: int) -> bytes:
    """A valid batch file of about `size` bytes (for multipart)."""
    line_pad = 4000
    n = max(1, size // (line_pad + 120))
    return batch_bytes(tag, n, pad=line_pad)


def drop(inbox: Path, name: str, data: bytes, staging: Path) -> str:
    """Write elsewhere, then rename in; return the sha256."""
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{name}.{random.getrandbits(32):08x}"
    tmp.write_bytes(data)
    os.rename(tmp, inbox / name)
    return sha(data)


def manifests(inbox: Path) -> list[dict]:
    done = inbox / "done"
    return [json.loads(p.read_text()) for p in sorted(done.glob("*.manifest.json"))] if done.exists() else []


def error_sidecars(inbox: Path) -> list[dict]:
    failed = inbox / "failed"
    return [json.loads(p.read_text()) for p in sorted(failed.glob("*.error.json"))] if failed.exists() else []


def claimed(inbox: Path) -> list[Path]:
    work = inbox / ".inboxd"
    if not work.exists():
        return []
    return [p for p in work.rglob("*") if not p.is_dir()]


def waiting(inbox: Path) -> list[str]:
    return sorted(p.name for p in inbox.iterdir() if p.name not in ("done", "failed", ".inboxd"))


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
