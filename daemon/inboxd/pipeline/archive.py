"""The last steps of a file: done/ with its manifest, or failed/ with its error sidecar.

Everything needed to write the sidecar is read from the journal row, so a restart that
finds a file already uploaded finishes it the same way. The sidecar is stored in the row
(with the target path) before the data file moves, so a crash between the move and the
sidecar write is finished on the next start (`finish_orphan`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import structlog

from ..batch.ledger import ledger_path
from ..batch.manifest import ledger_section
from ..config import InboxConfig
from ..state import sidecars
from ..state.fs import candidate_names, find_moved, free_name, fsync_dir, move_no_replace, place, same_data
from ..state.journal import Journal, Row, Stage
from ..state.sidecars import ERROR_SUFFIX, MANIFEST_SUFFIX
from .claim import drop_state
from .claim import manifest_path as claim_manifest
from .failure import Failure

log = structlog.get_logger("inboxd.pipeline")


def manifest_from_row(row: Row, inbox: InboxConfig, path: Path | None) -> dict[str, Any]:
    return sidecars.manifest(
        file_object=None if row.method == "split" else row.file_object or {},
        inbox=inbox.path,
        name=row.name,
        path=path,
        size=row.bytes or 0,
        sha256=row.sha256 or "",
        mtime_ns=row.mtime_ns or 0,
        validation=json.loads(row.validation) if row.validation else {"mode": inbox.validate_mode, "passed": True},
        method=row.method or "single",
        parts=row.parts or 0,
        attempts=row.attempts,
        timing=(row.started_at or row.claimed_at, row.finished_at or time.time()),
    )


def archive(journal: Journal, inbox: InboxConfig, row: Row) -> Path:
    """Move (or delete, or keep) an uploaded claimed file and write its manifest; return the manifest path."""
    claim = Path(row.claim)
    done = inbox.done
    done.mkdir(parents=True, exist_ok=True)
    resumed = _resume(row, claim, inbox)
    if resumed is not None:
        target = resumed
    else:
        target = _move(journal, inbox, row, claim, done)
    row = journal.get(row.claim) or row
    manifest_path = target.with_name(target.name + MANIFEST_SUFFIX)
    waiting = claim_manifest(claim)
    journal.publishing(row, manifest_path)  # before done/ says it: a survivor can announce it (events/fleet.py)
    if os.path.lexists(waiting):
        # written into the claim folder before the data moved (SPEC §2): now it follows the data
        os.replace(waiting, manifest_path)
        fsync_dir(manifest_path.parent)
    elif not manifest_path.exists():
        sidecars.write(manifest_path, json.loads(row.sidecar) if row.sidecar else manifest_from_row(row, inbox, target))
    if inbox.on_success == "delete" and os.path.lexists(claim):
        os.unlink(claim)
        fsync_dir(claim.parent)
    drop_state(claim, _data_path(row))
    journal.archived_later(row.claim)  # written with the next commit: done/ already says it
    return manifest_path


def _resume(row: Row, claim: Path, inbox: InboxConfig) -> Path | None:
    """An earlier run reserved a target and may have moved the file: finish that, not a new one."""
    if not (row.target and row.sidecar):
        return None
    target = Path(row.target)
    if inbox.on_success == "delete":
        return target
    data_path = _data_path(row)
    if data_path and same_data(claim, data_path, row.sha256):
        os.unlink(claim)  # moved by a hard link, not yet unlinked
        return target
    return None


def _data_path(row: Row) -> Path | None:
    """Where the reserved manifest says the data goes (None: deleted, or nothing reserved)."""
    path = json.loads(row.sidecar).get("source", {}).get("path") if row.sidecar else None
    return Path(path) if path else None


def _move(journal: Journal, inbox: InboxConfig, row: Row, claim: Path, done: Path) -> Path:
    def reserve(target: Path, data_path: Path | None) -> None:
        sidecar = manifest_from_row(row, inbox, data_path)
        if inbox.batch is not None:  # the poller follows the input's ledger, beside the manifest (SPEC §10)
            sidecar["batch"] = ledger_section(ledger_path(target))
        text = json.dumps(sidecar)
        journal.update(row.claim, target=str(target), sidecar=text)
        if inbox.on_success == "move":
            # a survivor on another host finds it here if we die between the move and the manifest.
            # Its content is fsynced; the claim folder is not: it is published by a rename into
            # done/, which is fsynced then; before that, the journal or the state file finish it
            sidecars.write(claim_manifest(claim), sidecar, sync_folder=False)

    if inbox.on_success == "keep" and row.sha256 and row.bytes is not None and row.mtime_ns is not None:
        original = inbox.path / row.name
        journal.remember_kept(str(original), row.bytes, row.mtime_ns, row.sha256)
        target = done / free_name(done, row.name, MANIFEST_SUFFIX)
        reserve(target, original)
        if _give_back(claim, original, row.sha256):
            fsync_dir(inbox.path)
            return target
        # a new file of that name arrived meanwhile: archive this one in done/ instead
        return place(claim, done, row.name, MANIFEST_SUFFIX, on_reserved=lambda d: reserve(d, d))
    if inbox.on_success == "delete":
        target = done / free_name(done, row.name, MANIFEST_SUFFIX)
        reserve(target, None)
        return target
    moved = find_moved(claim, done, row.name, MANIFEST_SUFFIX, row.sha256) or _archived_as(claim, done, row)
    if moved is not None:
        # a dead owner linked it there and died before the unlink (or, taken for dead while it
        # was not, finished that move and its manifest): that name is the one
        reserve(moved, moved)
        os.unlink(claim)
        return moved
    return place(claim, done, row.name, MANIFEST_SUFFIX, on_reserved=lambda d: reserve(d, d))


def _archived_as(claim: Path, done: Path, row: Row) -> Path | None:
    """The name in done/ under which this same upload (the manifest's file id) and these bytes
    are archived already, with their manifest, by an owner that was taken for dead while it
    was still finishing the move; None in the usual case (the first name is free)."""
    if not row.file_id:
        return None
    for cand in candidate_names(row.name):
        path, side = done / cand, done / (cand + MANIFEST_SUFFIX)
        if not os.path.lexists(path) and not os.path.lexists(side):
            return None
        try:
            file_id = json.loads(side.read_bytes()).get("file", {}).get("id")
        except (OSError, ValueError, AttributeError):
            continue
        if file_id == row.file_id and same_data(claim, path, row.sha256):
            return path
    raise AssertionError("unreachable")


def _give_back(claim: Path, original: Path, sha256: str | None) -> bool:
    try:
        move_no_replace(claim, original)
    except FileExistsError:
        if not same_data(claim, original, sha256):
            return False
        os.unlink(claim)  # given back by a link whose unlink never came
    return True


def fail(journal: Journal, inbox: InboxConfig, row: Row, failure: Failure, *, attempts: int = 0) -> Path:
    """Move a claimed file to failed/ and write `<name>.error.json`; return the sidecar path."""
    claim = Path(row.claim)
    failed = inbox.failed
    now = time.time()

    def reserve(target: Path) -> None:
        sidecar = sidecars.error_sidecar(
            inbox=inbox.path, name=row.name, path=target, stage=failure.stage, kind=failure.file_kind,
            error=failure.error(), validation=failure.validation, size=row.bytes, sha256=row.sha256,
            mtime_ns=row.mtime_ns, attempts=attempts, when=now,
        )
        journal.update(row.claim, target=str(target), sidecar=json.dumps(sidecar), error=json.dumps(sidecar["error"]))

    if row.target and row.sidecar and row.error and same_data(claim, Path(row.target), row.sha256):
        os.unlink(claim)
        target = Path(row.target)
    elif (moved := find_moved(claim, failed, row.name, ERROR_SUFFIX, row.sha256)) is not None:
        reserve(moved)  # a dead owner linked it there and died before the unlink
        os.unlink(claim)
        target = moved
    else:
        target = place(claim, failed, row.name, ERROR_SUFFIX, on_reserved=reserve)
    row = journal.get(row.claim) or row
    sidecar_path = target.with_name(target.name + ERROR_SUFFIX)
    journal.publishing(row, sidecar_path)  # before failed/ says it (events/fleet.py)
    sidecars.write(sidecar_path, json.loads(row.sidecar or "null"))
    drop_state(claim, target)  # a file that failed after its upload was created carries its state
    journal.update(row.claim, stage=Stage.FAILED)
    return sidecar_path


def finish_orphan(journal: Journal, row: Row) -> str:
    """A row whose claimed file is gone: finish its sidecar if the move already happened.

    Returns the stage the row ends in: "archived", "failed", "lost" (row forgotten), or
    "taken" (row forgotten: another host took the claim over and holds the file).
    A reserved target with the claimed file gone means the move (or the delete) happened,
    unless the data is not where the reserved sidecar says: then a host that took our claim
    folder over (it found us dead) finishes the file, under a name of its own.
    """
    if row.target and row.sidecar:
        data = json.loads(row.sidecar).get("source", {}).get("path")
        if data is not None and not os.path.lexists(data):
            journal.forget(row.claim)
            return "taken"
        suffix = ERROR_SUFFIX if row.error else MANIFEST_SUFFIX
        sidecar_path = Path(row.target + suffix)
        if not sidecar_path.exists():
            sidecars.write(sidecar_path, json.loads(row.sidecar))
        stage = Stage.FAILED if row.error else Stage.ARCHIVED
        journal.update(row.claim, stage=stage)
        return stage
    journal.forget(row.claim)
    return "lost"
