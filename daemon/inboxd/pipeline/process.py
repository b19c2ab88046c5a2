"""One claimed file through the steps (`steps.py`), and what each way out of them means.

`handle(ctx, job, hb)` is what a worker runs. Every outcome is one of `Outcome`: archived
(done/), failed (failed/), uploaded (handed to the archive lane), retry later (stays
claimed), paused (the key was rejected; stays claimed, counts no attempt), cancelled
(shutdown; stays claimed for the next start), lost (the file vanished). Each is counted here.

A step raises; `_ON_ERROR` maps what it raised to the outcome, first match wins. Only
transient trouble is retried (`TRANSIENT`: the network, 429/5xx, a hostile answer, a changed
source, a full or broken disk). Anything else is a bug: it is logged with its traceback and
the file goes to failed/ with `internal_error` after `MAX_BUGS` attempts, instead of being
retried forever.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable
from typing import Any

import structlog

from ..api import ApiError, AuthError, Cancelled, RejectedError, SourceChangedError
from ..batch import BatchRejected
from ..retry import backoff
from ..state.journal import Stage
from .archive import fail, finish_orphan
from .context import Context, FileRun, Outcome, log_fields
from .failure import Failure
from .steps import Step, drive
from .upload import drop_orphan, report_json
from .work import Heartbeat, Job

log = structlog.get_logger("inboxd.pipeline")

MAX_BUGS = 3
# transient: retried with backoff. OSError minus EXDEV (an archive across filesystems never works).
TRANSIENT: tuple[type[BaseException], ...] = (ApiError, SourceChangedError, OSError, sqlite3.Error)


def handle(ctx: Context, job: Job, hb: Heartbeat) -> Outcome:
    """Run one job from where it is (the archive lane's jobs: ARCHIVE; the others: INSPECT),
    re-queue it where that is the outcome, count the outcome and return it."""
    try:
        run = FileRun.start(ctx, job, hb)
        outcome = drive(run, ctx, Step.ARCHIVE if job.archive else Step.INSPECT)
    except Exception as exc:  # noqa: BLE001 - every exception has an outcome (a bug's is internal_error)
        outcome = _outcome_of(ctx, job, exc)
    if outcome is not Outcome.UPLOADED:
        ctx.count(outcome, job)
    return outcome


def _outcome_of(ctx: Context, job: Job, exc: Exception) -> Outcome:
    for kind, on_error in _ON_ERROR:
        if isinstance(exc, kind):
            return on_error(ctx, job, exc)
    return _bug(ctx, job, exc)


def _paused(ctx: Context, job: Job, exc: Any) -> Outcome:
    ctx.on_auth_rejected(exc)
    ctx.queue.put(job)
    return Outcome.PAUSED


def _batch_rejected(ctx: Context, job: Job, exc: Any) -> Outcome:
    return _failed(ctx, job, Failure("batch", "batch_rejected", f"the server refused the batch job: {exc}",
                                     status=exc.status))


def _rejected(ctx: Context, job: Job, exc: Any) -> Outcome:
    return _failed(ctx, job, Failure("upload", exc.kind or "rejected", str(exc), status=exc.status,
                                     validation=report_json(exc.report)))


def _os_error(ctx: Context, job: Job, exc: Any) -> Outcome:
    if exc.errno == errno.ENAMETOOLONG:  # a name inboxd made: a bug, never a reason to retry forever
        return _failed(ctx, job, Failure("archive", "name_too_long", str(exc)))
    if exc.errno == errno.EXDEV:
        return _failed(ctx, job, Failure("archive", "cross_device", f"{exc}: done_dir and failed_dir must be "
                                         "on the inbox's filesystem (an atomic rename cannot cross them)"))
    return _transient(ctx, job, exc)


def _transient(ctx: Context, job: Job, exc: Any) -> Outcome:
    if ctx.cancel.is_set():
        return Outcome.CANCELLED
    return _retry(ctx, job, exc)


def _vanished(ctx: Context, job: Job, exc: Any) -> Outcome:
    row = ctx.journal.get(str(job.claim))
    if row is None:
        return Outcome.LOST
    stage = finish_orphan(ctx.journal, row)
    if stage == "taken":
        log.warning("file.taken_over", inbox=str(job.inbox.path), name=job.name,
                    reason="another host took this claim over and finishes the file; nothing is archived here")
        return Outcome.LOST
    if stage == "lost":
        log.error("file.lost", **_fields(ctx, job), reason="the claimed file vanished")
        return Outcome.LOST
    return Outcome.FAILED if stage == Stage.FAILED else Outcome.ARCHIVED


def _retry(ctx: Context, job: Job, exc: BaseException) -> Outcome:
    job.attempts += 1
    limit = ctx.config.daemon.max_attempts
    kind = getattr(exc, "kind", None) or type(exc).__name__
    if limit and job.attempts >= limit:
        return _failed(ctx, job, Failure("upload", str(kind), f"gave up after {job.attempts} attempts: {exc}",
                                         status=getattr(exc, "status", None)))
    delay = backoff(job.attempts)
    log.warning("file.retry", **_fields(ctx, job, attempt=job.attempts, retry_in=round(delay, 2), error=str(exc),
                                        error_kind=str(kind)))
    ctx.queue.put(job, delay=delay)
    return Outcome.RETRY


def _bug(ctx: Context, job: Job, exc: Exception) -> Outcome:
    job.bugs += 1
    log.exception("file.internal_error", **_fields(ctx, job, attempt=job.bugs, max_attempts=MAX_BUGS,
                                                   error=f"{type(exc).__name__}: {exc}"))
    if job.bugs >= MAX_BUGS:
        return _failed(ctx, job, Failure("internal", "internal_error",
                                         f"inboxd failed on this file {job.bugs} times ({type(exc).__name__}: "
                                         f"{exc}); the log has the traceback"))
    ctx.queue.put(job, delay=backoff(job.bugs))
    return Outcome.RETRY


def _source_changed(ctx: Context, job: Job, exc: Any) -> Outcome:
    """The file changed under the check or the upload: check and upload it again, as new content."""
    job.source_changes += 1
    if job.source_changes >= ctx.config.daemon.max_source_changes:
        return _failed(ctx, job, Failure("upload", "source_changed",
                                         f"the file kept changing while it was uploaded ({job.source_changes} "
                                         f"times); write it elsewhere and rename it into the inbox"))
    run = FileRun.start(ctx, job, Heartbeat())
    if run.row.stage == Stage.UPLOADING and run.row.file_id:
        drop_orphan(run, run.row.file_id, run.row.upload_id)  # created for bytes that are not the file's
    run.update(stage=Stage.CLAIMED, sha256=None, file_id=None, upload_id=None, file_json=None)
    delay = max(1.0, ctx.config.daemon.settle_seconds)
    log.warning("file.source_changed", **run.fields(round=job.source_changes, retry_in=delay, error=str(exc)))
    ctx.queue.put(job, delay=delay)
    return Outcome.RETRY


def _failed(ctx: Context, job: Job, failure: Failure) -> Outcome:
    run = FileRun.start(ctx, job, Heartbeat())
    row = run.row
    if row.stage == Stage.UPLOADING and row.file_id:
        drop_orphan(run, row.file_id, row.upload_id)  # an abandoned upload leaves nothing behind
    path = fail(ctx.journal, job.inbox, row, failure, attempts=max(job.attempts + job.bugs, row.attempts))
    log.error("file.failed", **run.fields(stage=failure.stage, error_kind=failure.kind, error=failure.message,
                                          line=failure.line, sidecar=str(path), attempt=job.attempts))
    return Outcome.FAILED


def _fields(ctx: Context, job: Job, **extra: Any) -> dict[str, Any]:
    return log_fields(job, ctx.journal.get(str(job.claim)), **extra)


OnError = Callable[[Context, Job, Any], Outcome]
_ON_ERROR: list[tuple[type[BaseException] | tuple[type[BaseException], ...], OnError]] = [
    (AuthError, _paused),
    (Cancelled, lambda ctx, job, exc: Outcome.CANCELLED),
    (Failure, lambda ctx, job, exc: _failed(ctx, job, exc)),
    (BatchRejected, _batch_rejected),
    (RejectedError, _rejected),
    (FileNotFoundError, _vanished),
    (SourceChangedError, _source_changed),
    (OSError, _os_error),
    (TRANSIENT, _transient),
]
