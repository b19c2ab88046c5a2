"""Deliver a settled ledger into its outbox: one set of files per input (SPEC §10), v2.

    <outbox>/<stem>.output.jsonl   final answers only, each job's lines in the server's order
    <outbox>/<stem>.errors.jsonl   final failures only (absent when there is none)
    <outbox>/<stem>.results.jsonl  with join: one line per input line, in input order
    <outbox>/<stem>.batch.json     LAST, `inboxd.batch/v2`, through `sidecar.publish`

The stem is chosen (no outbox name nor temporary name of it exists yet) and saved in the ledger
before the first file is written, so a restart writes the same names. The data files are
merged into ``.<stem>.<kind>.part`` (derived from local files only: redone from scratch after a
crash), fsynced, and renamed without replacing; a final name already in place is kept.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..state.fs import fsync_dir, move_no_replace
from .answers import ERRORS, OUTPUT
from .deliver import KINDS, SIDECAR, free_stem
from .download import hash_file
from .ledger import Ledger, LedgerJob
from .manifest import iso
from .merge import JobFiles, Merged, merge
from .rounds import Rounds
from .sidecar import BatchV2, OnPublish, publish
from .store import stem_of


def _job_info(job: LedgerJob) -> dict[str, Any]:
    return {"id": job.id, "part": job.part, "round": job.round, "status": job.status, "requests": job.requests,
            "input_file_id": job.input_file_id, "output_file_id": job.output_file_id,
            "error_file_id": job.error_file_id, "created_at": job.created_at, "completed_at": job.completed_at,
            "error": job.error}


def sidecar_v2(ledger: Ledger, merged: Merged, outputs: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """The batch.json of a delivered ledger."""
    created = [j.created_at for j in ledger.jobs if j.created_at]
    data = BatchV2.model_validate({
        "schema": "inboxd.batch/v2",
        "input": {"manifest": ledger.manifest, "path": ledger.input.path, "sha256": ledger.input.sha256,
                  "requests": ledger.input.requests, "bytes": ledger.input.bytes},
        "jobs": [_job_info(j) for j in ledger.jobs if j.id or j.rejected],
        "outputs": {kind: outputs.get(kind) for kind in KINDS},
        "counts": {"succeeded": merged.counts.succeeded, "failed": merged.counts.failed,
                   "missing": merged.counts.missing or 0},
        "errors_by_code": merged.errors_by_code,
        "usage": merged.usage,
        "rounds": ledger.rounds,
        "timing": {"dropped_at": iso(ledger.dropped_at), "uploaded_at": iso(ledger.uploaded_at),
                   "first_created_at": min(created) if created else None, "finished_at": iso(ledger.finished_at),
                   "delivered_at": iso(ledger.delivered_at)},
        "host": socket.gethostname(),
        "inboxd_version": __version__,
    })
    return data.to_json()


def _place(tmp: Path, final: Path, cancel: threading.Event | None) -> dict[str, Any] | None:
    """Rename a merged file into place (kept if a run before a crash placed it); its entry."""
    if os.path.lexists(final):
        tmp.unlink(missing_ok=True)
    elif tmp.stat().st_size == 0 and final.name.endswith(".errors.jsonl"):
        tmp.unlink()
        return None
    else:
        move_no_replace(tmp, final)
    meta = hash_file(final, cancel)
    return {"path": meta["path"], "bytes": meta["bytes"], "sha256": meta["sha256"], "lines": meta["lines"]}


def deliver_ledger(rounds: Rounds, outbox: Path, *, join: bool, on_publish: OnPublish | None = None,
                   cancel: threading.Event | None = None) -> tuple[Path, dict[str, Any]]:
    """Write the outbox of a settled ledger; (the batch.json path, its content)."""
    ledger = rounds.ledger
    outbox.mkdir(parents=True, exist_ok=True)
    if ledger.stem is None:
        ledger.stem = free_stem(outbox, stem_of(Path(ledger.input.path).name))
        ledger.outbox = str(outbox)
        rounds.save()
    stem = ledger.stem
    sidecar = outbox / f"{stem}.{SIDECAR}"
    if sidecar.exists():  # published before a crash: never written twice
        return sidecar, json.loads(sidecar.read_text(encoding="utf-8"))
    jobs = []
    for j in ledger.jobs:
        if j.id:
            files = rounds.answers(j)
            jobs.append(JobFiles(j.id, j.round, files[OUTPUT], files[ERRORS]))
    kinds = [k for k in KINDS if k != "results" or join]
    tmps = {k: outbox / f".{stem}.{KINDS[k]}.part" for k in kinds}
    rounds.work.mkdir(parents=True, exist_ok=True)  # the merge's index: never in the outbox (a kill leaves it)
    merged = merge(jobs, Path(ledger.input.path), ledger.input.requests, tmps, work_dir=rounds.work, cancel=cancel)
    outputs = {k: _place(tmps[k], outbox / f"{stem}.{KINDS[k]}", cancel) for k in kinds}
    fsync_dir(outbox)
    ledger.delivered_at = ledger.delivered_at or time.time()
    data = sidecar_v2(ledger, merged, outputs)
    publish(sidecar, data, on_publish)
    rounds.save()
    return sidecar, data
