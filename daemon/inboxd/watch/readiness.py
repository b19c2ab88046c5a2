"""When is a file complete? SPEC §2: a rename-in is complete at once; a file written in
place is complete once its size and mtime have not changed for `settle_seconds`, measured
on inboxd's own clock from when it first saw the file (mtimes can lie).

That is the first half. The daemon then asks the kernel whether anyone still has the file
open for writing (`lease.py`) before it claims it; while someone does, the file is `hold`-en
here and looked at again one settle period later. Where the kernel cannot say (no lease on
NFS or FUSE, or no `CAP_LEASE`), the evidence is the events: a file seen being created in
place (or growing) needs a close-write event after its last change (`needs_close`).
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
    written_here: bool = False  # seen created in place, or growing, while we watched
    closed: bool = False  # a close-write event came after the last change
    held_since: float | None = None  # found open for writing since
    warned_at: float | None = None


def signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class ReadinessTracker:
    """Per path: first seen, last change. Not thread-safe: the daemon loop owns it.

    It holds only the paths the claimer took into its window (`Claimer`): how many per
    folder is kept as a count (`count_in`), so the window's bound is checked in O(1)."""

    def __init__(self, settle_seconds: float) -> None:
        self.settle_seconds = settle_seconds
        self._seen: dict[str, _Seen] = {}
        self._counts: dict[str, int] = {}  # folder -> paths of it held here

    def __contains__(self, path: str) -> bool:
        return path in self._seen

    def count_in(self, folder: str) -> int:
        return self._counts.get(folder.rstrip("/") or "/", 0)

    def _count(self, path: str, delta: int) -> None:
        folder = os.path.dirname(path)
        n = self._counts.get(folder, 0) + delta
        if n > 0:
            self._counts[folder] = n
        else:
            self._counts.pop(folder, None)

    def observe(self, path: str, st: os.stat_result, *, moved_in: bool = False, now: float | None = None,
                created: bool = False, closed: bool = False) -> bool:
        """Record a look at a regular file; True when it has settled (or was renamed in).

        `created` / `closed`: an in-place create or a close-write event came for this path.
        """
        now = time.monotonic() if now is None else now
        sig = signature(st)
        seen = self._seen.get(path)
        if seen is None:
            seen = self._seen[path] = _Seen(now, now, sig)
            self._count(path, 1)
        elif seen.signature != sig:
            seen.signature, seen.last_change = sig, now
            seen.written_here, seen.closed = True, False
        if created:
            seen.written_here = True
        if closed:
            seen.closed = True  # the event was read before this look: it follows the change seen now
        if moved_in:
            return True
        return now - seen.last_change >= self.settle_seconds

    def needs_close(self, path: str) -> bool:
        """Without a lease: was the file written while we watched, and no close-write seen since?"""
        seen = self._seen.get(path)
        return seen is not None and seen.written_here and not seen.closed

    def hold(self, path: str, now: float | None = None) -> float:
        """Someone still writes the file: look again one settle period later. Returns how long
        it has been held open so far."""
        now = time.monotonic() if now is None else now
        seen = self._seen.get(path)
        if seen is None:
            return 0.0
        if seen.held_since is None:
            seen.held_since = now
        seen.last_change = now
        return now - seen.held_since

    def should_warn(self, path: str, after: float, every: float = 600.0, now: float | None = None) -> float | None:
        """Held open for `after` seconds: the seconds held, once and then every `every` seconds; else None."""
        now = time.monotonic() if now is None else now
        seen = self._seen.get(path)
        if seen is None or seen.held_since is None or now - seen.held_since < after:
            return None
        if seen.warned_at is not None and now - seen.warned_at < every:
            return None
        seen.warned_at = now
        return now - seen.held_since

    def held_open(self, folder: str | None = None) -> list[str]:
        """Paths found open for writing at their last look."""
        prefix = None if folder is None else folder.rstrip("/") + "/"
        return [p for p, s in self._seen.items()
                if s.held_since is not None and (prefix is None or p.startswith(prefix))]

    def forget(self, path: str) -> None:
        if self._seen.pop(path, None) is not None:
            self._count(path, -1)

    def forget_under(self, folder: str) -> None:
        prefix = folder.rstrip("/") + "/"
        for path in [p for p in self._seen if p.startswith(prefix)]:
            self.forget(path)

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

    def paths_in(self, folder: str) -> list[str]:
        prefix = folder.rstrip("/") + "/"
        return [p for p in self._seen if p.startswith(prefix)]

    def pending_in(self, folder: str) -> int:
        return len(self.paths_in(folder))
