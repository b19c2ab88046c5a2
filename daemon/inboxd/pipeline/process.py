"""One claimed file through the pipeline: inspect -> check -> upload -> archive.

`handle(ctx, job, hb)` is what a worker runs. Every step that cannot be undone is written
to the journal first; every outcome is one of: archived (done/), failed (failed/), retry
later (stays claimed), paused (the key was rejected; stays claimed, counts no attempt),
cancelled (shutdown; stays claimed for the next start), lost (the file vanished).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..api import ApiError, AuthError, CancelledError, FilesClient, RejectedError
from ..check import check_file
from ..config import Config
from ..watch.scan import file_kind
from .archive import archive, fail, finish_orphan
from .journal import Journal, Row
from .work import Heartbeat, Job, WorkQueue

log = structlog.get_logger("inboxd.pipeline")

TERMINAL_BAD = ("FAILED", "INVALID_FORMAT")


class SourceChanged(Exception):
    """The claimed file changed while it was being uploaded (a writer kept it open)."""


class ProcessingFailed(Exception):
    """The server took the file but its validation ended FAILED or INVALID_FORMAT: permanent."""


@dataclass
class Context:
    """What the workers share; `client` and `config` are swapped on reload."""

    config: Config
    client: FilesClient
    journal: Journal
    queue: WorkQueue
    cancel: threading.Event
    on_auth_rejected: Any  # callable(exc) -> None
    observe: Any = None  # callable(event: str, job: Job, **fields) -> None, for metrics
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


def handle(ctx: Context, job: Job, hb: Heartbeat) -> str:
    """Run one job; re-queue it where that is the outcome; return the outcome's name."""
    row = ctx.journal.get(str(job.claim))
    if row is None:
        ctx.journal.claimed(str(job.claim), str(job.inbox.path), job.name)
        row = ctx.journal.get(str(job.claim))
    assert row is not None
    try:
        return _run(ctx, job, row, hb)
    except AuthError as exc:
        ctx.on_auth_rejected(exc)
        ctx.queue.put(job)
        return "paused"
    except CancelledError:
        return "cancelled"
    except RejectedError as exc:
        return _failed(ctx, job, "upload", exc.kind or "rejected", str(exc), status=exc.status,
                       validation=_report_json(getattr(exc, "report", None)))
    except ProcessingFailed as exc:
        return _failed(ctx, job, "upload", "processing_failed", str(exc))
    except FileNotFoundError:
        row = ctx.journal.get(str(job.claim))
        if row is not None:
            outcome = finish_orphan(ctx.journal, row)
            if outcome == "lost":
                log.error("file.lost", **_fields(job, row), reason="the claimed file vanished")
            return outcome
        return "lost"
    except (ApiError, SourceChanged, OSError, Exception) as exc:  # noqa: BLE001 - transient: retry
        if ctx.cancel.is_set():
            return "cancelled"
        return _retry(ctx, job, exc)


def _retry(ctx: Context, job: Job, exc: BaseException) -> str:
    job.attempts += 1
    limit = ctx.config.daemon.max_attempts
    kind = getattr(exc, "kind", None) or type(exc).__name__
    if limit and job.attempts >= limit:
        return _failed(ctx, job, "upload", str(kind), f"gave up after {job.attempts} attempts: {exc}",
                       status=getattr(exc, "status", None))
    delay = backoff(job.attempts)
    row = ctx.journal.get(str(job.claim))
    log.warning("file.retry", **_fields(job, row, attempt=job.attempts, retry_in=round(delay, 2),
                                          error=str(exc), error_kind=str(kind)))
    ctx.count("retried", job.key)
    ctx.queue.put(job, delay=delay)
    return "retry"


def _failed(ctx: Context, job: Job, stage: str, error_kind: str, message: str, *, kind: str = "regular",
            line: int | None = None, status: int | None = None, validation: dict[str, Any] | None = None) -> str:
    row = ctx.journal.get(str(job.claim))
    assert row is not None
    path = fail(ctx.journal, job.inbox, row, kind=kind, stage=stage, error_kind=error_kind, message=message,
                line=line, status=status, validation=validation, attempts=max(job.attempts, row.attempts))
    log.error("file.failed", **_fields(job, row, stage=stage, error_kind=error_kind, error=message,
                                         sidecar=str(path), attempt=job.attempts))
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


def _run(ctx: Context, job: Job, row: Row, hb: Heartbeat) -> str:
    st = os.lstat(job.claim)
    kind = file_kind(st.st_mode)
    if kind != "regular":
        return _failed(ctx, job, "inspect", "not_a_regular_file",
                       f"a {kind} matching the inbox patterns is never opened or followed", kind=kind)
    if row.stage == "uploaded":
        return _archive(ctx, job, hb, recovered=True)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(job.claim, flags)
    except PermissionError as exc:  # the file's own permissions: retrying will not help
        return _failed(ctx, job, "inspect", "unreadable", f"inboxd may not read the file: {exc.strerror}")
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if file_kind(st.st_mode) != "regular":
            return _failed(ctx, job, "inspect", "not_a_regular_file", "not a regular file", kind=file_kind(st.st_mode))
        passed = _check(ctx, job, f, st, hb)
        if not passed:
            return "failed"
        _upload(ctx, job, f, st, hb)
    return _archive(ctx, job, hb, recovered=False)


def _check(ctx: Context, job: Job, f: Any, st: os.stat_result, hb: Heartbeat) -> bool:
    hb.beat("check")
    t0 = time.monotonic()
    mode = job.inbox.validate_mode
    report = check_file(f, job.inbox.purpose, mode, name=job.name,
                        max_line_bytes=ctx.config.check.max_line_bytes, max_errors=ctx.config.check.max_errors)
    validation = {"mode": mode, "passed": bool(report.passed), "records": report.records, "format": report.format}
    ctx.journal.update(str(job.claim), stage="checked", bytes=report.bytes, mtime_ns=st.st_mtime_ns,
                       sha256=report.sha256, validation=json.dumps(validation))
    log.info("file.checked", inbox=str(job.inbox.path), name=job.name, sha256=report.sha256, bytes=report.bytes,
             passed=bool(report.passed), records=report.records, seconds=round(time.monotonic() - t0, 3))
    if report.passed:
        return True
    first = report.errors[0] if report.errors else None
    message = first.message if first else "validation failed"
    _failed(ctx, job, "validate", first.rule if first else "invalid", message,
            line=first.line if first else None, validation=_report_json(report))
    return False


def _upload(ctx: Context, job: Job, f: Any, st: os.stat_result, hb: Heartbeat) -> None:
    row = ctx.journal.get(str(job.claim))
    assert row is not None and row.sha256
    purpose = job.inbox.purpose
    started = time.time()
    known = ctx.journal.known_upload(row.sha256, purpose) if ctx.config.upload.dedupe else None
    if known is not None:
        file_object, method, parts, attempts = known, "existing", 0, 1
    else:
        ctx.journal.update(str(job.claim), stage="uploading", attempts=job.attempts + 1, started_at=started)
        hb.beat("upload")
        client = ctx.client

        def on_created(*args: Any, **kwargs: Any) -> None:
            file_id = kwargs.get("file_id") or (args[0] if args else None)
            upload_id = kwargs.get("upload_id") or (args[1] if len(args) > 1 else None)
            ctx.journal.update(str(job.claim), file_id=str(file_id) if file_id else None,
                               upload_id=str(upload_id) if upload_id else None)
            hb.beat("upload")

        result = client.upload(job.claim, purpose, file_name=job.name, sha256=row.sha256,
                               progress=lambda *a, **k: hb.beat(), cancel=ctx.cancel, on_created=on_created)
        file_obj = result.file
        if ctx.config.upload.wait_for_processing:
            hb.beat("processing")
            file_obj = client.wait_for_processing(file_obj.id, timeout=ctx.config.upload.processing_timeout_seconds)
        file_object = file_obj.manifest_dict()
        method, parts, attempts = result.method, result.parts, max(1, result.attempts) + job.attempts
        status = file_object.get("processing_status")
        if status in TERMINAL_BAD:
            raise ProcessingFailed(f"the server's processing of file {file_object.get('id')} ended {status}")
    after = os.fstat(f.fileno())
    if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns) or after.st_size != row.bytes:
        raise SourceChanged("the file changed while it was uploaded; it is checked and uploaded again")
    ctx.journal.uploaded(str(job.claim), row.sha256, purpose, file_object, file_id=file_object.get("id"),
                         method=method, parts=parts, attempts=attempts, started_at=started, finished_at=time.time())
    log.info("file.uploaded", inbox=str(job.inbox.path), name=job.name, sha256=row.sha256, bytes=row.bytes,
             file_id=file_object.get("id"), method=method, parts=parts, attempt=attempts,
             seconds=round(time.time() - started, 3))


def _archive(ctx: Context, job: Job, hb: Heartbeat, *, recovered: bool) -> str:
    hb.beat("archive")
    row = ctx.journal.get(str(job.claim))
    assert row is not None
    manifest_path = archive(ctx.journal, job.inbox, row)
    log.info("file.archived", **_fields(job, row, manifest=str(manifest_path), recovered=recovered,
                                          on_success=job.inbox.on_success,
                                          seconds=round(time.time() - job.seen_at, 3)))
    ctx.count("archived", job.key)
    if ctx.observe:
        ctx.observe("archived", job)
    return "archived"

