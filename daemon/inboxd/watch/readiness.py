"""When is a file complete? SPEC §2: a rename-in is complete at once; a file written in
place is complete once its size and mtime have not changed for `settle_seconds`, measured
on inboxd's own clock from when it first saw the file (mtimes can lie).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


@dataclass
class _Seen:
    first_seen: float
    last_change: float
    signature: tuple[int, int, int]


def signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class ReadinessTracker:
    """Per path: first seen, last change. Not thread-safe: the daemon loop owns it."""

    def __init__(self, settle_seconds: float) -> None:
        self.settle_seconds = settle_seconds
        self._seen: dict[str, _Seen] = {}

    def observe(self, path: str, st: os.stat_result, *, moved_in: bool = False, now: float | None = None) -> bool:
        """Record a look at a regular file; True when it is ready to claim."""
        now = time.monotonic() if now is None else now
        sig = signature(st)
        seen = self._seen.get(path)
        if seen is None:
            seen = self._seen[path] = _Seen(now, now, sig)
        elif seen.signature != sig:
            seen.signature, seen.last_change = sig, now
        if moved_in:
            return True
        return now - seen.last_change >= self.settle_seconds

    def forget(self, path: str) -> None:
        self._seen.pop(path, None)

    def forget_under(self, folder: str) -> None:
        prefix = folder.rstrip("/") + "/"
        for path in [p for p in self._seen if p.startswith(prefix)]:
            del self._seen[path]

    def due(self, now: float | None = None) -> list[str]:
        """Paths still settling whose quiet period has run out: look at them again."""
        now = time.monotonic() if now is None else now
        return [p for p, s in self._seen.items() if now - s.last_change >= self.settle_seconds]

    def next_due(self) -> float | None:
        """The monotonic time the next settling path is due, or None."""
        if not self._seen:
            return None
        return min(s.last_change for s in self._seen.values()) + self.settle_seconds

    def pending(self) -> int:
        return len(self._seen)

    def pending_in(self, folder: str) -> int:
        prefix = folder.rstrip("/") + "/"
        return sum(1 for p in self._seen if p.startswith(prefix))
