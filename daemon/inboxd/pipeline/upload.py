"""The check and the upload of one claimed file, and the adoption of an upload an earlier run
left on the server.

Each durable write is made where it happens: the check's verdict with the upload's first
stage (`UploadRecorder.created`: the journal row and the claim's state file, one commit,
as soon as the server names a file id), the `uploaded` stage once the server has the file
whole. Recovery asks the server instead of sending anything twice (`adopt`).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from .._constants import PROCESSING_FAILED
from ..api import ApiError, SourceChangedError
from ..api._models import FileObject
from ..batch.precheck import check_input
from ..batch.split import Span, plan_parts
from ..check import CheckReport, check_file
from ..state.journal import Row, Stage
from ..watch.lease import Writers, open_for_writing
from .claim import read_state, sync_state, write_state
from .context import FileRun
from .failure import Failure

log = structlog.get_logger("inboxd.pipeline")

STARTED = ("PENDING", "QUEUED", "RUNNING", "COMPLETED")  # the server took the whole file
_STATE_FIELDS = ("file_id", "sha256", "bytes", "mtime_ns", "validation", "method", "parts", "started_at",
                 "finished_at")
_ADOPTABLE = ("upload_id", *_STATE_FIELDS)


def adoptable(state: dict[str, Any]) -> dict[str, Any]:
    """Journal fields from a claim folder's state file (another host uploaded the file)."""
    return {k: state[k] for k in _ADOPTABLE if state.get(k) is not None}


def signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def report_json(report: Any) -> dict[str, Any] | None:
    """A validation report (the checker's or the server's) as a JSON object for a sidecar."""
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


_KEPT = ("batch_listed_before",)  # claim state keys a rewrite keeps (batch/create.py's Listing)


def write_claim_state(run: FileRun) -> None:
    """The claim folder carries the file id once the file is uploaded (SPEC §2): a survivor on
    another host, without our journal, asks the server instead of sending it again."""
    state = {k: getattr(run.row, k) for k in _STATE_FIELDS}
    kept = {k: v for k, v in (read_state(run.job.claim) or {}).items() if k in _KEPT}  # the batch create's record
    write_state(run.job.claim, {**state, "purpose": run.job.inbox.purpose, **kept})


def still_checked(row: Row, st: os.stat_result) -> bool:
    """A retry does not hash the file again: the journal's sha256 and verdict stand while the
    inode, size and mtime are the ones that were checked."""
    if row.stage not in (Stage.CHECKED, Stage.UPLOADING) or not row.sha256 or not row.validation:
        return False
    passed = json.loads(row.validation).get("passed")
    return bool(passed) and (row.ino, row.bytes, row.mtime_ns) == signature(st)


def check(run: FileRun, f: BinaryIO, st: os.stat_result) -> dict[str, Any]:
    """Check and hash the file; return the journal fields of a file that passed (written with
    the upload's first stage, one commit instead of two); a file that failed has them written
    here, for its sidecar, and raises its Failure."""
    run.hb.beat("check")
    t0 = time.monotonic()
    mode, job = run.job.inbox.validate_mode, run.job
    parts = _parts(run)
    if len(parts) > 1:
        report = _check_parts(run, parts, mode)
    else:
        report = check_file(f, job.inbox.purpose, mode, name=job.name,
                            max_line_bytes=run.config.check.max_line_bytes, max_errors=run.config.check.max_errors)
    if signature(os.fstat(f.fileno())) != signature(st) or report.bytes != st.st_size:
        raise SourceChangedError("the file changed while it was checked")
    validation = {"mode": mode, "passed": bool(report.passed), "records": report.records, "format": report.format}
    if len(parts) > 1:
        validation["parts"] = len(parts)
    checked = {"bytes": report.bytes, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "sha256": report.sha256,
               "validation": json.dumps(validation)}
    log.debug("file.checked", inbox=str(job.inbox.path), name=job.name, sha256=report.sha256, bytes=report.bytes,
              passed=bool(report.passed), records=report.records, seconds=round(time.monotonic() - t0, 3))
    if report.passed:
        return checked
    run.update(stage=Stage.CHECKED, **checked)
    first = report.errors[0] if report.errors else None
    raise Failure("validate", first.rule if first else "invalid", first.message if first else "validation failed",
                  line=first.line if first else None, validation=report_json(report))


def _parts(run: FileRun) -> list[Span]:
    """The parts a batch input is cut into by its inbox's per-job limits (one part elsewhere)."""
    cfg = run.job.inbox.batch
    if cfg is None:
        return []
    return plan_parts(Path(run.job.claim), cfg.max_requests_per_job, int(cfg.max_bytes_per_job))


def _check_parts(run: FileRun, parts: list[Span], mode: str) -> CheckReport:
    """The check of an input split in parts: each part on its own (the per-job limits apply
    per part), custom_ids unique across them."""
    job = run.job
    got = check_input(Path(job.claim), parts, mode=mode, max_line_bytes=run.config.check.max_line_bytes,
                      max_errors=run.config.check.max_errors)
    return CheckReport(job.name, job.inbox.purpose, mode, bytes=got.bytes, sha256=got.sha256,
                       lines=parts[-1].line - 1 + parts[-1].requests, records=got.records, errors=list(got.errors))


def split_in_parts(run: FileRun) -> int:
    """How many parts the check cut the input into, when more than one (else 0)."""
    validation = run.checked.get("validation") or run.row.validation or "{}"
    parts = int(json.loads(validation).get("parts") or 1)
    return parts if parts > 1 else 0


def record_split(run: FileRun, f: BinaryIO, st: os.stat_result, parts: int) -> None:
    """A batch input split in parts is not uploaded whole: its ledger uploads each part once it
    is archived. Journaled `uploaded` with no file id (its manifest's `file` is null)."""
    now = time.time()
    unchanged_since_check(run, f, st, None)
    run.update(stage=Stage.UPLOADED, method="split", parts=parts, attempts=max(1, run.row.attempts),
               started_at=run.row.started_at or now, finished_at=now, file_id=None, **run.checked)
    log.debug("file.split", inbox=str(run.job.inbox.path), name=run.job.name, parts=parts)


class UploadRecorder:
    """The durable writes at the moment the server names a file id: the journal's `uploading`
    stage with the check's verdict and the id (one commit; before this answer the server held
    nothing the journal could name), then the claim folder's state file, whose fsync runs on
    the syncer while the bytes go up and is waited for once the upload is whole."""

    def __init__(self, run: FileRun, syncer: Executor | None, started: float) -> None:
        self.run, self.syncer, self.started = run, syncer, started
        self.ids: list[tuple[str, Future[None] | None]] = []  # the ids the state was written with; its fsync

    def created(self, file_id: str, upload_id: str | None) -> None:
        run = self.run
        if self.ids:  # a restarted upload (an expired url): only the new ids
            run.update(file_id=file_id, upload_id=upload_id)
        else:
            run.update(stage=Stage.UPLOADING, attempts=run.job.attempts + 1, started_at=self.started,
                       file_id=file_id, upload_id=upload_id, **run.checked)
        row = run.row
        in_xattr = write_state(run.job.claim, {
            "file_id": file_id, "upload_id": upload_id, "sha256": row.sha256, "bytes": row.bytes,
            "mtime_ns": row.mtime_ns, "validation": row.validation, "started_at": self.started,
            "purpose": run.job.inbox.purpose, "method": "multipart" if upload_id else "single"}, durable=False)
        synced = None
        if self.syncer is not None:
            try:
                synced = self.syncer.submit(sync_state, run.job.claim, in_xattr)
            except RuntimeError:  # shut down: a worker still uploading after the grace period
                pass
        if synced is None:
            sync_state(run.job.claim, in_xattr)
        self.ids.append((file_id, synced))
        run.hb.beat("upload")

    def durable(self, file_id: str) -> bool:
        """True once the state written at creation for `file_id` is fsynced (waited for here);
        False when the last state written names another id (or none was written)."""
        if not self.ids or self.ids[-1][0] != file_id:
            return False
        synced = self.ids[-1][1]
        if synced is not None:
            synced.result()  # its OSError is retried like any other
        return True


def upload(run: FileRun, f: BinaryIO, st: os.stat_result) -> None:
    """Upload the checked file (or reuse the file id of content already uploaded for the
    purpose) and journal `uploaded`."""
    checked, job, purpose = run.checked, run.job, run.job.inbox.purpose
    sha256 = checked.get("sha256") or run.row.sha256 or ""
    started = time.time()
    known = run.journal.known_upload(sha256, purpose) if run.config.upload.dedupe else None
    recorder = UploadRecorder(run, run.syncer, started)
    if known is not None:
        if checked:
            run.update(stage=Stage.CHECKED, **checked)
        file_object, method, parts, attempts = known, "existing", 0, 1
    else:
        file_obj, method, parts, attempts = _send(run, recorder, sha256)
        file_object = file_obj.manifest_dict()
    uploaded_id = file_object.get("id")
    unchanged_since_check(run, f, st, uploaded_id if method != "existing" else None)
    # the server had the content (a 409): nothing was created, so the check's fields come here
    unwritten = {k: v for k, v in checked.items() if k != "sha256"} if known is None and not recorder.ids else {}
    run.journal.uploaded(run.claim, sha256, purpose, file_object, file_id=uploaded_id, method=method, parts=parts,
                         attempts=attempts, started_at=started, finished_at=time.time(), **unwritten)
    run.refresh()
    if not recorder.durable(str(uploaded_id)):
        write_claim_state(run)
    log.debug("file.uploaded", inbox=str(job.inbox.path), name=job.name, sha256=sha256, bytes=run.row.bytes,
              file_id=uploaded_id, method=method, parts=parts, attempt=attempts,
              seconds=round(time.time() - started, 3))


def _send(run: FileRun, recorder: UploadRecorder, sha256: str) -> tuple[FileObject, str, int, int]:
    """The bytes to the server, then (for a batch inbox or when asked) its processing waited for."""
    job, hb = run.job, run.hb
    hb.beat("upload")
    size = run.checked.get("bytes", run.row.bytes)
    try:
        result = run.client.upload(job.claim, job.inbox.purpose, file_name=job.name, sha256=sha256,
                                   expected_size=size, progress=lambda n: hb.beat(), cancel=run.cancel,
                                   on_created=recorder.created)
    except BaseException:
        if run.checked and not recorder.ids:  # refused or given up before the server made the file:
            run.update(stage=Stage.CHECKED, **run.checked)  # the verdict, for the sidecar or the retry
        raise
    file_obj = _processed(run, result.file)
    return file_obj, result.method, result.parts, max(1, result.attempts) + job.attempts


def _processed(run: FileRun, obj: FileObject) -> FileObject:
    """`obj` once the server's processing is over, where the inbox needs that (a batch job
    needs COMPLETED); a Failure when processing failed."""
    if (run.config.upload.wait_for_processing or run.job.inbox.batch is not None) \
            and obj.processing_status != "COMPLETED":
        run.hb.beat("processing")
        obj = run.client.wait_for_processing(obj.id, timeout=run.config.upload.processing_timeout_seconds,
                                             cancel=run.cancel, on_poll=lambda: run.hb.beat("processing"))
    if obj.processing_status in PROCESSING_FAILED:
        raise Failure("upload", "processing_failed", f"the server's processing of file {obj.id} ended "
                      f"{obj.processing_status}", validation=report_json(obj.validation_report))
    return obj


def unchanged_since_check(run: FileRun, f: BinaryIO, st: os.stat_result, uploaded_id: str | None) -> None:
    """Nothing is archived as done with content it did not upload: the claimed path must still be
    the inode that was hashed, with the same size and mtime, and nobody may hold it open for writing."""
    now = os.lstat(run.job.claim)
    changed = signature(now) != signature(st) or signature(os.fstat(f.fileno())) != signature(st)
    if not changed and open_for_writing(run.claim) is not Writers.OPEN:
        return
    if uploaded_id:
        drop_orphan(run, uploaded_id, None)  # the stale upload: no manifest will ever name it
        run.update(file_id=None, upload_id=None)
    raise SourceChangedError("the file changed (or is still open for writing) after it was checked; "
                             "it is checked and uploaded again")


def adopt(run: FileRun, st: os.stat_result) -> bool:
    """Recovery asks the server, it does not re-send: a journaled file id the server holds
    whole and processing is adopted; otherwise the orphan is deleted (or the multipart upload
    aborted) and the file is uploaded again. True when adopted."""
    row, job = run.row, run.job
    file_id = row.file_id or ""
    obj = run.client.lookup(file_id)
    unchanged = row.ino in (None, st.st_ino) and (row.bytes, row.mtime_ns) == (st.st_size, st.st_mtime_ns)
    if obj is not None and unchanged and obj.bytes == row.bytes and (obj.processed or obj.processing_status in STARTED):
        obj = _processed(run, obj)
        run.journal.uploaded(row.claim, row.sha256 or "", job.inbox.purpose, obj.manifest_dict(), file_id=obj.id,
                             method=row.method or "single", parts=row.parts or 1, attempts=max(1, row.attempts),
                             started_at=row.started_at or time.time(), finished_at=time.time())
        run.refresh()
        write_claim_state(run)
        log.info("file.adopted", **run.fields(processing_status=obj.processing_status),
                 reason="the server already holds this upload; nothing was sent again")
        return True
    if row.upload_id:
        run.client.abort_multipart(row.upload_id, file_id)
    elif obj is not None:
        run.client.delete(file_id)
    run.update(stage=Stage.CHECKED, file_id=None, upload_id=None)
    log.info("file.orphan_removed", **run.fields(multipart=bool(row.upload_id)),
             reason="an interrupted upload the server did not finish; it is sent again")
    return False


def drop_orphan(run: FileRun, file_id: str, upload_id: str | None) -> None:
    """Delete a file object (or abort a multipart upload) that no manifest will ever name."""
    job = run.job
    try:
        if upload_id:
            run.client.abort_multipart(upload_id, file_id)
        else:
            run.client.delete(file_id)
    except ApiError as exc:
        log.warning("file.orphan_kept", inbox=str(job.inbox.path), name=job.name, file_id=file_id, error=str(exc),
                    hint="a file object for bytes that were never archived stays on the server")
        return
    log.info("file.orphan_deleted", inbox=str(job.inbox.path), name=job.name, file_id=file_id)
