"""The work queue between the daemon loop and the workers.

Per-inbox queues served round-robin, so a burst in one inbox never starves another; jobs
waiting for a retry sit in a timer heap until they are due; `pause()` holds every upload
back (the key was rejected) without failing anything. The daemon loop only claims more
files while `in_flight` is below a bound: backpressure instead of unbounded memory.
Workers report progress (`Heartbeat`), so a worker stuck in one place is told from a busy one.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

from ..config import InboxConfig


@dataclass
class Job:
    inbox: InboxConfig
    claim: Path
    name: str
    attempts: int = 0  # transient failures so far
    bugs: int = 0  # unexpected exceptions so far (internal errors)
    source_changes: int = 0  # rounds in which the file changed under us
    recovered: bool = False  # taken over from a daemon that is gone (or our own last run)
    archive: bool = False  # uploaded and journaled: only the archive is left (the archivers' lane)
    not_before: float = 0.0
    seen_at: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        return str(self.inbox.path)


class WorkQueue:
    """Two lanes: uploads (`get`, round-robin per inbox, held back while paused) and archives
    (`get_archive`: files uploaded and journaled whose move to done/ and manifest are left,
    disk work that needs no key and is never paused). A worker hands its uploaded file to the
    archive lane and takes the next upload while an archiver fsyncs the last one."""

    def __init__(self) -> None:
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._archive_cond = threading.Condition(lock)
        self._archive: deque[Job] = deque()
        self._queues: OrderedDict[str, deque[Job]] = OrderedDict()
        self._delayed: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._paused = False
        self._closed = False
        self._busy = 0

    # --- producers -------------------------------------------------------------------------

    def put(self, job: Job, delay: float = 0.0) -> None:
        with self._cond:
            if job.archive and delay <= 0:
                self._archive.append(job)
                self._archive_cond.notify()
                return
            job.archive = False  # a retry starts from the journal's stage, in the upload lane
            if delay > 0:
                job.not_before = time.monotonic() + delay
                heapq.heappush(self._delayed, (job.not_before, next(self._seq), job))
            else:
                self._queues.setdefault(job.key, deque()).append(job)
            self._cond.notify()

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    def close(self) -> None:
        """No more jobs are handed out; waiting workers return None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._archive_cond.notify_all()

    # --- consumers -------------------------------------------------------------------------

    def get(self, timeout: float = 1.0) -> Job | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                self._release_due()
                if not self._paused:
                    job = self._next_round_robin()
                    if job is not None:
                        self._busy += 1
                        return job
                wait = deadline - time.monotonic()
                if self._delayed:
                    wait = min(wait, self._delayed[0][0] - time.monotonic())
                if deadline - time.monotonic() <= 0:
                    return None
                self._cond.wait(max(0.005, wait))

    def get_archive(self, timeout: float = 1.0) -> Job | None:
        """The next file of the archive lane (not held back by a pause), or None after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._archive:
                    self._busy += 1
                    return self._archive.popleft()
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return None
                self._archive_cond.wait(wait)

    def done(self) -> None:
        """The worker finished (or re-queued) the job it got."""
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def _release_due(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, job = heapq.heappop(self._delayed)
            self._queues.setdefault(job.key, deque()).append(job)

    def _next_round_robin(self) -> Job | None:
        for key in list(self._queues):
            q = self._queues[key]
            self._queues.move_to_end(key)
            if q:
                return q.popleft()
            del self._queues[key]
        return None

    # --- the daemon loop's view ------------------------------------------------------------

    def drain_unstarted(self) -> list[Job]:
        """Remove and return every job not yet handed to a worker (at shutdown)."""
        with self._cond:
            jobs = [j for q in self._queues.values() for j in q] + [j for _, _, j in self._delayed]
            self._queues.clear()
            self._delayed.clear()
            return jobs

    def counts(self) -> tuple[int, int]:
        """(queued or waiting for retry, being worked on)."""
        with self._cond:
            return sum(len(q) for q in self._queues.values()) + len(self._delayed) + len(self._archive), self._busy

    def queued_by_inbox(self) -> dict[str, int]:
        with self._cond:
            out = {k: len(q) for k, q in self._queues.items()}
            for j in [*self._archive, *(j for _, _, j in self._delayed)]:
                out[j.key] = out.get(j.key, 0) + 1
            return out

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no worker holds a job and the archive lane is empty; True if that
        happened in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy > 0 or self._archive:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True


class Heartbeat:
    """A worker's last sign of progress (a stage change, bytes moved)."""

    def __init__(self) -> None:
        self.busy = False
        self.last = time.monotonic()
        self.what = "idle"

    def beat(self, what: str | None = None) -> None:
        self.last = time.monotonic()
        if what is not None:
            self.what = what

    def start(self, what: str) -> None:
        self.busy = True
        self.beat(what)

    def stop(self) -> None:
        self.busy = False
        self.beat("idle")

    def wedged(self, limit: float) -> bool:
        return self.busy and time.monotonic() - self.last > limit
