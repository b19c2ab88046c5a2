"""Deliver a finished job into its outbox (SPEC §10), exactly once, across kill -9 at any moment.

    <outbox>/<stem>.output.jsonl   the job's output file, as the server sent it
    <outbox>/<stem>.errors.jsonl   the job's error file, when there is one
    <outbox>/<stem>.results.jsonl  with join: one line per input line, in input order
    <outbox>/<stem>.batch.json     LAST, atomically: the signal that all above is complete

The steps, and what a restart finds after each:

1. stage ``downloading`` with the stem, chosen so that none of the four names nor their
   temporary names exist yet (nothing in the outbox is ever overwritten; a second ``x`` gets
   ``x.2``). Journaled in one update.
2. per data file: download into ``.<stem>.<kind>.part`` (a restart resumes it with Range),
   fsync; journal its bytes/sha256/lines (`outputs`); rename without replacing to the final
   name. A restart that finds the final name (and `outputs` says so) does not download again.
3. join (derived from local files only: redone from scratch if interrupted), same rename.
4. ``<stem>.batch.json`` atomically; then stage ``delivered``.

Two processes following one journal (the daemon, and ``inboxd batch --config``) never deliver
one job at the same time: delivery holds an ``flock`` on ``.<stem>.lock`` in the outbox.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from .. import __version__
from ..schemas import BATCH
from ..state.fs import fsync_dir, move_no_replace
from .download import download, hash_file
from .join import ERRORS, OUTPUT, Counts, count_answers, join_results
from .manifest import iso, update_manifest
from .sidecar import publish
from .store import BatchRecord, BatchStore

log = structlog.get_logger("inboxd.batch")

KINDS = {"output": "output.jsonl", "errors": "errors.jsonl", "results": "results.jsonl"}
SIDECAR = "batch.json"
UNDELIVERABLE = "undeliverable: "  # the poller's prefix of a record's error while its outbox cannot be written
Emit = Callable[..., None]


class Busy(Exception):
    """Another process is delivering this job right now."""


def _names(stem: str) -> list[str]:
    out = [f"{stem}.{suffix}" for suffix in (*KINDS.values(), SIDECAR)]
    return out + [f".{n}.part" for n in out]


def free_stem(outbox: Path, stem: str) -> str:
    """`stem`, or stem.2, stem.3 ... : the first for which no outbox name exists yet."""
    n = 1
    while True:
        cand = stem if n == 1 else f"{stem}.{n}"
        if not any(os.path.lexists(outbox / name) for name in _names(cand)):
            return cand
        n += 1


def _tmp(rec: BatchRecord, kind: str) -> Path:
    return Path(rec.outbox or ".") / f".{rec.stem}.{KINDS[kind]}.part"


def _count_requests(rec: BatchRecord) -> int | None:
    if rec.requests is not None:
        return rec.requests
    if rec.input_path and os.path.isfile(rec.input_path):
        n = 0
        with open(rec.input_path, "rb") as f:
            for raw in f:
                if raw.strip():
                    n += 1
        return n
    if rec.manifest:
        try:
            m = json.loads(Path(rec.manifest).read_text())
            return (m.get("validation") or {}).get("records") or (m.get("file") or {}).get("line_count")
        except (OSError, ValueError):
            return None
    return None


class _Lock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise Busy(str(path)) from None

    def release(self, unlink: bool) -> None:
        if unlink:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self.fd)


def begin_delivery(store: BatchStore, rec: BatchRecord) -> BatchRecord:
    """Stage `downloading`, with a stem no outbox name uses yet (journaled together)."""
    if rec.error and rec.error.startswith(UNDELIVERABLE):  # the poller's note of an earlier try
        job_error = (rec.job or {}).get("error")
        rec = store.update(rec.claim, error=job_error if isinstance(job_error, str) else None)
    if rec.stage == "downloading":
        return rec
    outbox = Path(rec.outbox or "")
    outbox.mkdir(parents=True, exist_ok=True)
    stem = free_stem(outbox, rec.stem or rec.batch_id or "batch")
    return store.update(rec.claim, stage="downloading", stem=stem, finished_at=rec.finished_at or time.time())


def deliver(client: Any, store: BatchStore, rec: BatchRecord, *, cancel: threading.Event | None = None,
            emit: Emit | None = None) -> BatchRecord:
    """Write the outbox of a terminal job; return the record at stage `delivered`."""
    rec = begin_delivery(store, rec)
    outbox = Path(rec.outbox or "")
    outbox.mkdir(parents=True, exist_ok=True)
    lock = _Lock(outbox / f".{rec.stem}.lock")
    delivered = False
    try:
        fresh = store.get(rec.claim)  # another process may have finished it while we waited
        if fresh is None or fresh.stage == "delivered":
            delivered = True
            return fresh or rec
        rec = fresh
        rec = _deliver_locked(client, store, rec, cancel, emit or (lambda *a, **k: None))
        delivered = True
        return rec
    finally:
        lock.release(unlink=delivered)


def _fetch(client: Any, store: BatchStore, rec: BatchRecord, kind: str, file_id: str,
           cancel: threading.Event | None, emit: Emit) -> BatchRecord:
    final = rec.path(KINDS[kind])
    tmp = _tmp(rec, kind)
    meta = rec.outputs.get(kind)
    if meta is not None and os.path.lexists(final):
        if os.path.lexists(tmp):  # killed between the link and the unlink of the rename
            os.unlink(tmp)
        return rec  # renamed before the restart: never downloaded again
    if meta is None or not os.path.exists(tmp):
        cuts: list[int] = []

        def on_cut(offset: int, why: str) -> None:
            cuts.append(offset)
            emit("batch.download", claim=rec.claim, batch_id=rec.batch_id, kind=kind, file_id=file_id,
                 outcome="cut", bytes=offset, reason=why)
            log.warning("batch.download_cut", claim=rec.claim, input=rec.input_path or rec.claim,
                        batch_id=rec.batch_id, kind=kind, file_id=file_id, at=offset, reason=why)

        try:
            got = download(client, file_id, tmp, cancel=cancel, on_cut=on_cut)
        except Exception as exc:
            if type(exc).__name__ != "Cancelled":
                emit("batch.download", claim=rec.claim, batch_id=rec.batch_id, kind=kind, file_id=file_id,
                     outcome="failed", error=str(exc))
            raise
        outcome = "resumed" if (got.resumes or got.resumed_from) else "ok"
        emit("batch.download", claim=rec.claim, batch_id=rec.batch_id, kind=kind, file_id=file_id, outcome=outcome,
             bytes=got.bytes, seconds=round(got.seconds, 3), resumes=got.resumes, resumed_from=got.resumed_from)
        log.info("batch.downloaded", claim=rec.claim, input=rec.input_path or rec.claim, batch_id=rec.batch_id,
                 kind=kind, file_id=file_id, bytes=got.bytes, sha256=got.sha256, lines=got.lines, resumes=got.resumes,
                 resumed_from=got.resumed_from, seconds=round(got.seconds, 3))
        meta = got.meta(final)
        rec = store.update(rec.claim, outputs={**rec.outputs, kind: meta})  # before the rename
    move_no_replace(tmp, final)
    fsync_dir(final.parent)
    return rec


def _deliver_locked(client: Any, store: BatchStore, rec: BatchRecord, cancel: threading.Event | None,
                    emit: Emit) -> BatchRecord:
    outbox = Path(rec.outbox or "")
    sidecar = rec.path(SIDECAR)
    if not os.path.exists(sidecar):
        for kind, fid in (("output", rec.output_file_id), ("errors", rec.error_file_id)):
            if fid:
                rec = _fetch(client, store, rec, kind, fid, cancel, emit)
        answers = {OUTPUT: rec.path(KINDS["output"]) if rec.output_file_id else None,
                   ERRORS: rec.path(KINDS["errors"]) if rec.error_file_id else None}
        requests = _count_requests(rec)
        have_input = bool(rec.input_path) and os.path.isfile(rec.input_path or "")
        counts: Counts
        if rec.join and have_input:
            final = rec.path(KINDS["results"])
            if rec.outputs.get("results") is not None and os.path.lexists(final):
                counts = Counts(**rec.outputs["results"]["counts"])
            else:
                tmp = _tmp(rec, "results")
                counts = join_results(Path(rec.input_path or ""), answers, tmp, work_dir=outbox, cancel=cancel)
                meta = {**hash_file(tmp, cancel), "path": str(final), "counts": counts.to_json()}
                rec = store.update(rec.claim, outputs={**rec.outputs, "results": meta})
                move_no_replace(tmp, final)
                fsync_dir(outbox)
        else:
            out_c = count_answers(answers[OUTPUT], OUTPUT, cancel)
            err_c = count_answers(answers[ERRORS], ERRORS, cancel)
            counts = Counts(succeeded=out_c.succeeded, failed=out_c.failed + err_c.failed)
            counts.missing = max(0, requests - counts.succeeded - counts.failed) if requests is not None else None
        # every data file is complete and in place: the signal goes last
        rec = store.update(rec.claim, delivered_at=rec.delivered_at or time.time())
        data = batch_sidecar(rec, counts, requests)
        publish(sidecar, data)
    else:
        data = json.loads(sidecar.read_text())
        counts = Counts(**data.get("counts", {}))
    now = time.time()
    rec = store.update(rec.claim, stage="delivered", delivered_at=rec.delivered_at or now)
    update_manifest(rec, delivered=str(sidecar))
    since = rec.dropped_at or rec.uploaded_at or rec.creating_at
    seconds = round(now - since, 3) if since else None
    emit("batch.delivered", claim=rec.claim, inbox=rec.inbox, batch_id=rec.batch_id, status=rec.status,
         seconds=seconds, path=str(sidecar), **counts.to_json())
    log.info("batch.delivered", claim=rec.claim, input=rec.input_path or rec.claim, inbox=rec.inbox,
             batch_id=rec.batch_id, status=rec.status, seconds=seconds, sidecar=str(sidecar), **counts.to_json())
    return rec


def _output_entry(rec: BatchRecord, kind: str) -> dict[str, Any] | None:
    meta = rec.outputs.get(kind)
    if meta is None:
        return None
    return {"path": meta["path"], "bytes": meta["bytes"], "sha256": meta["sha256"], "lines": meta["lines"]}


def batch_sidecar(rec: BatchRecord, counts: Counts, requests: int | None) -> dict[str, Any]:
    """`<stem>.batch.json` (`inboxd.batch/v1`)."""
    job = rec.job or {}
    error = job.get("error") or (rec.error if rec.status in ("FAILED", "EXPIRED", "CANCELLED") else None)
    return {
        "schema": BATCH,
        "batch": {
            "id": rec.batch_id,
            "status": rec.status,
            "endpoint": job.get("endpoint") or rec.endpoint,
            "model_id": job.get("model_id") or rec.model_id,
            "input_file_id": rec.input_file_id,
            "output_file_id": rec.output_file_id,
            "error_file_id": rec.error_file_id,
            "progress": rec.progress,
            "created_at": job.get("created_at"),
            "completed_at": job.get("completed_at"),
            "error": error if error else None,
        },
        "input": {
            "manifest": rec.manifest,
            "path": rec.input_path,
            "sha256": rec.input_sha256,
            "requests": requests,
        },
        "outputs": {kind: _output_entry(rec, kind) for kind in KINDS},
        "counts": counts.to_json(),
        "timing": {
            "dropped_at": iso(rec.dropped_at),
            "uploaded_at": iso(rec.uploaded_at),
            "created_at": iso(rec.created_at),
            "finished_at": iso(rec.finished_at),
            "delivered_at": iso(rec.delivered_at or time.time()),
        },
        "host": socket.gethostname(),
        "inboxd_version": __version__,
    }
