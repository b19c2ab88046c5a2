"""One claimed file through the pipeline: inspect -> check -> upload -> archive.

`handle(ctx, job, hb)` is what a worker runs. Every step that cannot be undone is written
to the journal first; every outcome is one of: archived (done/), failed (failed/), retry
later (stays claimed), paused (the key was rejected; stays claimed, counts no attempt),
cancelled (shutdown; stays claimed for the next start), lost (the file vanished).

Only transient trouble is retried (`TRANSIENT`: the network, 429/5xx, a hostile answer, a
changed source, a full or broken disk). Anything else is a bug: it is logged with its
traceback and the file goes to failed/ with `internal_error` after `MAX_BUGS` attempts,
instead of being retried forever.
"""

from __future__ import annotations

import errno
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from .._constants import PROCESSING_FAILED
from ..api import ApiError, AuthError, Cancelled, FilesClient, RejectedError, SourceChangedError
from ..batch import BatchRejected, BatchStore, Poller, create_once, stem_of
from ..check import check_file
from ..config import Config
from ..watch.lease import Writers, open_for_writing
from ..watch.scan import file_kind
from .archive import archive, fail, finish_orphan
from .claim import sync_state, write_state
from .failure import Failure
from ..state.journal import Journal, Row
from .work import Heartbeat, Job, WorkQueue

log = structlog.get_logger("inboxd.pipeline")

STARTED = ("PENDING", "QUEUED", "RUNNING", "COMPLETED")  # the server took the whole file
MAX_BUGS = 3
# transient: retried with backoff. OSError minus EXDEV (an archive across filesystems never works).
TRANSIENT: tuple[type[BaseException], ...] = (ApiError, SourceChangedError, OSError, sqlite3.Error)
# a test hook: INBOXD_INJECT_BUG=<stage> raises a plain exception at that stage (tests only)
_INJECT_BUG = os.environ.get("INBOXD_INJECT_BUG", "")


@dataclass
class Context:
    """What the workers share; `client` and `config` are swapped on reload."""

    config: Config
    client: FilesClient
    journal: Journal
    queue: WorkQueue
    cancel: threading.Event
    on_auth_rejected: Callable[[BaseException], None]
    observe: Callable[[str, Job], None] | None = None  # for metrics
    batches: BatchStore | None = None  # the batch round trip (inboxes with [inboxes.batch])
    syncer: Executor | None = None  # fsyncs the claim's state while the upload goes on (else done in line)
    poller: Poller | None = None
    counters: dict[str, int] = field(default_factory=lambda: {"archived": 0, "failed": 0, "retried": 0})
    by_inbox: dict[str, dict[str, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, what: str, inbox: str | None = None) -> None:
        with self.lock:
            self.counters[what] = self.counters.get(what, 0) + 1
            if inbox is not None:
                per = self.by_inbox.setdefault(inbox, {})
                per[what] = per.get(what, 0) + 1


def backoff(attempt: int) -> float:
    """1, 2, 4 ... up to 300 seconds, with jitter."""
    return min(300.0, 2.0 ** max(0, attempt - 1)) * random.uniform(0.75, 1.25)


def _bug_hook(stage: str) -> None:
    if _INJECT_BUG == stage:
        raise RuntimeError(f"injected bug at {stage} (INBOXD_INJECT_BUG)")


def _fields(job: Job, row: Row | None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"inbox": str(job.inbox.path), "name": job.name}
    if row is not None:
        if row.sha256:
            out["sha256"] = row.sha256
        if row.bytes is not None:
            out["bytes"] = row.bytes
        if row.file_id:
            out["file_id"] = row.file_id
    out.update(extra)
    return out


def _row(ctx: Context, job: Job) -> Row:
    row = ctx.journal.get(str(job.claim))
    if row is None:
        ctx.journal.claimed(str(job.claim), str(job.inbox.path), job.name)
        row = ctx.journal.get(str(job.claim))
    if row is None:
        raise sqlite3.OperationalError(f"the journal lost the row of {job.claim}")
    return row


def handle(ctx: Context, job: Job, hb: Heartbeat) -> str:
    """Run one job; re-queue it where that is the outcome; return the outcome's name."""
    try:
        return _run(ctx, job, _row(ctx, job), hb)
    except AuthError as exc:
        ctx.on_auth_rejected(exc)
        ctx.queue.put(job)
        return "paused"
    except Cancelled:
        return "cancelled"
    except Failure as failure:
        return _failed(ctx, job, failure)
    except BatchRejected as exc:
        return _failed(ctx, job, Failure("batch", "batch_rejected", f"the server refused the batch job: {exc}",
                                         status=exc.status))
    except RejectedError as exc:
        return _failed(ctx, job, Failure("upload", exc.kind or "rejected", str(exc), status=exc.status,
                                         validation=_report_json(exc.report)))
    except FileNotFoundError:
        return _vanished(ctx, job)
    except SourceChangedError as exc:
        return _source_changed(ctx, job, exc)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # a name inboxd made: a bug, never a reason to retry forever
            return _failed(ctx, job, Failure("archive", "name_too_long", str(exc)))
        if exc.errno == errno.EXDEV:
            return _failed(ctx, job, Failure("archive", "cross_device", f"{exc}: done_dir and failed_dir must be "
                                             "on the inbox's filesystem (an atomic rename cannot cross them)"))
        if ctx.cancel.is_set():
            return "cancelled"
        return _retry(ctx, job, exc)
    except TRANSIENT as exc:
        if ctx.cancel.is_set():
            return "cancelled"
        return _retry(ctx, job, exc)
    except Exception as exc:  # noqa: BLE001 - a bug: say so with the traceback, give up after MAX_BUGS
        return _bug(ctx, job, exc)


def _vanished(ctx: Context, job: Job) -> str:
    row = ctx.journal.get(str(job.claim))
    if row is None:
        return "lost"
    outcome = finish_orphan(ctx.journal, row)
    if outcome == "lost":
        log.error("file.lost", **_fields(job, row), reason="the claimed file vanished")
    return outcome


def _retry(ctx: Context, job: Job, exc: BaseException) -> str:
    job.attempts += 1
    limit = ctx.config.daemon.max_attempts
    kind = getattr(exc, "kind", None) or type(exc).__name__
    if limit and job.attempts >= limit:
        return _failed(ctx, job, Failure("upload", str(kind), f"gave up after {job.attempts} attempts: {exc}",
                                         status=getattr(exc, "status", None)))
    delay = backoff(job.attempts)
    row = ctx.journal.get(str(job.claim))
    log.warning("file.retry", **_fields(job, row, attempt=job.attempts, retry_in=round(delay, 2),
                                          error=str(exc), error_kind=str(kind)))
    ctx.count("retried", job.key)
    ctx.queue.put(job, delay=delay)
    return "retry"


def _bug(ctx: Context, job: Job, exc: Exception) -> str:
    job.bugs += 1
    row = ctx.journal.get(str(job.claim))
    log.exception("file.internal_error", **_fields(job, row, attempt=job.bugs, max_attempts=MAX_BUGS,
                                                     error=f"{type(exc).__name__}: {exc}"))
    if job.bugs >= MAX_BUGS:
        return _failed(ctx, job, Failure("internal", "internal_error",
                                         f"inboxd failed on this file {job.bugs} times ({type(exc).__name__}: "
                                         f"{exc}); the log has the traceback"))
    ctx.count("retried", job.key)
    ctx.queue.put(job, delay=backoff(job.bugs))
    return "retry"


def _source_changed(ctx: Context, job: Job, exc: BaseException) -> str:
    """The file changed under the check or the upload: check and upload it again, as new content."""
    job.source_changes += 1
    row = ctx.journal.get(str(job.claim))
    if job.source_changes >= ctx.config.daemon.max_source_changes:
        return _failed(ctx, job, Failure("upload", "source_changed",
                                         f"the file kept changing while it was uploaded ({job.source_changes} "
                                         f"times); write it elsewhere and rename it into the inbox"))
    if row is not None and row.stage == "uploading" and row.file_id:
        _drop_orphan(ctx, job, row.file_id, row.upload_id)  # created for bytes that are not the file's
    if row is not None:
        ctx.journal.update(row.claim, stage="claimed", sha256=None, file_id=None, upload_id=None, file_json=None)
    delay = max(1.0, ctx.config.daemon.settle_seconds)
    log.warning("file.source_changed", **_fields(job, row, round=job.source_changes, retry_in=delay, error=str(exc)))
    ctx.queue.put(job, delay=delay)
    return "retry"


def _failed(ctx: Context, job: Job, failure: Failure) -> str:
    row = _row(ctx, job)
    if row.stage == "uploading" and row.file_id:
        _drop_orphan(ctx, job, row.file_id, row.upload_id)  # an abandoned upload leaves nothing behind
    path = fail(ctx.journal, job.inbox, row, failure, attempts=max(job.attempts + job.bugs, row.attempts))
    log.error("file.failed", **_fields(job, row, stage=failure.stage, error_kind=failure.kind, error=failure.message,
                                         line=failure.line, sidecar=str(path), attempt=job.attempts))
    ctx.count("failed", job.key)
    if ctx.observe:
        ctx.observe("failed", job)
    return "failed"


def _report_json(report: Any) -> dict[str, Any] | None:
    if report is None:
        return None
    if hasattr(report, "to_json"):
        report = report.to_json()
    if isinstance(report, str):
        try:
            report = json.loads(report)
        except ValueError:
            return {"text": report}
    return report if isinstance(report, dict) else {"value": report}


_ADOPTABLE = ("file_id", "upload_id", "sha256", "bytes", "mtime_ns", "validation", "method", "parts", "started_at",
              "finished_at")


def adoptable(state: dict[str, Any]) -> dict[str, Any]:
    """Journal fields from a claim folder's state file (another host uploaded the file)."""
    return {k: state[k] for k in _ADOPTABLE if state.get(k) is not None}


def _write_claim_state(job: Job, row: Row) -> None:
    """The claim folder carries the file id once the file is uploaded (SPEC §2): a survivor on
    another host, without our journal, asks the server instead of sending it again."""
    write_state(job.claim, {"file_id": row.file_id, "sha256": row.sha256, "bytes": row.bytes,
                            "mtime_ns": row.mtime_ns, "validation": row.validation, "method": row.method,
                            "parts": row.parts, "started_at": row.started_at, "finished_at": row.finished_at,
                            "purpose": job.inbox.purpose})


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _run(ctx: Context, job: Job, row: Row, hb: Heartbeat) -> str:
    st = os.lstat(job.claim)
    kind = file_kind(st.st_mode)
    if kind != "regular":
        raise Failure("inspect", "not_a_regular_file",
                      f"a {kind} matching the inbox patterns is never opened or followed", file_kind=kind)
    if row.stage == "uploaded" or (row.stage == "uploading" and row.file_id and _adopt(ctx, job, row, st, hb)):
        _create_batch(ctx, job, hb)
        return _archive(ctx, job, hb)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(job.claim, flags)
    except PermissionError as exc:  # the file's own permissions: retrying will not help
        raise Failure("inspect", "unreadable", f"inboxd may not read the file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if file_kind(st.st_mode) != "regular":
            raise Failure("inspect", "not_a_regular_file", "not a regular file", file_kind=file_kind(st.st_mode))
        checked = {} if _still_checked(_row(ctx, job), st) else _check(ctx, job, f, st, hb)
        _bug_hook("check")
        _upload(ctx, job, f, st, hb, checked)
    _create_batch(ctx, job, hb)
    if not job.archive:
        # uploaded and journaled: an archiver (the queue's archive lane) moves it to done/ while
        # this worker uploads the next
        job.archive = True
        ctx.queue.put(job)
        return "uploaded"
    return _archive(ctx, job, hb)


def _adopt(ctx: Context, job: Job, row: Row, st: os.stat_result, hb: Heartbeat) -> bool:
    """Recovery asks the server, it does not re-send: a journaled file id the server holds
    whole and processing is adopted; otherwise the orphan is deleted (or the multipart upload
    aborted) and the file is uploaded again. True when adopted."""
    hb_file_id = row.file_id or ""
    obj = ctx.client.lookup(hb_file_id)
    unchanged = row.ino in (None, st.st_ino) and (row.bytes, row.mtime_ns) == (st.st_size, st.st_mtime_ns)
    if obj is not None and unchanged and obj.bytes == row.bytes and (obj.processed or obj.processing_status in STARTED):
        if (ctx.config.upload.wait_for_processing or job.inbox.batch is not None) \
                and obj.processing_status != "COMPLETED":
            obj = ctx.client.wait_for_processing(obj.id, timeout=ctx.config.upload.processing_timeout_seconds,
                                                 cancel=ctx.cancel, on_poll=lambda: hb.beat("processing"))
        if obj.processing_status in PROCESSING_FAILED:
            raise Failure("upload", "processing_failed",
                          f"the server's processing of file {obj.id} ended {obj.processing_status}",
                          validation=_report_json(obj.validation_report))
        ctx.journal.uploaded(row.claim, row.sha256 or "", job.inbox.purpose, obj.manifest_dict(), file_id=obj.id,
                             method=row.method or "single", parts=row.parts or 1, attempts=max(1, row.attempts),
                             started_at=row.started_at or time.time(), finished_at=time.time())
        _write_claim_state(job, _row(ctx, job))
        log.info("file.adopted", **_fields(job, row, processing_status=obj.processing_status),
                 reason="the server already holds this upload; nothing was sent again")
        return True
    if row.upload_id:
        ctx.client.abort_multipart(row.upload_id, hb_file_id)
    elif obj is not None:
        ctx.client.delete(hb_file_id)
    ctx.journal.update(row.claim, stage="checked", file_id=None, upload_id=None)
    log.info("file.orphan_removed", **_fields(job, row, multipart=bool(row.upload_id)),
             reason="an interrupted upload the server did not finish; it is sent again")
    return False


def _still_checked(row: Row, st: os.stat_result) -> bool:
    """A retry does not hash the file again: the journal's sha256 and verdict stand while the
    inode, size and mtime are the ones that were checked."""
    if row.stage not in ("checked", "uploading") or not row.sha256 or not row.validation:
        return False
    passed = json.loads(row.validation).get("passed")
    return bool(passed) and (row.ino, row.bytes, row.mtime_ns) == _signature(st)


def _check(ctx: Context, job: Job, f: BinaryIO, st: os.stat_result, hb: Heartbeat) -> dict[str, Any]:
    """Check and hash the file; return the journal fields of a file that passed (written with
    the upload's first stage, one commit instead of two); a file that failed has them written
    here, for its sidecar."""
    hb.beat("check")
    t0 = time.monotonic()
    mode = job.inbox.validate_mode
    report = check_file(f, job.inbox.purpose, mode, name=job.name,
                        max_line_bytes=ctx.config.check.max_line_bytes, max_errors=ctx.config.check.max_errors)
    if _signature(os.fstat(f.fileno())) != _signature(st) or report.bytes != st.st_size:
        raise SourceChangedError("the file changed while it was checked")
    validation = {"mode": mode, "passed": bool(report.passed), "records": report.records, "format": report.format}
    checked = {"bytes": report.bytes, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "sha256": report.sha256,
               "validation": json.dumps(validation)}
    log.debug("file.checked", inbox=str(job.inbox.path), name=job.name, sha256=report.sha256, bytes=report.bytes,
             passed=bool(report.passed), records=report.records, seconds=round(time.monotonic() - t0, 3))
    if report.passed:
        return checked
    ctx.journal.update(str(job.claim), stage="checked", **checked)
    first = report.errors[0] if report.errors else None
    raise Failure("validate", first.rule if first else "invalid", first.message if first else "validation failed",
                  line=first.line if first else None, validation=_report_json(report))


def _upload(ctx: Context, job: Job, f: BinaryIO, st: os.stat_result, hb: Heartbeat,
            checked: dict[str, Any]) -> None:
    row = replace(_row(ctx, job), **checked)  # `checked`: the check's fields, not yet journaled
    sha256 = row.sha256 or ""
    purpose = job.inbox.purpose
    started = time.time()
    known = ctx.journal.known_upload(sha256, purpose) if ctx.config.upload.dedupe else None
    created: list[tuple[str, Future[None] | None]] = []  # the file ids the state was written with; its fsync
    if known is not None:
        if checked:
            ctx.journal.update(str(job.claim), stage="checked", **checked)
        file_object, method, parts, attempts = known, "existing", 0, 1
    else:
        hb.beat("upload")
        client = ctx.client

        def on_created(file_id: str, upload_id: str | None) -> None:
            # the upload's first stage, the check's verdict and the file id in one commit: before
            # this answer the server held nothing the journal could name
            if created:  # a restarted upload (an expired url): only the new ids
                ctx.journal.update(str(job.claim), file_id=file_id, upload_id=upload_id)
            else:
                ctx.journal.update(str(job.claim), stage="uploading", attempts=job.attempts + 1, started_at=started,
                                   file_id=file_id, upload_id=upload_id, **checked)
            # the claim folder knows the file id from now on: a survivor on another host asks the
            # server about it instead of sending the file a second time. Its fsync runs on the
            # syncer while the bytes go up; the upload waits for it once whole (below)
            in_xattr = write_state(job.claim, {
                "file_id": file_id, "upload_id": upload_id, "sha256": sha256, "bytes": row.bytes,
                "mtime_ns": row.mtime_ns, "validation": row.validation, "started_at": started, "purpose": purpose,
                "method": "multipart" if upload_id else "single"}, durable=False)
            synced = None
            if ctx.syncer is not None:
                try:
                    synced = ctx.syncer.submit(sync_state, job.claim, in_xattr)
                except RuntimeError:  # shut down: a worker still uploading after the grace period
                    pass
            if synced is None:
                sync_state(job.claim, in_xattr)
            created.append((file_id, synced))
            hb.beat("upload")

        try:
            result = client.upload(job.claim, purpose, file_name=job.name, sha256=sha256, expected_size=row.bytes,
                                   progress=lambda n: hb.beat(), cancel=ctx.cancel, on_created=on_created)
        except BaseException:
            if checked and not created:  # refused or given up before the server made the file: the
                ctx.journal.update(str(job.claim), stage="checked", **checked)  # verdict for the sidecar/retry
            raise
        _bug_hook("upload")
        file_obj = result.file
        if ctx.config.upload.wait_for_processing or job.inbox.batch is not None:
            hb.beat("processing")  # a batch job needs the server's processing COMPLETED first
            file_obj = client.wait_for_processing(file_obj.id, timeout=ctx.config.upload.processing_timeout_seconds,
                                                  cancel=ctx.cancel, on_poll=lambda: hb.beat("processing"))
        file_object = file_obj.manifest_dict()
        method, parts, attempts = result.method, result.parts, max(1, result.attempts) + job.attempts
        status = file_object.get("processing_status")
        if status in PROCESSING_FAILED:
            raise Failure("upload", "processing_failed",
                          f"the server's processing of file {file_object.get('id')} ended {status}",
                          validation=_report_json(file_obj.validation_report))
    _unchanged_since_check(job, f, st, file_object.get("id") if method != "existing" else None, ctx)
    # the server had the content (a 409): nothing was created, so the check's fields come here
    unwritten = {k: v for k, v in checked.items() if k != "sha256"} if known is None and not created else {}
    ctx.journal.uploaded(str(job.claim), sha256, purpose, file_object, file_id=file_object.get("id"),
                         method=method, parts=parts, attempts=attempts, started_at=started, finished_at=time.time(),
                         **unwritten)
    if created and created[-1][0] == file_object.get("id"):
        synced = created[-1][1]  # the state written at creation has this id: fsynced, not rewritten
        if synced is not None:
            synced.result()  # durable before the file counts as uploaded; its OSError is retried as before
    else:
        _write_claim_state(job, _row(ctx, job))
    log.debug("file.uploaded", inbox=str(job.inbox.path), name=job.name, sha256=sha256, bytes=row.bytes,
             file_id=file_object.get("id"), method=method, parts=parts, attempt=attempts,
             seconds=round(time.time() - started, 3))


def _unchanged_since_check(job: Job, f: BinaryIO, st: os.stat_result, uploaded_id: str | None, ctx: Context) -> None:
    """Nothing is archived as done with content it did not upload: the claimed path must still be
    the inode that was hashed, with the same size and mtime, and nobody may hold it open for writing."""
    now = os.lstat(job.claim)
    changed = _signature(now) != _signature(st) or _signature(os.fstat(f.fileno())) != _signature(st)
    if not changed and open_for_writing(str(job.claim)) is not Writers.OPEN:
        return
    if uploaded_id:
        _drop_orphan(ctx, job, uploaded_id, None)  # the stale upload: no manifest will ever name it
        ctx.journal.update(str(job.claim), file_id=None, upload_id=None)
    raise SourceChangedError("the file changed (or is still open for writing) after it was checked; "
                             "it is checked and uploaded again")


def _create_batch(ctx: Context, job: Job, hb: Heartbeat) -> None:
    """For an inbox with [inboxes.batch]: the job for this input, created exactly once (the
    store says `creating` before the POST; a retry or a restart adopts what the server has)."""
    if job.inbox.batch is None or ctx.batches is None:
        return
    hb.beat("batch")
    row = _row(ctx, job)
    if not row.file_id:
        raise sqlite3.OperationalError(f"no file id journaled for {job.claim}")
    validation = json.loads(row.validation) if row.validation else {}
    create_once(ctx.client, ctx.batches, row.claim, row.file_id, job.inbox.batch, inbox=job.inbox.path,
                input_sha256=row.sha256, dropped_at=job.seen_at, uploaded_at=row.finished_at,
                requests=validation.get("records"), cancel=ctx.cancel, look_first=job.recovered)


def _follow_batch(ctx: Context, job: Job, row: Row) -> None:
    """The input is archived: the poller follows its job and delivers into the outbox."""
    if job.inbox.batch is None or ctx.batches is None or ctx.batches.get(row.claim) is None:
        return
    manifest = Path(row.target + ".manifest.json") if row.target else None
    data = {"move": row.target, "keep": str(job.inbox.path / row.name)}.get(job.inbox.on_success)
    stem = stem_of(Path(row.target).name) if row.target else None
    rec = ctx.batches.attach(row.claim, manifest=manifest, input_path=data, stem=stem)
    if ctx.poller is not None:
        ctx.poller.follow(rec)


def _drop_orphan(ctx: Context, job: Job, file_id: str, upload_id: str | None) -> None:
    """Delete a file object (or abort a multipart upload) that no manifest will ever name."""
    try:
        if upload_id:
            ctx.client.abort_multipart(upload_id, file_id)
        else:
            ctx.client.delete(file_id)
    except ApiError as exc:
        log.warning("file.orphan_kept", inbox=str(job.inbox.path), name=job.name, file_id=file_id, error=str(exc),
                    hint="a file object for bytes that were never archived stays on the server")
        return
    log.info("file.orphan_deleted", inbox=str(job.inbox.path), name=job.name, file_id=file_id)


def _archive(ctx: Context, job: Job, hb: Heartbeat) -> str:
    hb.beat("archive")
    _bug_hook("archive")
    row = _row(ctx, job)
    manifest_path = archive(ctx.journal, job.inbox, row)
    _follow_batch(ctx, job, _row(ctx, job))
    # the one info line of a file that went well (the stage lines are at debug): all of it here
    validation = json.loads(row.validation) if row.validation else {}
    log.info("file.archived", **_fields(job, row, manifest=str(manifest_path), recovered=job.recovered,
                                          on_success=job.inbox.on_success, method=row.method, parts=row.parts,
                                          attempt=max(1, row.attempts), records=validation.get("records"),
                                          seconds=round(time.time() - job.seen_at, 3)))
    ctx.count("archived", job.key)
    if ctx.observe:
        ctx.observe("archived", job)
    return "archived"
