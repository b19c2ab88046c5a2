"""Never stall in silence: a file seen by more than `STUCK_SCANS` scans and never claimed is
stuck; it is said (`file.stuck`, again every `REPEAT` seconds) with the reason, and counted
for status, metrics and health."""

from __future__ import annotations

import os
import time

import structlog

from ..watch.readiness import ReadinessTracker
from .inboxes import InboxState

log = structlog.get_logger("inboxd.daemon")

STUCK_SCANS = 3  # seen by more scans than this and not claimed: file.stuck
REPEAT = 600.0  # a stuck file is warned about again every 10 minutes


class Sightings:
    def __init__(self, tracker: ReadinessTracker) -> None:
        self.tracker = tracker
        self.seen: dict[str, int] = {}  # path -> scans in which it was seen and not claimed
        self.warned: dict[str, float] = {}
        self.claim_errors: dict[str, str] = {}  # path -> why its claim (the rename) fails

    def count(self, state: InboxState, present: set[str]) -> None:
        """One scan saw `present` in this inbox: a path seen by more than STUCK_SCANS scans is
        warned about with the reason; a path no longer there is forgotten."""
        prefix = state.key.rstrip("/") + "/"
        for path in [p for p in self.seen if p.startswith(prefix) and p not in present]:
            self.forget(path)
        now = time.monotonic()
        looks: tuple[set[str], set[str]] | None = None
        for path in present:
            n = self.seen[path] = self.seen.get(path, 0) + 1
            if n <= STUCK_SCANS:
                continue
            warned = self.warned.get(path)
            if warned is None or now - warned >= REPEAT:
                self.warned[path] = now
                looks = looks or self._looks(state)
                log.warning("file.stuck", inbox=state.key, name=os.path.basename(path), scans=n,
                            reason=self._why(state, path, *looks))

    def stuck(self, state: InboxState) -> dict[str, str]:
        """The stuck files of an inbox and why."""
        prefix = state.key.rstrip("/") + "/"
        stuck = [p for p, n in self.seen.items() if n > STUCK_SCANS and p.startswith(prefix)]
        if not stuck:
            return {}
        looks = self._looks(state)
        return {p: self._why(state, p, *looks) for p in stuck}

    def unclaimed(self, prefix: str) -> set[str]:
        """The paths under `prefix` that are stuck or cannot be claimed."""
        return {p for p, n in self.seen.items() if p.startswith(prefix) and (p in self.claim_errors or n > STUCK_SCANS)}

    def forget(self, path: str) -> None:
        self.seen.pop(path, None)
        self.warned.pop(path, None)
        self.claim_errors.pop(path, None)

    def _looks(self, state: InboxState) -> tuple[set[str], set[str]]:
        """The inbox's paths held open and settling, gathered once for many `_why` (each is a
        walk of every path the tracker knows: once per stuck file, a burst of 30,000 files cost
        the loop minutes a second)."""
        return set(self.tracker.held_open(state.key)), set(self.tracker.paths_in(state.key))

    def _why(self, state: InboxState, path: str, held_open: set[str], settling: set[str]) -> str:
        if path in self.claim_errors:
            return f"the claim (a rename into .inboxd/) fails: {self.claim_errors[path]}"
        if path in held_open:
            return "a producer still has it open for writing"
        if path in state.ready:
            return "ready, waiting for a free worker (or paused: the API rejects the key)"
        if path in settling:
            return "its size or mtime keeps changing (settling)"
        return "not ready: neither settled nor claimable (see the log for the file)"
