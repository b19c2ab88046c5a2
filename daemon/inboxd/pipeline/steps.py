"""The life of a claimed file as data: one function per step, each taking the run and
returning the next step (or how the run ends), driven by one table.

    INSPECT ─┬─ (journal: uploaded) ──────────────────────────────┐
             ├─ (journal: uploading, a file id) ─ ADOPT ─┬─ adopted ┤
             │                                           └─ orphan ─┤ OPEN
             └─ OPEN ─┬─ (checked before, unchanged) ─ UPLOAD       │
                      └─ CHECK ─ UPLOAD ─ HANDOFF                   │
                                          ARCHIVE ◄─────────────────┘

A batch input's jobs are not created here: once it is archived, the poller follows its
ledger from done/ (`_follow_batch`).

An upload worker hands a file it uploaded to the archive lane (HANDOFF: the move to done/
and the manifest are disk work that would hold an upload slot); an archiver runs ARCHIVE.
A failure is raised, never returned: `process.handle` turns it into an outcome.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

import structlog

from ..batch.orphans import record_fields
from ..state.journal import Stage
from ..watch.scan import file_kind
from . import upload
from .archive import archive as archive_file
from .context import Context, FileRun, Outcome
from .failure import Failure

log = structlog.get_logger("inboxd.pipeline")


class Step(StrEnum):
    INSPECT = "inspect"
    ADOPT = "adopt"
    OPEN = "open"
    CHECK = "check"
    UPLOAD = "upload"
    HANDOFF = "handoff"
    ARCHIVE = "archive"


def inspect(run: FileRun, ctx: Context) -> Step:
    """What the claimed path is, and where the journal says this file got to."""
    st = os.lstat(run.job.claim)
    kind = file_kind(st.st_mode)
    if kind != "regular":
        raise Failure("inspect", "not_a_regular_file",
                      f"a {kind} matching the inbox patterns is never opened or followed", file_kind=kind)
    run.st = st
    if run.row.stage == Stage.UPLOADED:
        return Step.ARCHIVE
    if run.row.stage == Stage.UPLOADING and run.row.file_id:
        return Step.ADOPT
    return Step.OPEN


def adopt(run: FileRun, ctx: Context) -> Step:
    assert run.st is not None
    return Step.ARCHIVE if upload.adopt(run, run.st) else Step.OPEN


def open_file(run: FileRun, ctx: Context) -> Step:
    """Open without following a link or blocking on a FIFO; the checks and the upload read this handle."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(run.job.claim, flags)
    except PermissionError as exc:  # the file's own permissions: retrying will not help
        raise Failure("inspect", "unreadable", f"inboxd may not read the file: {exc.strerror}") from None
    run.f = run.files.enter_context(os.fdopen(fd, "rb"))
    run.st = os.fstat(run.f.fileno())
    if file_kind(run.st.st_mode) != "regular":
        raise Failure("inspect", "not_a_regular_file", "not a regular file", file_kind=file_kind(run.st.st_mode))
    return Step.UPLOAD if upload.still_checked(run.row, run.st) else Step.CHECK


def check(run: FileRun, ctx: Context) -> Step:
    assert run.f is not None and run.st is not None
    run.checked = upload.check(run, run.f, run.st)
    _bug_hook(ctx, Step.CHECK)
    return Step.UPLOAD


def send(run: FileRun, ctx: Context) -> Step:
    assert run.f is not None and run.st is not None
    parts = upload.split_in_parts(run)
    if parts:
        upload.record_split(run, run.f, run.st, parts)  # its ledger uploads the parts, after the archive
    else:
        upload.upload(run, run.f, run.st)
    run.files.close()
    _bug_hook(ctx, Step.UPLOAD)
    return Step.ARCHIVE if run.job.archive else Step.HANDOFF


def handoff(run: FileRun, ctx: Context) -> Outcome:
    """Uploaded and journaled: an archiver moves it to done/ while this worker uploads the next."""
    run.job.archive = True
    ctx.queue.put(run.job)
    return Outcome.UPLOADED


def archive(run: FileRun, ctx: Context) -> Outcome:
    run.hb.beat("archive")
    _bug_hook(ctx, Step.ARCHIVE)
    job = run.job
    row = run.refresh()
    # a claimed file gone after its target was reserved was moved already: FileNotFoundError
    # finishes it from the journal (`finish_orphan`), never under a second name
    os.lstat(job.claim)
    manifest_path = archive_file(run.journal, job.inbox, row)
    _follow_batch(run, ctx, manifest_path)
    # the one info line of a file that went well (the stage lines are at debug): all of it here
    validation = json.loads(row.validation) if row.validation else {}
    log.info("file.archived", **run.fields(manifest=str(manifest_path), recovered=job.recovered,
                                           on_success=job.inbox.on_success, method=row.method, parts=row.parts,
                                           attempt=max(1, row.attempts), records=validation.get("records"),
                                           seconds=round(time.time() - job.seen_at, 3)))
    return Outcome.ARCHIVED


def _follow_batch(run: FileRun, ctx: Context, manifest: Path) -> None:
    """The input is archived: the poller follows its ledger (beside the manifest) to the outbox."""
    inbox = run.job.inbox
    if inbox.batch is None or ctx.batches is None:
        return
    data = json.loads(manifest.read_text(encoding="utf-8"))
    if not isinstance(data.get("batch"), dict) or not data["batch"].get("ledger"):
        return  # archived before the inbox had [inboxes.batch] (a recovery after a SIGHUP)
    fields = record_fields(inbox, manifest, data)
    rec = ctx.batches.begin(run.row.claim, dropped_at=run.job.seen_at, uploaded_at=run.row.finished_at,
                            **{k: v for k, v in fields.items()})
    if ctx.poller is not None:
        ctx.poller.follow(rec)


def _bug_hook(ctx: Context, step: Step) -> None:
    if ctx.inject_bug == step:
        raise RuntimeError(f"injected bug at {step} (INBOXD_INJECT_BUG)")


STEPS: dict[Step, Callable[[FileRun, Context], Step | Outcome]] = {
    Step.INSPECT: inspect,
    Step.ADOPT: adopt,
    Step.OPEN: open_file,
    Step.CHECK: check,
    Step.UPLOAD: send,
    Step.HANDOFF: handoff,
    Step.ARCHIVE: archive,
}


def drive(run: FileRun, ctx: Context, first: Step) -> Outcome:
    """Run the steps from `first` until one says how the run ends."""
    step: Step | Outcome = first
    try:
        while isinstance(step, Step):
            step = STEPS[step](run, ctx)
    finally:
        run.files.close()
    return step
