"""`inboxd batch FILE --endpoint E [--model-id M] [--outbox DIR] [--join] [--no-wait] [--json]`,
`inboxd batch cancel ID [--json]` and `inboxd batches [--json]` (SPEC §5).

batch FILE: exit 0 delivered and COMPLETED (or created, with --no-wait); 1 the work failed
(the check, the upload, processing, a rejected create, a job that ended FAILED, EXPIRED or
CANCELLED: its outbox is still delivered); 2 usage; 130 interrupted (the job goes on). A
live status line (status, progress, elapsed) on stderr when it is a terminal; with --json
stdout is one JSON object: batch.json, the job (--no-wait), or ``{"error": {...}}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from .._constants import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from ..config import Config
from ._common import Subcommands, add_verbosity, config_and_key, config_of, fail_usage
from .render import StatusLine, elapsed, err, error_json, issue_lines, out, print_json

if TYPE_CHECKING:
    from ..batch.command import BatchOutcome, Step

# --- inboxd batch FILE / inboxd batch cancel ID --------------------------------------------


def cmd_batch(args: argparse.Namespace) -> int:
    from ..batch.command import run_batch, state_dir_for

    target = args.target
    # a usage error: `main` prints it (and with --json, one JSON object)
    if len(target) == 2 and target[0] == "cancel":
        config, key = config_and_key(args)
        return _cancel(config, key, target[1], as_json=args.json)
    if len(target) != 1:
        fail_usage("inboxd batch: expected FILE, or cancel ID")
    if not args.endpoint:
        fail_usage("inboxd batch FILE: --endpoint is required (for example /v1/chat/completions)")
    config, key = config_and_key(args)
    line = StatusLine(sys.stderr.isatty() and not args.json)
    outcome = run_batch(
        config, key, Path(target[0]), endpoint=args.endpoint, model_id=args.model_id,
        outbox=Path(args.outbox) if args.outbox else None, wait=args.wait, join=args.join,
        poll_seconds=args.poll_seconds, completion_window=args.completion_window, priority=args.priority,
        state_dir=state_dir_for(config, bool(args.config)),
        on_step=(lambda step: line.show(_step_text(step))) if line.enabled else None,
        **{k: v for k, v in (("max_requests_per_job", args.max_requests_per_job),
                             ("resubmit_rounds", args.resubmit_rounds),
                             ("max_jobs_in_flight", args.max_jobs_in_flight)) if v is not None})
    line.done()
    return _render(outcome, as_json=args.json)


def _step_text(step: Step) -> str:
    if step.stage == "uploading":
        return f"{step.name}: uploading {step.bytes} bytes"
    if step.stage == "processing":
        return f"{step.name}: {step.file_id} waiting for processing"
    if step.stage == "creating":
        return f"{step.name}: creating the batch"
    rec = step.record
    assert rec is not None
    progress = f"{rec.progress:5.1f}%" if rec.progress is not None else "    -"
    what = "downloading" if rec.stage == "downloading" else (rec.status or "")
    return f"{rec.batch_id}  {what:<11} {progress}  {elapsed(step.elapsed)}"


def _render(outcome: BatchOutcome, *, as_json: bool) -> int:
    from ..batch.command import BatchCreated, BatchFailure, BatchInterrupted

    if isinstance(outcome, BatchFailure):
        if outcome.issues and not as_json:
            for text in issue_lines(outcome.path or outcome.subject, outcome.issues):
                err(text)
        err(f"inboxd batch: {outcome.subject}: {outcome.message}")
        if as_json:
            error_json(outcome.kind, outcome.message, **outcome.details)
        return outcome.code
    if isinstance(outcome, BatchInterrupted):
        err("inboxd batch: interrupted; the job goes on on the server: run the same command again to follow it, "
            "or `inboxd batch cancel ID`")
        return EXIT_INTERRUPTED
    if isinstance(outcome, BatchCreated):
        if as_json:
            print_json({"batch": outcome.job, "outbox": outcome.outbox, "journal": str(outcome.journal)})
        else:
            job = outcome.job
            out(f"{job['id']}  {job.get('status')}  {outcome.path.name}  (not waiting: `inboxd batch "
                  f"{outcome.path}` again follows it to {outcome.outbox})")
        return EXIT_OK
    rec, data = outcome.record, outcome.data
    if as_json:
        print_json(data)
    else:
        c = data["counts"]
        missing = f", {c['missing']} missing" if c.get("missing") else ""
        out(f"{rec.batch_id}  {rec.status}  {c['succeeded']} succeeded, {c['failed']} failed{missing}  "
              f"{outcome.seconds:.1f} s")
        for entry in data["outputs"].values():
            if entry:
                out(f"  {entry['path']}  ({entry['lines']} lines, {entry['bytes']} bytes)")
        out(f"  {outcome.sidecar}")
        if not outcome.completed and outcome.error:
            err(f"inboxd batch: {rec.batch_id} ended {rec.status}: {outcome.error}")
    return EXIT_OK if outcome.completed else EXIT_FAILED


def _cancel(config: Config, key: SecretStr, batch_id: str, *, as_json: bool) -> int:
    from ..api import SAFE_ID, ApiError
    from ..batch.command import cancel_batch

    if not SAFE_ID.fullmatch(batch_id) or len(batch_id) > 256:  # a usage error: nothing is sent
        message = f"{batch_id!r} is not a valid batch id (letters, digits, '.', '_' and '-')"
        if as_json:
            error_json("usage", message)
        err(f"inboxd batch cancel: {message}")
        return EXIT_USAGE
    try:
        job = cancel_batch(config, key, batch_id)
    except ApiError as exc:
        if as_json:
            error_json(exc.kind, str(exc), status=exc.status)
        err(f"inboxd batch cancel: {batch_id}: {exc}")
        return EXIT_FAILED
    if as_json:
        print_json(job.model_dump(mode="json"))
    else:
        out(f"{job.id}  {job.status}")
    return EXIT_OK


# --- inboxd batches -------------------------------------------------------------------------


def cmd_batches(args: argparse.Namespace) -> int:
    from ..batch.command import NoJournal, list_batches, state_dir_for
    from ..batch.manifest import iso

    config = config_of(args)
    try:
        path, records = list_batches(state_dir_for(config, bool(args.config)))
    except NoJournal as exc:
        if args.json:
            error_json("no_journal", str(exc), indent=None)
        err(f"inboxd batches: {exc}")
        return EXIT_USAGE
    if args.json:
        rows = []
        for r in records:
            row = r.to_json()
            for k in ("dropped_at", "uploaded_at", "creating_at", "created_at", "finished_at", "delivered_at",
                      "updated_at"):
                row[k] = iso(row[k])
            rows.append(row)
        print_json({"journal": str(path), "batches": rows})
        return EXIT_OK
    if not records:
        out(f"no batch jobs in {path}")
        return EXIT_OK
    out(f"{'BATCH':<32} {'JOB':<6} {'REQUESTS':>8} {'STATUS':<11} {'PROGRESS':>8}  {'STAGE':<11} {'UPDATED':<20}  "
        "INPUT -> OUTBOX")
    for r in records:
        progress = f"{r.progress:.1f}%" if r.progress is not None else "-"
        where = r.input_path or r.manifest or r.claim
        target = r.path("batch.json") if (r.outbox and r.stem) else r.outbox
        job = r.claim.rsplit("#", 1)[1] if r.ledger and "#" in r.claim else "-"  # p<part>r<round> of a ledger
        out(f"{r.batch_id or '-':<32} {job:<6} {r.requests if r.requests is not None else '-':>8} "
            f"{r.status or '-':<11} {progress:>8}  {r.stage:<11} {iso(r.updated_at) or '-':<20}  {where} -> {target}")
        if r.error and (r.status not in ("COMPLETED",) or r.stage != "delivered"):  # also: an unwritable outbox
            out(f"{'':<32} {r.error}")
    return EXIT_OK


# --- the parser ----------------------------------------------------------------------


def add_batch(sub: Subcommands) -> None:
    p = sub.add_parser("batch", help="the batch round trip for one file (or: batch cancel ID)",
                       usage="%(prog)s FILE --endpoint E [--model-id M] [--outbox DIR] [--join] [--no-wait] "
                             "[--json] [--config PATH]\n       %(prog)s cancel ID [--json] [--config PATH]",
                       description="inboxd batch FILE --endpoint E: upload, create the job, follow it, deliver "
                                   "the results into the outbox. inboxd batch cancel ID: cancel a job.")
    p.add_argument("target", nargs="+", metavar="FILE | cancel ID")
    p.add_argument("--endpoint", help="the API path each request goes to, e.g. /v1/chat/completions")
    p.add_argument("--model-id", help="the model for requests that name none")
    p.add_argument("--outbox", metavar="DIR", help="where results go (default: outbox/ next to FILE)")
    p.add_argument("--join", action="store_true", help="also write <stem>.results.jsonl in input order")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="create the job and exit")
    p.add_argument("--poll-seconds", type=float, default=30.0, metavar="S", help="how often to ask (default 30)")
    p.add_argument("--completion-window", default="24h")
    p.add_argument("--priority", type=int)
    p.add_argument("--max-requests-per-job", type=int, metavar="N",
                   help="split the input into jobs of at most N requests (default 50000)")
    p.add_argument("--resubmit-rounds", type=int, metavar="N",
                   help="rounds that resend transient errors and unanswered requests (default 3; 0 = off)")
    p.add_argument("--max-jobs-in-flight", type=int, metavar="N", help="jobs running at once (default 0: no limit)")
    p.add_argument("--config", metavar="PATH", help="api settings and the journal's state_dir from this file")
    p.add_argument("--json", action="store_true", help="print batch.json (or the job) as one JSON object")
    add_verbosity(p)
    p.set_defaults(func=cmd_batch)


def add_batches(sub: Subcommands) -> None:
    p = sub.add_parser("batches", help="batch jobs known to the journal, with their status")
    p.add_argument("--config", metavar="PATH")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_batches)
