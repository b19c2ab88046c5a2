"""One thread that follows every batch job, not a thread per job.

A heap of (due time, claim). Each job is polled (``GET /batches/{id}``, one attempt) right
after `follow`, then every ``poll_seconds`` with ±10 % jitter. A status or progress change is
journaled and the input's manifest rewritten (its `batch` section). A 429 or 5xx backs the
job off exponentially (capped at `max_backoff`); a 429 also pauses every poll for that long
(batch jobs share one rate-limit pool per account). A terminal job is delivered into its
outbox (deliver.py) on this same thread; `stop()` cancels a delivery between chunks and the
next start resumes it (`resume()` follows every job in the journal not yet delivered).

`on_event(name, **fields)` is called for metrics (never allowed to break the poller):
``batch.status`` (claim, inbox, batch_id, status, previous, progress), ``batch.download``
(kind, outcome: ok | resumed | cut | failed, bytes ...), ``batch.delivered`` (status, seconds
from drop to results, succeeded, failed, missing), ``batch.poll_error`` (status, delay),
``batch.lost`` (the server does not know the job).
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from ..api import ApiError, AuthError, Cancelled, ProtocolError, TransientError
from ..config import InboxConfig
from ..retry import BATCH_POLL, Backoff
from .deliver import UNDELIVERABLE, Busy, deliver
from .following import LedgerFollower
from .manifest import update_manifest
from .orphans import ADOPTED, Watchers, adopt, adopt_ledger, lock_path, orphans
from .store import FINISHED_STAGES, BatchRecord, BatchStore

log = structlog.get_logger("inboxd.batch")

JITTER = 0.1
SCAN = "<scan done/>"  # the heap's key of the look for orphaned jobs
SCAN_SECONDS = 30.0

LOST_AFTER = 3  # consecutive 404s on GET /batches/{id} before a job is given up


class Poller:
    def __init__(self, get_client: Callable[[], Any], store: BatchStore,
                 on_event: Callable[..., None] | None = None, *, max_backoff: float = 600.0,
                 inboxes: Callable[[], Iterable[InboxConfig]] | None = None, work_root: Path | None = None,
                 me: str | None = None, alive: Callable[[str, str], bool] | None = None) -> None:
        self.get_client = get_client
        self.inboxes = inboxes  # the batch inboxes whose done/ is looked through for orphaned jobs
        self.followers = Watchers()
        self.store = store
        self.on_event = on_event
        self.max_backoff = max_backoff
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures: dict[str, int] = {}
        self._pause_until = 0.0
        self._busy_claim: str | None = None
        self._trouble: dict[str, str] = {}  # claim -> why its outbox cannot be written
        # inputs followed through their ledger in done/ (following.py); their part inputs and
        # answers are downloaded under work_root
        self.ledgers = LedgerFollower(get_client, store, self.followers, self._stop,
                                      work_root or Path(".inboxd-batch-work"), inboxes, self._emit, me, alive,
                                      self.follow)

    # --- control -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        if self.inboxes is not None:
            self._schedule(SCAN, time.time())
        self._thread = threading.Thread(target=self._run, name="inboxd-batch-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop polling; a delivery in progress is cancelled between chunks (resumed next start)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def follow(self, record: BatchRecord | str) -> None:
        """Follow a job (a record, or its claim key): polled at once, then every poll_seconds."""
        claim = record if isinstance(record, str) else record.claim
        self._schedule(claim, time.time())

    def resume(self) -> int:
        """Follow every job of the journal that is created and not yet delivered (at daemon start)."""
        records = self.store.open_records()
        for rec in records:
            self.follow(rec)
        return len(records)

    def following(self) -> list[str]:
        with self._cond:
            return sorted(self._due)

    def _schedule(self, claim: str, due: float) -> None:
        with self._cond:
            self._due[claim] = due
            heapq.heappush(self._heap, (due, next(self._seq), claim))
            self._cond.notify_all()

    def _emit(self, name: str, **fields: Any) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(name, **fields)
        except Exception:  # noqa: BLE001 - metrics never break the poller
            log.exception("batch.on_event_failed", name=name)

    # --- the thread ----------------------------------------------------------------------------

    def _next(self) -> str | None:
        """The next due claim, waiting for it; None when stopping."""
        with self._cond:
            while not self._stop.is_set():
                now = time.time()
                if self._heap:
                    due, _, claim = self._heap[0]
                    if self._due.get(claim) != due:  # superseded by a later schedule
                        heapq.heappop(self._heap)
                        continue
                    start = max(due, self._pause_until)
                    if start <= now:
                        heapq.heappop(self._heap)
                        del self._due[claim]
                        return claim
                    self._cond.wait(min(start - now, 60.0))
                else:
                    self._cond.wait(60.0)
        return None

    def _run(self) -> None:
        log.info("batch.poller_started", jobs=len(self._due))
        while True:
            claim = self._next()
            if claim is None:
                break
            try:
                again = self._scan() if claim == SCAN else self._step(claim)
            except Exception:  # noqa: BLE001 - a bug in one job must not stop the others
                log.exception("batch.poller_error", claim=claim)
                again = self._backoff(claim, None)
            if again is not None and not self._stop.is_set():
                self._schedule(claim, again)
        log.info("batch.poller_stopped")

    def _interval(self, rec: BatchRecord) -> float:
        return rec.poll_seconds * random.uniform(1 - JITTER, 1 + JITTER)

    def _backoff(self, claim: str, rec: BatchRecord | None, status: int | None = None) -> float:
        n = self._failures.get(claim, 0) + 1
        self._failures[claim] = n
        base = rec.poll_seconds if rec is not None else BATCH_POLL.base
        delay = Backoff(base, self.max_backoff).delay(n + 1)
        if status == 429:
            with self._cond:
                self._pause_until = max(self._pause_until, time.time() + delay)
        return time.time() + delay

    def _step(self, claim: str) -> float | None:
        """One look at one job; the time of the next, or None when it is done with."""
        rec = self.store.get(claim)
        if rec is None or rec.stage in FINISHED_STAGES:
            self._failures.pop(claim, None)
            self.followers.release(claim)
            return None
        if rec.ledger:
            return self._follow_ledger(claim, rec)
        if rec.batch_id is None or rec.stage in ("creating", "created"):
            return time.time() + self._interval(rec)  # not created / not attached yet: look later
        if not followed_here(self.followers, self.store, rec):  # another host follows it (or delivered it)
            return None if self.store.get(claim) is None or rec.stage in FINISHED_STAGES \
                else time.time() + self._interval(rec)
        client = self.get_client()
        if rec.stage == "following":
            try:
                job = client.get_batch(rec.batch_id, retries=False, cancel=self._stop)
            except Cancelled:
                return None
            except (TransientError, AuthError) as exc:
                when = self._backoff(claim, rec, exc.status)
                self._emit("batch.poll_error", claim=claim, batch_id=rec.batch_id, status=exc.status,
                           delay=round(when - time.time(), 3))
                log.warning("batch.poll_error", claim=claim, input=rec.input_path or claim, batch_id=rec.batch_id,
                            status=exc.status,
                            error=str(exc), retry_in=round(when - time.time(), 1))
                return when
            except ProtocolError as exc:
                if exc.status == 404:
                    n = self._failures.get(claim, 0) + 1
                    self._failures[claim] = n
                    if n >= LOST_AFTER:
                        rec = self.store.update(claim, stage="failed", status=rec.status,
                                                error=f"the server does not know batch {rec.batch_id} (HTTP 404)")
                        update_manifest(rec)
                        self._emit("batch.lost", claim=claim, inbox=rec.inbox, batch_id=rec.batch_id)
                        log.error("batch.lost", claim=claim, input=rec.input_path or claim, batch_id=rec.batch_id)
                        return None
                    return time.time() + self._interval(rec)
                when = self._backoff(claim, rec, exc.status)
                log.warning("batch.poll_error", claim=claim, input=rec.input_path or claim, batch_id=rec.batch_id,
                            status=exc.status, error=str(exc))
                return when
            self._failures.pop(claim, None)
            rec = observe(self.store, rec, job, self._emit)
            if not rec.terminal:
                return time.time() + self._interval(rec)
        # terminal (or already delivering after a restart): the outbox
        return self._deliver(client, claim, rec)

    def _deliver(self, client: Any, claim: str, rec: BatchRecord) -> float | None:
        def work() -> None:
            deliver(client, self.store, rec, cancel=self._stop, emit=self._emit)
        return self._guarded(claim, rec, work)

    def _follow_ledger(self, claim: str, rec: BatchRecord) -> float | None:
        return self._guarded(claim, rec, lambda: self.ledgers.step(rec))

    def _guarded(self, claim: str, rec: BatchRecord, work: Callable[[], float | None]) -> float | None:
        """Run `work` (a delivery, or a look at a ledger); None when done, else when to look again.
        An outbox or a ledger that cannot be written (permissions, a full disk) is trouble the
        operator must see: `problems()` (/healthz), the record's error (`inboxd batches`), a
        download counted with outcome error."""
        try:
            self._busy_claim = claim
            again = work()
        except Cancelled:
            return None
        except Busy:
            return time.time() + self._interval(rec)
        except (ApiError, OSError) as exc:
            when = self._backoff(claim, rec, getattr(exc, "status", None))
            if isinstance(exc, OSError):
                self._undeliverable(claim, rec, exc)
            log.error("batch.delivery_error", claim=claim, input=rec.input_path or claim, batch_id=rec.batch_id,
                      error=str(exc), kind=getattr(exc, "kind", type(exc).__name__),
                      retry_in=round(when - time.time(), 1))
            return when
        finally:
            self._busy_claim = None
        self._failures.pop(claim, None)
        if again is not None:
            return again  # trouble stays said until the results are delivered (a merge may still fail)
        self.followers.release(claim)
        with self._cond:
            self._trouble.pop(claim, None)
        return None

    def _undeliverable(self, claim: str, rec: BatchRecord, exc: OSError) -> None:
        reason = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc.strerror or exc)
        text = f"{UNDELIVERABLE}{reason}"
        with self._cond:
            self._trouble[claim] = f"batch results of {rec.input_path or claim} cannot be delivered into " \
                                   f"{rec.outbox}: {reason}"
        if rec.error != text:
            self.store.update(claim, error=text)
        self._emit("batch.download", claim=claim, batch_id=rec.batch_id, kind="delivery", outcome="error",
                   error=reason)

    def problems(self) -> list[str]:
        """What /healthz must say: every job whose results cannot be written into its outbox."""
        with self._cond:
            return [self._trouble[c] for c in sorted(self._trouble)]

    # --- jobs whose follower died (orphans.py) --------------------------------------------------

    def _scan(self) -> float:
        """Follow on every job in done/ whose follower died; the time of the next look."""
        inboxes = list(self.inboxes()) if self.inboxes is not None else []
        self.ledgers.count_fleet(inboxes)  # max_jobs_in_flight over the ledgers other hosts follow too
        for inbox, manifest, data in orphans(inboxes, self.store):
            if self.followers.take(f"{ADOPTED}{manifest}", lock_path(manifest)):
                if isinstance(data["batch"].get("ledger"), str):
                    self.follow(adopt_ledger(self.store, inbox, manifest, data))
                else:
                    self.follow(adopt(self.store, inbox, manifest, data))
        polls = [i.batch.poll_seconds for i in inboxes if i.batch is not None]
        return time.time() + max(1.0, min([SCAN_SECONDS, *(5 * p for p in polls)]))


def observe(store: BatchStore, rec: BatchRecord, job: Any, emit: Callable[..., None]) -> BatchRecord:
    """Journal what changed; rewrite the manifest and tell `emit` when status/progress did."""
    changes = _changes(rec, job)
    if not changes:
        return rec
    previous = rec.status
    rec = store.update(rec.claim, **changes)
    if "status" in changes or "progress" in changes:
        update_manifest(rec)
    if "status" in changes:
        emit("batch.status", claim=rec.claim, inbox=rec.inbox, batch_id=rec.batch_id, status=job.status,
             previous=previous, progress=rec.progress)
        log.info("batch.status", claim=rec.claim, input=rec.input_path or rec.claim, inbox=rec.inbox,
                 batch_id=rec.batch_id, status=job.status, previous=previous, progress=rec.progress)
    return rec


def _changes(rec: BatchRecord, job: Any) -> dict[str, Any]:
    """What the job says that the record does not."""
    changes: dict[str, Any] = {}
    if job.status != rec.status:
        changes["status"] = job.status
    if job.progress != rec.progress:
        changes["progress"] = job.progress
    for name in ("output_file_id", "error_file_id"):
        if getattr(job, name) and getattr(job, name) != getattr(rec, name):
            changes[name] = getattr(job, name)
    err = job.error if isinstance(job.error, str) or job.error is None else str(job.error)
    if err != rec.error:
        changes["error"] = err
    job_dict = job.model_dump(mode="json")
    if job_dict != rec.job:
        changes["job"] = job_dict
    if job.terminal and rec.finished_at is None:
        changes["finished_at"] = time.time()
    return changes


def followed_here(followers: Watchers, store: BatchStore, rec: BatchRecord) -> bool:
    """Whether this process follows the job: always, until its input is in done/; then while
    it holds the job's follow lock. The manifest names the job once the lock is ours. A job
    another host delivered while this one was away is marked delivered here."""
    if not rec.manifest:
        return True
    if not followers.take(rec.claim, lock_path(Path(rec.manifest))):
        return False
    if delivered_elsewhere(rec):
        rec.stage = store.update(rec.claim, stage="delivered").stage
        followers.release(rec.claim)
        return False
    update_manifest(rec)
    return True


def delivered_elsewhere(rec: BatchRecord) -> bool:
    """The manifest names the job's batch.json, and it is there: delivered (by whichever host)."""
    try:
        section = json.loads(Path(rec.manifest or "").read_text(encoding="utf-8")).get("batch")
    except (OSError, ValueError, AttributeError):
        return False
    sidecar = section.get("sidecar") if isinstance(section, dict) else None
    return isinstance(sidecar, str) and os.path.exists(sidecar)
