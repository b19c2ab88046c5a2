"""Create a batch job exactly once (SPEC §10).

``POST /batches`` is not idempotent: a second call makes a second job, and a second job costs
the user money. So:

1. the stage ``creating`` is journaled BEFORE the call;
2. the call itself is never retried blindly (api/_batches.py makes one attempt);
3. whenever the journal already says ``creating`` without a batch id (a retry after a failed
   or cut call, or recovery after a crash), ``GET /batches`` is asked first, and a job for this
   ``input_file_id`` that no other input of ours owns is adopted; only if none exists is
   another ``POST`` made;
4. the batch id is journaled right after the answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from ..api import ApiError, Cancelled, ProtocolError, TransientError
from ..api._batches import BatchJob, BatchRejected
from ..config import BatchConfig
from ..retry import BATCH_CREATE
from .client import BatchClient
from .store import BatchRecord, BatchStore

log = structlog.get_logger("inboxd.batch")


@dataclass(frozen=True)
class BatchInput:
    """One uploaded input and what its job is made with: the claim that keys it in the store,
    the file id, the [inboxes.batch] table, and what the outbox and batch.json will say."""

    claim: str
    input_file_id: str
    cfg: BatchConfig
    inbox: Path | str | None = None
    outbox: Path | str | None = None  # default cfg.outbox, else <inbox>/outbox
    sha256: str | None = None
    dropped_at: float | None = None
    uploaded_at: float | None = None
    requests: int | None = None
    manifest: Path | str | None = None
    input_path: Path | str | None = None
    listed_before: tuple[str, ...] | None = None  # the jobs listed for input_file_id before its create


class Listing:
    """The ledger rule for adoption (SPEC §10): before the create, the ids of the jobs the server
    lists for this input_file_id are saved where every host can read them (`on_listed`: the
    claim's state, fsynced); a job found later is adopted only if it is not among them, not
    another input's in this journal, and named by no other input (`named_elsewhere`: the
    manifests in done/). Without `on_listed` (a caller that keeps no such record) the old rule
    holds: the newest job of the input_file_id that this journal does not own."""

    def __init__(self, before: tuple[str, ...] | None, on_listed: Callable[[list[str]], None] | None,
                 named_elsewhere: Callable[[], set[str]] | None) -> None:
        self.before = set(before) if before is not None else None
        self.on_listed = on_listed
        self.named_elsewhere = named_elsewhere

    def may_adopt(self) -> bool:
        """False when the rule is on and nothing was listed: no create was ever sent."""
        return self.on_listed is None or self.before is not None

    def excluded(self) -> set[str]:
        named = self.named_elsewhere() if self.named_elsewhere is not None else set()
        return named | (self.before or set())

    def record(self, client: BatchClient, input_file_id: str, cancel: threading.Event | None) -> None:
        """Before a create: list and save what exists (once per input)."""
        if self.on_listed is None or self.before is not None:
            return
        ids = sorted(j.id for j in client.list_batches(cancel=cancel) if j.input_file_id == input_file_id)
        self.on_listed(ids)
        self.before = set(ids)


def _job_dict(job: BatchJob) -> dict[str, Any]:
    return job.model_dump(mode="json")


def _created(store: BatchStore, rec: BatchRecord, job: BatchJob, *, adopted: bool) -> BatchRecord:
    attached = bool(rec.manifest or rec.input_path) and bool(rec.outbox)
    return store.update(
        rec.claim, stage="following" if attached else "created", batch_id=job.id, status=job.status,
        progress=job.progress, output_file_id=job.output_file_id, error_file_id=job.error_file_id,
        job=_job_dict(job), created_at=time.time(),
        error=None if not adopted else rec.error)


def _adoptable(store: BatchStore, rec: BatchRecord, jobs: list[BatchJob], listing: Listing) -> BatchJob | None:
    """The job a crashed or cut create made for this input: same input_file_id, not another
    input's (a second drop of the same bytes shares the file id), not listed before the create;
    the same endpoint first; the newest first."""
    if not listing.may_adopt():
        return None
    owned = store.owned_batch_ids(except_claim=rec.claim) | listing.excluded()
    mine = [j for j in jobs if j.input_file_id == rec.input_file_id and j.id not in owned]
    if not mine:
        return None
    same = [j for j in mine if j.endpoint in (None, rec.endpoint)] or mine

    def created(j: BatchJob) -> str:
        return str(j.created_at or "")

    return sorted(same, key=created)[-1]


def _begin(store: BatchStore, bi: BatchInput) -> BatchRecord:
    """Journal the stage `creating` for a new input, before any call; the outbox defaults to
    batch.outbox, else ``<inbox>/outbox``."""
    cfg = bi.cfg
    box = bi.outbox if bi.outbox is not None else cfg.outbox
    if box is None and bi.inbox:
        box = Path(bi.inbox) / "outbox"
    return store.begin(
        bi.claim, inbox=str(bi.inbox) if bi.inbox is not None else "", input_file_id=bi.input_file_id,
        endpoint=cfg.endpoint, poll_seconds=cfg.poll_seconds, completion_window=cfg.completion_window,
        model_id=cfg.model_id, priority=cfg.priority, join=cfg.join, outbox=str(box) if box is not None else None,
        input_sha256=bi.sha256, dropped_at=bi.dropped_at, uploaded_at=bi.uploaded_at, requests=bi.requests,
        manifest=str(bi.manifest) if bi.manifest else None, input_path=str(bi.input_path) if bi.input_path else None)


def _adopt(client: BatchClient, store: BatchStore, rec: BatchRecord, listing: Listing,
           cancel: threading.Event | None) -> dict[str, Any] | None:
    """The job an earlier create made for this input, asked of ``GET /batches`` and journaled
    as ours; None when there is none."""
    if not listing.may_adopt():
        return None
    input_file_id = rec.input_file_id
    found = _adoptable(store, rec, client.list_batches(cancel=cancel), listing)
    if found is None:
        return None
    _created(store, rec, found, adopted=True)
    log.info("batch.adopted", claim=rec.claim, batch_id=found.id, input_file_id=input_file_id, status=found.status)
    return _job_dict(found)


def _back_off(claim_key: str, attempt: int, tries: int, exc: ApiError, cancel: threading.Event | None) -> None:
    """Log a failed try, and wait before the next one (if any): the batch create's backoff."""
    delay = BATCH_CREATE.delay(attempt + 1)
    log.warning("batch.create_retry", claim=claim_key, attempt=attempt + 1, error=str(exc),
                delay=round(delay, 3))
    if attempt + 1 < tries:
        if cancel is not None:
            if cancel.wait(delay):
                raise Cancelled("cancelled while creating the batch", route="batch_create") from None
        else:
            time.sleep(delay)


def _create_with_retries(client: BatchClient, store: BatchStore, rec: BatchRecord, listing: Listing, *,
                         fresh: bool, tries: int, cancel: threading.Event | None) -> dict[str, Any]:
    """Up to `tries` tries of adopt-else-create; a try that is not `fresh` asks the server first."""
    claim_key, input_file_id = rec.claim, rec.input_file_id
    last: ApiError | None = None
    for attempt in range(max(1, tries)):
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled before the batch was created", route="batch_create")
        try:
            if not fresh:
                adopted = _adopt(client, store, rec, listing, cancel)
                if adopted is not None:
                    return adopted
            fresh = False  # from here on, any retry looks first
            listing.record(client, input_file_id, cancel)
            job, warning = client.create_batch(
                input_file_id, rec.endpoint, completion_window=rec.completion_window, priority=rec.priority,
                model_id=rec.model_id, cancel=cancel)
        except BatchRejected as exc:
            store.update(claim_key, stage="failed", error=str(exc))
            raise
        except (TransientError, ProtocolError) as exc:
            # the job may or may not exist: stay at `creating`; the next try asks the server first
            if isinstance(exc, ProtocolError) and exc.status is not None and exc.status < 500:
                raise
            last = exc
            _back_off(claim_key, attempt, tries, exc, cancel)
            continue
        _created(store, rec, job, adopted=False)
        log.info("batch.created", claim=claim_key, batch_id=job.id, input_file_id=input_file_id, status=job.status,
                 warning=warning)
        return _job_dict(job)
    assert last is not None
    raise TransientError(f"batch create: gave up after {tries} tries ({last})", route="batch_create",
                         status=last.status)


def create_once(client: BatchClient, store: BatchStore, bi: BatchInput, *, cancel: threading.Event | None = None,
                attempts: int = 1, look_first: bool = False, on_listed: Callable[[list[str]], None] | None = None,
                named_elsewhere: Callable[[], set[str]] | None = None) -> dict[str, Any]:
    """The BatchJob (as a dict) of this input, created at most once. Raises BatchRejected (a 4xx:
    permanent, the input goes to failed/), TransientError (429/5xx/resets after `attempts`
    tries, the daemon's api.max_retries + 1; the journal stays at `creating`: a later call adopts),
    Cancelled when `cancel` is set. `look_first`: ask the server for a job of this input even
    without a `creating` row (a file taken over from another host, whose store we do not have).
    `on_listed` and `named_elsewhere`: the adoption rule of `Listing`."""
    rec = store.get(bi.claim)
    if rec is not None and rec.batch_id:
        return rec.job or {"id": rec.batch_id, "status": rec.status, "input_file_id": rec.input_file_id}
    if rec is not None and rec.stage == "failed":
        raise BatchRejected(rec.error or "the server refused this batch earlier", route="batch_create")
    # `creating` without an id (fresh = False): an earlier call may have created it
    fresh = rec is None and not look_first
    if rec is None:
        rec = _begin(store, bi)
    listing = Listing(bi.listed_before, on_listed, named_elsewhere)
    return _create_with_retries(client, store, rec, listing, fresh=fresh, tries=attempts, cancel=cancel)
