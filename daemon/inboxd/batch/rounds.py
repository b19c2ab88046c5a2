"""Follow one ledger: upload, create, poll, settle every job of every part and round.

`Rounds.step()` does what can be done now and says whether every job is settled; the caller
calls it again after `poll_seconds` (the one-shot command in a loop; the daemon's poller). Each
stage is saved in the ledger before the step it enables (`ledger.py` has the stages):

- planned -> uploaded: the job's input (the input itself for a single part, else its byte
  ranges copied into the work folder) is uploaded and processed. This and the create wait for
  a slot when `max_jobs_in_flight` jobs are open (`may_start`; the daemon counts every ledger
  of the inbox it follows).
- uploaded -> creating: the ids of the jobs the server lists for this input_file_id are saved
  (`listed_before`), then the one ``POST /batches``.
- creating without an id (the POST failed, was cut, or the process died): ``GET /batches``;
  a job for this input_file_id that is not in `listed_before`, not in this ledger and named
  by no other ledger (`named_elsewhere`) is adopted; else the POST is made again. A 4xx on the
  create is final for the job's requests (`rejected`).
- created -> ended: polled until terminal; its answer files are downloaded into the work folder.
- ended -> settled: the requests to send again (`resend.py`) become the next round's job.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from .._constants import PROCESSING_FAILED
from ..api import ProtocolError, RejectedError, TransientError
from ..api._batches import BatchJob, BatchRejected
from ..config import BatchConfig
from ..state.fs import move_no_replace
from .answers import ERRORS, OUTPUT
from .client import BatchClient
from .download import download
from .ledger import TERMINAL, Ledger, LedgerJob
from .resend import job_verdicts, select_resends
from .split import copy_ranges

log = structlog.get_logger("inboxd.batch")

KIND_NAMES = {OUTPUT: "output", ERRORS: "errors"}


def cancel_marker(ledger_file: Path, batch_id: str) -> Path:
    """The file `inboxd batch cancel` leaves beside a ledger naming the job: the operator
    cancelled it, so its requests are not resent."""
    return ledger_file.with_name(f".{ledger_file.name}.cancelled-{batch_id}")


@dataclass
class Rounds:
    client: BatchClient
    ledger: Ledger
    path: Path  # the ledger file
    work: Path  # part inputs and answer files
    cfg: BatchConfig
    named_elsewhere: Callable[[], set[str]] = set
    may_start: Callable[[Ledger], bool] | None = None
    on_job: Callable[[Ledger, LedgerJob], None] | None = None  # a job id exists, or its status moved
    cancel: threading.Event | None = None
    on_download: Callable[[LedgerJob, str, int], None] | None = None  # (job, output | errors, bytes) once downloaded
    events: list[str] = field(default_factory=list)
    cut: bool = field(default=False, init=False)  # the last step left slow actions for the next one
    _left: int | None = field(default=None, init=False, repr=False)

    @property
    def input(self) -> Path:
        return Path(self.ledger.input.path)

    def save(self) -> None:
        self.ledger.save(self.path)

    def step(self, budget: int | None = None) -> bool:
        """Move every job as far as it goes now; True when all are settled. With a `budget`, at
        most that many uploads, creates and settles (the slow actions) are done, and `cut` says
        whether some were left for the next step: one big input does not hold up the others a
        daemon follows on the same thread."""
        self.work.mkdir(parents=True, exist_ok=True)
        self._left, self.cut = budget, False
        i = 0
        while i < len(self.ledger.jobs):  # a job a settle adds (the next round) starts in this step too
            self._advance(self.ledger.jobs[i])
            i += 1
        if self.ledger.done and self.ledger.finished_at is None:
            self.ledger.finished_at = time.time()
            self.save()
        return self.ledger.done

    def _advance(self, job: LedgerJob) -> None:
        if job.stage == "planned" and self._admitted() and self._spend():
            self._upload(job)
        fresh = job.stage == "uploaded" and self._admitted() and self._spend()
        if fresh:
            self._begin_create(job)
        if job.stage == "creating":
            self._create(job, look_first=not fresh)
        if job.stage == "created":
            self._poll(job)
        if job.stage == "ended" and self._spend():
            self._settle(job)

    def _spend(self) -> bool:
        """One slow action out of this step's budget; False (and `cut`) when none is left."""
        if self._left is None:
            return True
        if self._left <= 0:
            self.cut = True
            return False
        self._left -= 1
        return True

    def _admitted(self) -> bool:
        if self.may_start is not None:
            return self.may_start(self.ledger)
        limit = self.cfg.max_jobs_in_flight
        return limit == 0 or self.ledger.in_flight() < limit

    # --- upload and create ---------------------------------------------------------------

    def _upload(self, job: LedgerJob) -> None:
        whole = job.ranges == [(0, self.ledger.input.bytes)]
        src = self.input if whole else self.work / f"{job.name}.jsonl"
        if not whole:
            copy_ranges(self.input, job.ranges, src)
        try:
            result = self.client.upload(src, "batch-api", sha256=self.ledger.input.sha256 if whole else None,
                                        expected_size=self.ledger.input.bytes if whole else None)
            obj = self.client.wait_for_processing(result.file.id)
        except RejectedError as exc:  # a 4xx about this file: sending it again will not help
            self._refused(job, f"the server refused the job's input file: {exc}", exc.status)
            return
        if obj.processing_status in PROCESSING_FAILED:
            self._refused(job, f"the server's processing of the job's input file {obj.id} ended "
                               f"{obj.processing_status}", None)
            return
        job.input_file_id = obj.id
        job.stage = "uploaded"
        self.ledger.uploaded_at = self.ledger.uploaded_at or time.time()
        self.save()
        if not whole:
            src.unlink(missing_ok=True)

    def _listed(self, input_file_id: str | None) -> list[BatchJob]:
        return [j for j in self.client.list_batches(cancel=self.cancel) if j.input_file_id == input_file_id]

    def _begin_create(self, job: LedgerJob) -> None:
        job.listed_before = sorted(j.id for j in self._listed(job.input_file_id))
        job.stage = "creating"
        self.save()  # before the POST: what a recovery may not adopt

    def _adoptable(self, job: LedgerJob) -> BatchJob | None:
        before = set(job.listed_before or ())
        taken = before | set(self.ledger.job_ids()) | self.named_elsewhere()
        mine = [j for j in self._listed(job.input_file_id) if j.id not in taken]
        return sorted(mine, key=lambda j: str(j.created_at or ""))[0] if mine else None

    def _create(self, job: LedgerJob, *, look_first: bool) -> None:
        """The one create of a job at `creating`: adopt what an earlier try made (`look_first`:
        not right after `listed_before` was saved), else POST."""
        found = self._adoptable(job) if look_first else None
        if found is not None:
            log.info("batch.adopted", input=self.ledger.input.path, part=job.part, round=job.round, batch_id=found.id)
            self._record(job, found)
            return
        try:
            made, _warning = self.client.create_batch(
                job.input_file_id or "", self.cfg.endpoint, completion_window=self.cfg.completion_window,
                priority=self.cfg.priority, model_id=self.cfg.model_id, cancel=self.cancel)
        except BatchRejected as exc:
            self._refused(job, f"the server refused the job: {exc}", exc.status)
            return
        except (TransientError, ProtocolError) as exc:  # it may exist: the next step looks first
            log.warning("batch.create_retry", input=self.ledger.input.path, part=job.part, round=job.round,
                        error=str(exc))
            return
        log.info("batch.created", input=self.ledger.input.path, part=job.part, round=job.round, batch_id=made.id)
        self._record(job, made)

    def _refused(self, job: LedgerJob, why: str, status: int | None) -> None:
        """Final for the job's requests: ended FAILED with the reason, settled with none resent."""
        job.rejected, job.create_status, job.status, job.stage, job.error = True, status, "FAILED", "ended", why
        self.save()

    def _record(self, job: LedgerJob, made: BatchJob) -> None:
        job.id, job.stage = made.id, "created"
        self._observe(job, made)
        self.save()
        if self.on_job is not None:
            self.on_job(self.ledger, job)

    # --- following ----------------------------------------------------------------------------

    def _observe(self, job: LedgerJob, seen: BatchJob) -> bool:
        """Copy what the server says of the job; True when its status moved."""
        moved = seen.status != job.status
        job.status, job.progress = seen.status, seen.progress
        job.output_file_id = seen.output_file_id or job.output_file_id
        job.error_file_id = seen.error_file_id or job.error_file_id
        job.created_at = str(seen.created_at) if seen.created_at else job.created_at
        job.completed_at = str(seen.completed_at) if seen.completed_at else job.completed_at
        job.error = seen.error if isinstance(seen.error, str) or seen.error is None else str(seen.error)
        return moved

    def _poll(self, job: LedgerJob) -> None:
        try:
            seen = self.client.get_batch(job.id or "", retries=False, cancel=self.cancel)
        except TransientError as exc:
            log.warning("batch.poll_error", input=self.ledger.input.path, batch_id=job.id, error=str(exc))
            return
        except ProtocolError as exc:
            if exc.status != 404:
                raise
            job.status, job.error, job.stage = "FAILED", f"the server does not know batch {job.id} (HTTP 404)", "ended"
            self.save()
            return
        moved = self._observe(job, seen)
        if (seen.status or "").upper() in TERMINAL:
            job.stage = "ended"
        if moved or job.stage == "ended":
            self.save()
            if self.on_job is not None:
                self.on_job(self.ledger, job)

    def answer_path(self, job: LedgerJob, kind: int) -> Path:
        return self.work / f"{job.name}.{KIND_NAMES[kind]}.jsonl"

    def answers(self, job: LedgerJob) -> dict[int, Path | None]:
        """The job's answer files on local disk (downloaded now if missing: a host that took the
        input over, or a restart)."""
        out: dict[int, Path | None] = {}
        for kind, fid in ((OUTPUT, job.output_file_id), (ERRORS, job.error_file_id)):
            if not fid:
                out[kind] = None
                continue
            final = self.answer_path(job, kind)
            if not final.exists():
                tmp = final.with_name(f".{final.name}.part")
                got = download(self.client, fid, tmp, cancel=self.cancel)
                move_no_replace(tmp, final)
                if self.on_download is not None:
                    self.on_download(job, KIND_NAMES[kind], got.bytes)
            out[kind] = final
        return out

    def _settle(self, job: LedgerJob) -> None:
        if job.id and cancel_marker(self.path, job.id).exists():
            job.cancelled_by_operator = True
        if job.rejected or job.cancelled_by_operator:
            self.ledger.settle(job, [], 0)
        else:
            verdicts = job_verdicts(self.answers(job))
            ranges, n = select_resends(self.input, job.ranges, verdicts, self.cfg.resubmit_codes)
            nxt = self.ledger.settle(job, ranges, n)
            if nxt is not None:
                log.info("batch.resend", input=self.ledger.input.path, part=job.part, round=nxt.round,
                         requests=nxt.requests)
        self.save()


def remove_work(work: Path) -> None:
    """The work folder after delivery: part inputs and answer files are in the outbox now."""
    if not work.is_dir():
        return
    for p in work.iterdir():
        p.unlink(missing_ok=True)
    os.rmdir(work)
