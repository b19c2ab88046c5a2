"""ready -> claim: which files may be taken now, and taking them (SPEC §2).

The `Claimer` owns the readiness tracker and the inboxes' ready sets. A path reported by
an observer or a scan is looked at again (`lstat`); once it has settled (or was renamed
in), the kernel is asked whether anyone still has it open for writing (`watch.lease`):
a file held open is never claimed, whether it was written in place or renamed in by a
writer that kept it open. Where no lease can be taken, a file seen being written needs a
close-write event after its last change. Ready files are claimed round-robin across
inboxes, while fewer than `capacity` jobs are queued or in flight.

Memory stays flat whatever the backlog: at most `window` paths of an inbox are held (settling,
held open, or ready) at a time. A path met beyond that (an event, or a scan that found the
window full) is not looked at and nothing of it is kept; the inbox is marked, and once its
window has drained to half, `refill` scans the folder again (`candidate_names`: one name at a
time, no stat for the names it passes over) and takes the next ones in.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import structlog

from ..state.journal import Journal
from ..watch.ignore import is_ignored_name
from ..watch.lease import Writers, open_for_writing
from ..watch.readiness import ReadinessTracker
from ..watch.scan import candidate_names, inspect_path
from .inboxes import InboxSet, InboxState
from .stuck import Sightings
from .work import Job, WorkQueue

log = structlog.get_logger("inboxd.daemon")

HELD_OPEN_REPEAT = 600.0  # a file held open (or stuck) is warned about again every 10 minutes
CLAIM_ROUND = 4  # with this many jobs queued, claim once this many slots are free (`claim_ready`)
DEFAULT_WINDOW = 2000  # paths of one inbox held at a time (about 2 KB each); the config's candidate_window
REFILL_GAP = 1.0  # seconds between two refill scans of one inbox


class Claimer:
    def __init__(self, inboxes: InboxSet, journal: Journal, queue: WorkQueue, *, settle_seconds: float,
                 held_open_warn_seconds: float, state_dir: Path, window: int = DEFAULT_WINDOW) -> None:
        self.inboxes = inboxes
        self.journal = journal
        self.queue = queue
        self.tracker = ReadinessTracker(settle_seconds)
        self.held_open_warn_seconds = held_open_warn_seconds
        self.state_dir = state_dir
        self.paused_until = 0.0  # the journal could not be written: claim nothing until then
        self.stopping = False  # set by the daemon's SIGTERM handler: claim nothing, ever again
        self.sightings = Sightings(self.tracker)  # never stall in silence: files seen and not claimed
        self.ignored: dict[str, set[str]] = {}  # inbox -> names matching no pattern, said once
        self.window = window
        self.left_out: set[str] = set()  # inboxes with files not taken into the window: refill
        self.beyond: dict[str, int] = {}  # inbox -> candidates its last scan left out of the window
        self._last_scan: dict[str, float] = {}

    # --- the window ------------------------------------------------------------------------

    def held(self, state: InboxState) -> int:
        """Paths of the inbox held now (a ready path looked at again may count twice: the
        bound errs low)."""
        return self.tracker.count_in(state.key) + len(state.ready)

    def _admit(self, state: InboxState, path: str) -> bool:
        """May `path` be looked at (held)? Yes if it already is, or the window has room; else
        the inbox is marked for a refill and nothing of the path is kept."""
        if path in self.tracker or path in state.ready or self.held(state) < self.window:
            return True
        self.left_out.add(state.key)
        return False

    def lost_events(self) -> None:
        """Events may have been lost (a queue overflowed): every inbox is refilled by a scan."""
        self.left_out.update(s.key for s in self.inboxes)

    def refill(self) -> None:
        """Scan again each inbox that left files out, once its window has drained to half
        (and at most every REFILL_GAP seconds): the backlog moves in a window at a time."""
        now = time.monotonic()
        for state in self.inboxes:
            if state.key in self.left_out and not state.missing and self.held(state) <= self.window // 2 \
                    and now - self._last_scan.get(state.key, 0.0) >= REFILL_GAP:
                self.scan(state, count=False)

    # --- ready -----------------------------------------------------------------------------

    def look(self, state: InboxState, path: str, moved_in: bool = False, events: Iterable[str] = ()) -> None:
        """Look at one path again and decide whether it is ready to claim (if the window has room)."""
        if not self._admit(state, path):
            return
        entry = inspect_path(path, state.config.patterns, state.skip)
        if entry is None:
            self.tracker.forget(path)
            state.ready.pop(path, None)
            name = os.path.basename(path)
            if name not in state.skip and not is_ignored_name(name) and os.path.lexists(path):
                self._say_ignored(state, [name], replace=False)
            return
        if entry.kind != "regular":
            self.tracker.forget(path)
            state.ready[path] = None  # claimed and sent to failed/, never opened
            return
        if state.config.on_success == "keep" and self.journal.is_kept(path, entry.st.st_size, entry.st.st_mtime_ns):
            self.tracker.forget(path)
            return
        events = set(events)
        settled = self.tracker.observe(path, entry.st, moved_in=moved_in,
                                       created="created" in events, closed="closed" in events)
        if settled and self._nobody_writing(state, path):
            self.tracker.forget(path)
            state.ready[path] = None

    def _nobody_writing(self, state: InboxState, path: str) -> bool:
        writers = open_for_writing(path)
        if writers is Writers.NONE:
            return True
        if writers is Writers.UNKNOWN:
            # no lease here: a file we saw written needs a close-write after its last change
            # (only the inotify observer sees close events; polling has the settle time alone)
            if state.config.observer != "inotify" or not self.tracker.needs_close(path):
                return True
        self.tracker.hold(path)
        seconds = self.tracker.should_warn(path, self.held_open_warn_seconds, HELD_OPEN_REPEAT)
        if seconds is not None:
            log.warning("file.held_open", inbox=state.key, name=os.path.basename(path), seconds=round(seconds, 1),
                        evidence="lease refused" if writers is Writers.OPEN else "no close-write event yet",
                        hint="a producer still has this file open for writing; it is claimed once closed")
        return False

    def scan(self, state: InboxState, count: bool = True) -> None:
        """Look at the folder's candidates: those held again, new ones while the window has
        room; the rest are only counted (`beyond`). `count`: a full rescan, whose sightings
        tell stuck files. A refill (count=False) is not one (it would make files waiting for a
        worker "stuck" after three refills), and stops where the window is full: its cost is
        the names it reads up to there, not the whole folder."""
        unmatched: list[str] = []
        present: set[str] = set()  # the window's paths this scan saw
        beyond = taken = 0
        key = state.key
        self._last_scan[key] = time.monotonic()
        self.left_out.discard(key)
        try:
            for path, _ in candidate_names(state.config.path, state.config.patterns, state.skip, unmatched):
                held = path in self.tracker or path in state.ready
                if held or self.held(state) < self.window:
                    self.look(state, path)
                    if path in self.tracker or path in state.ready:
                        present.add(path)
                        taken += not held
                elif count:
                    beyond += 1
                else:
                    beyond = max(1, self.beyond.get(key, 0) - taken)  # the last full count, less those taken
                    break
        except OSError:
            return  # a missing folder is noticed by the watch check
        self.beyond[key] = beyond
        if beyond:
            self.left_out.add(key)
        state.scanned = True
        if count:
            self.sightings.count(state, present)
        self._say_ignored(state, unmatched, replace=count)  # (a refill saw only part of the names)

    def _say_ignored(self, state: InboxState, names: list[str], replace: bool = True) -> None:
        """A file that matches no pattern is left alone, but said once (it would otherwise sit
        there forever without a word): `file.ignored` with the rule."""
        seen = self.ignored.setdefault(state.key, set())
        for name in names:
            if name not in seen and not (state.config.path / name).is_dir():
                log.info("file.ignored", inbox=state.key, name=name, patterns=list(state.config.patterns),
                         rule="matches none of the inbox patterns (they are case-sensitive)")
        self.ignored[state.key] = set(names) if replace else seen | set(names)

    def stuck(self, key: str) -> dict[str, str]:
        """The stuck files of an inbox and why, for status, metrics and health."""
        state = self.inboxes.get(key)
        return self.sightings.stuck(state) if state is not None else {}

    def look_again_due(self) -> None:
        """Paths whose settle time ran out (or that were held open): look at them again."""
        for path in self.tracker.due():
            state = self.inboxes.of_path(path)
            if state is None:
                self.tracker.forget(path)
            else:
                self.look(state, path)

    def waiting(self, key: str) -> int:
        """Files seen in the inbox and not claimed yet: settling, ready, or stuck."""
        state = self.inboxes.get(key)
        if state is None:
            return 0
        prefix = key.rstrip("/") + "/"
        paths = set(state.ready) | set(self.tracker.paths_in(key))
        paths |= self.sightings.unclaimed(prefix)
        return len(paths) + self.beyond.get(key, 0)

    def pending(self) -> bool:
        return any(s.ready or s.key in self.left_out for s in self.inboxes) or self.tracker.pending() > 0

    # --- claim -----------------------------------------------------------------------------

    def claim_ready(self, capacity: int) -> None:
        """Claim ready files round-robin across inboxes while fewer than `capacity` are queued or
        busy. While `CLAIM_ROUND` jobs or more wait in the queue, the workers have enough to do:
        files are then claimed once a round of `CLAIM_ROUND` slots is free, and a round's rows
        go into the journal in one commit."""
        if self.stopping or time.monotonic() < self.paused_until:
            return
        queued, busy = self.queue.counts()
        free = capacity - queued - busy
        if free <= 0 or (queued >= CLAIM_ROUND and free < CLAIM_ROUND):
            return
        taken: list[tuple[InboxState, Path, str]] = []
        while free > 0:
            claimed_any = False
            for state in self.inboxes:
                if free <= 0 or self.stopping:  # a signal may come in the middle of a round
                    break
                if not state.ready or state.held is not None:  # held: its settings differ (fingerprint.py)
                    continue
                path, _ = state.ready.popitem(last=False)
                claimed_any = True
                dst = self._take(state, path)
                if dst is not None:
                    taken.append((state, dst, os.path.basename(path)))
                    free -= 1
            if not claimed_any:
                break
        if taken:
            self._journal_and_queue(taken)

    def _take(self, state: InboxState, path: str) -> Path | None:
        """Rename one ready file into the claim folder; None if it was not ours to take."""
        try:
            dst = state.area.claim(Path(path))
        except OSError as exc:
            if path not in self.sightings.claim_errors:
                log.error("file.claim_failed", inbox=state.key, name=os.path.basename(path), error=str(exc))
            self.sightings.claim_errors[path] = exc.strerror or str(exc)
            return None
        self.sightings.forget(path)
        return dst  # None: another daemon won it, or it went away

    def _journal_and_queue(self, taken: list[tuple[InboxState, Path, str]]) -> None:
        """The claimed rows in one commit, then the jobs. If the journal cannot be written, the
        files go back to their inboxes (or, where that fails, wait in the queue)."""
        try:
            self.journal.claimed_many([(str(dst), state.key, name) for state, dst, name in taken])
        except Exception as exc:  # noqa: BLE001 - the state disk is full or broken: give them back
            for state, dst, name in taken:
                back = state.area.unclaim(dst, state.config.path, name)
                log.error("journal.unwritable", inbox=state.key, name=name, error=str(exc), given_back=back,
                          state_dir=str(self.state_dir), retry_in=2.0)
                if not back:
                    self.queue.put(Job(state.config, dst, name), delay=2.0)
            self.paused_until = time.monotonic() + 2.0
            return
        for state, dst, name in taken:
            log.debug("file.claimed", inbox=state.key, name=name, claim=str(dst))
            self.queue.put(Job(state.config, dst, name))
