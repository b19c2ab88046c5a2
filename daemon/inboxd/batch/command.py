"""The work of `inboxd batch FILE`, `inboxd batches` and `inboxd batch cancel ID` (SPEC §5,
§10), as data; the command line (`inboxd.cli.batch`) renders it.

`run_batch`: the round trip for one file through a ledger, as the daemon does it: the check
(basic; the per-job limits apply per part), the split into parts, every job of every part and
round created once, followed and settled (`rounds.py`), then one set of outbox files
(`outbox.py`, default ``<FILE's folder>/outbox``). Where it is goes to `on_step` (a live status
line on a terminal, counting requests final / total). The ledger lives in
``<state_dir>/ledgers/`` (``daemon.state_dir`` with --config, else ``$XDG_STATE_HOME/inboxd``
or ``~/.local/state/inboxd``) under a name made of the file's sha256 and path, so running the
command again after Ctrl-C, --no-wait or a crash follows the same jobs instead of creating
others; once delivered, running it again makes new jobs.

It ends `BatchDelivered` (every job settled, the outbox written; `completed` when no request
is missing), `BatchCreated` (--no-wait), `BatchInterrupted` (Ctrl-C: the jobs go on) or
`BatchFailure` (the check, the upload, processing, a rejected create, or a usage error).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from .._constants import EXIT_FAILED, EXIT_USAGE
from ..api import ApiError, FilesClient, RejectedError
from ..api._batches import BatchJob
from ..config import BatchConfig, Config
from ..log import register_secret
from ..state.journal import Journal
from .ledger import SUFFIX, Ledger, Limits, ledger_path
from .outbox import deliver_ledger
from .precheck import Checked, check_input
from .rounds import Rounds, cancel_marker, remove_work
from .split import Span, plan_parts
from .store import BatchRecord, BatchStore

if TYPE_CHECKING:
    from ..check import CheckIssue


def state_dir_for(config: Config, from_file: bool, env: dict[str, str] | None = None) -> Path:
    """The daemon's state_dir with --config; else the user's state folder."""
    if from_file:
        return config.daemon.state_dir
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "inboxd"


# --- what run_batch says --------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerProgress:
    """Where a ledger is, shaped as a record for the status line: `batch_id` counts requests
    (final / total), `status` the jobs' statuses, `progress` the share of requests final."""

    batch_id: str
    status: str
    progress: float | None
    stage: str = "following"


@dataclass(frozen=True)
class Step:
    """Where the round trip is: uploading, processing, creating, then following (`record`)."""

    stage: str
    name: str
    bytes: int | None = None
    file_id: str | None = None
    record: BatchRecord | LedgerProgress | None = None
    elapsed: float = 0.0


@dataclass(frozen=True)
class BatchFailure:
    kind: str
    message: str
    subject: str  # the file as given, or the batch id
    details: dict[str, Any] = field(default_factory=dict)  # the JSON error's fields after kind and message
    code: int = EXIT_FAILED
    issues: tuple[CheckIssue, ...] = ()  # the check's errors
    path: Path | None = None  # the file the issues are about (absolute)


@dataclass(frozen=True)
class BatchCreated:
    job: dict[str, Any]  # the first job
    outbox: str | None
    journal: Path  # the ledger
    path: Path
    jobs: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class BatchInterrupted:
    pass


@dataclass(frozen=True)
class Summary:
    batch_id: str  # the jobs' ids
    status: str  # COMPLETED when every request has its final answer, else the last jobs' statuses


@dataclass(frozen=True)
class BatchDelivered:
    record: Summary
    sidecar: Path  # batch.json in the outbox
    data: dict[str, Any]  # its content (inboxd.batch/v2)
    seconds: float
    error: str | None = None  # why requests are missing (the last failed job's error)

    @property
    def completed(self) -> bool:
        return self.data["counts"]["missing"] == 0


BatchOutcome = BatchDelivered | BatchCreated | BatchInterrupted | BatchFailure

def _ledger_file(state_dir: Path, path: Path, sha256: str) -> Path:
    """The ledger of this file's round trip: the one not yet delivered, else a fresh name."""
    folder = state_dir / "ledgers"
    base = f"{sha256[:16]}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    n = 1
    while True:
        candidate = ledger_path(folder / (base if n == 1 else f"{base}.{n}"))
        if not candidate.exists() or Ledger.load(candidate).delivered_at is None:
            return candidate
        n += 1


def _progress(ledger: Ledger) -> LedgerProgress:
    statuses = Counter(j.status or j.stage for j in ledger.last_jobs() if j.stage != "settled")
    total = ledger.input.requests
    final = ledger.final_requests()
    text = ", ".join(f"{n} {s}" if n > 1 else s for s, n in sorted(statuses.items())) or "delivering"
    running = [j.progress for j in ledger.last_jobs() if j.stage == "created" and j.progress is not None]
    progress = sum(running) / len(running) if running else (100.0 * final / total if total else 100.0)
    return LedgerProgress(f"{final}/{total} requests final", text, progress)


def run_batch(config: Config, key: SecretStr, path: Path, *, endpoint: str, model_id: str | None,
              outbox: Path | None, wait: bool, join: bool, poll_seconds: float, completion_window: str,
              priority: int | None, state_dir: Path, on_step: Callable[[Step], None] | None = None,
              **ledger_keys: Any) -> BatchOutcome:
    """The round trip of one file through a ledger; `ledger_keys`: max_requests_per_job,
    max_bytes_per_job, resubmit_rounds, resubmit_codes, max_jobs_in_flight."""
    register_secret(key.get_secret_value())
    run = _Run(path, on_step)
    try:
        bcfg = BatchConfig(endpoint=endpoint, model_id=model_id, outbox=Path(os.path.abspath(outbox)) if outbox
                           else run.path.parent / "outbox", join=join, poll_seconds=poll_seconds,
                           completion_window=completion_window, priority=priority, **ledger_keys)
    except ValueError as exc:
        return run.fail("usage", str(exc).splitlines()[-1] if str(exc) else "bad option", EXIT_USAGE)
    checked = run.check(config, bcfg, state_dir / "ledgers")
    if isinstance(checked, BatchFailure):
        return checked
    client = FilesClient(config.api, config.upload, key)
    try:
        return run.round_trip(client, state_dir, checked, bcfg, wait=wait)
    finally:
        client.close()


class _Run:
    """One `run_batch`: the file as given (`subject`) and as a full path, since when, and who
    hears where it is."""

    def __init__(self, path: Path, on_step: Callable[[Step], None] | None) -> None:
        self.subject = str(path)
        self.path = Path(os.path.abspath(path))
        self.on_step = on_step
        self.t0 = time.time()

    def fail(self, kind: str, message: str, code: int = EXIT_FAILED, *, issues: tuple[CheckIssue, ...] = (),
             **extra: Any) -> BatchFailure:
        details = {"name": self.subject, **{k: v for k, v in extra.items() if v is not None}}
        return BatchFailure(kind, message, self.subject, details, code, issues, self.path if issues else None)

    def step(self, stage: str, **info: Any) -> None:
        if self.on_step is not None:
            self.on_step(Step(stage, self.path.name, elapsed=time.time() - self.t0, **info))

    def check(self, config: Config, bcfg: BatchConfig, work_dir: Path) -> tuple[Checked, list[Span]] | BatchFailure:
        """The basic check (per part when the input is split) and the parts."""
        try:
            parts = plan_parts(self.path, bcfg.max_requests_per_job, int(bcfg.max_bytes_per_job))
            work_dir.mkdir(parents=True, exist_ok=True)
            checked = check_input(self.path, parts, max_line_bytes=config.check.max_line_bytes,
                                  max_errors=config.check.max_errors)
        except OSError as exc:
            return self.fail("unreadable", f"cannot read it: {exc.strerror}")
        if checked.errors:
            first = checked.errors[0]
            return self.fail(first.rule, f"not sent: the basic check failed ({len(checked.errors)} error(s))",
                             issues=checked.errors, line=first.line)
        return checked, parts

    def _rounds(self, client: FilesClient, state_dir: Path, checked: Checked, parts: list[Span],
                bcfg: BatchConfig) -> Rounds:
        """The ledger of this file (an earlier run's, not yet delivered, or a new plan)."""
        lfile = _ledger_file(state_dir, self.path, checked.sha256)
        if lfile.exists():
            ledger = Ledger.load(lfile)
        else:
            lfile.parent.mkdir(parents=True, exist_ok=True)
            limits = Limits(max_requests_per_job=bcfg.max_requests_per_job,
                            max_bytes_per_job=int(bcfg.max_bytes_per_job), resubmit_rounds=bcfg.resubmit_rounds,
                            resubmit_codes=list(bcfg.resubmit_codes))
            ledger = Ledger.plan(self.path, parts, limits, sha256=checked.sha256, dropped_at=self.t0)
            ledger.save(lfile)
        bcfg = bcfg.model_copy(update={"resubmit_rounds": ledger.limits.resubmit_rounds,
                                       "resubmit_codes": ledger.limits.resubmit_codes})
        return Rounds(client, ledger, lfile, lfile.with_name(lfile.name + ".d"), bcfg)

    def round_trip(self, client: FilesClient, state_dir: Path, checked: tuple[Checked, list[Span]],
                   bcfg: BatchConfig, *, wait: bool) -> BatchOutcome:
        """Every job of every part and round, created once, followed, settled; then the outbox."""
        try:
            rounds = self._rounds(client, state_dir, checked[0], checked[1], bcfg)
            if any(j.stage == "planned" for j in rounds.ledger.jobs):
                self.step("uploading", bytes=checked[0].bytes)
            if not wait:
                return self._created(rounds)
            while not rounds.step():
                self.step("following", record=_progress(rounds.ledger))
                time.sleep(bcfg.poll_seconds)
            failed = self._all_rejected(rounds.ledger)
            if failed is not None:
                return failed
            self.step("following", record=_progress(rounds.ledger))
            sidecar, data = deliver_ledger(rounds, Path(bcfg.outbox or self.path.parent / "outbox"), join=bcfg.join)
            remove_work(rounds.work)
        except KeyboardInterrupt:
            return BatchInterrupted()
        except ApiError as exc:
            return self.fail(exc.kind, f"{type(exc).__name__}: {exc}", status=exc.status,
                             validation_report=exc.report if isinstance(exc, RejectedError) else None)
        except OSError as exc:
            return self.fail("os", f"{exc.strerror or exc}: {getattr(exc, 'filename', '')}")
        return self._delivered(rounds.ledger, sidecar, data)

    def _created(self, rounds: Rounds) -> BatchOutcome:
        """--no-wait: the round-1 jobs created (admitted ones), then exit."""
        rounds.step()
        failed = self._all_rejected(rounds.ledger)
        if failed is not None:
            return failed
        jobs = tuple({"id": j.id, "status": j.status, "part": j.part, "round": j.round}
                     for j in rounds.ledger.jobs if j.id)
        if not jobs:
            return self.fail("batch_create", "no job could be created yet; run the command again")
        outbox = str(rounds.cfg.outbox) if rounds.cfg.outbox else None
        return BatchCreated(jobs[0], outbox, rounds.path, self.path, jobs)

    def _all_rejected(self, ledger: Ledger) -> BatchFailure | None:
        """Every job refused by the server and none made: the round trip failed."""
        if ledger.job_ids() or not any(j.rejected for j in ledger.jobs):
            return None
        job = next(j for j in ledger.jobs if j.rejected)
        return self.fail("batch_rejected", job.error or "the server refused the batch", status=job.create_status)

    def _delivered(self, ledger: Ledger, sidecar: Path, data: dict[str, Any]) -> BatchDelivered:
        ids = ", ".join(ledger.job_ids())
        last = list(ledger.last_jobs())
        complete = data["counts"]["missing"] == 0
        status = "COMPLETED" if complete else ", ".join(sorted({j.status or "?" for j in last}))
        error = None if complete else next((j.error for j in reversed(ledger.jobs) if j.error), None)
        return BatchDelivered(Summary(ids, status), sidecar, data, time.time() - self.t0, error)


# --- inboxd batches ---------------------------------------------------------------------------


class NoJournal(Exception):
    """No journal and no ledger in this state_dir: no batch job has been made with it (exit 2)."""


_LEDGER_STAGE = {"planned": "creating", "uploaded": "creating", "creating": "creating", "created": "following",
                 "ended": "following", "settled": "downloading"}


def ledger_records(folder: Path) -> list[BatchRecord]:
    """Every job of the ledgers in `folder`, as rows of `inboxd batches`."""
    rows: list[BatchRecord] = []
    for lfile in sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []:
        try:
            rows += job_rows(lfile, Ledger.load(lfile))
        except (OSError, ValueError):
            continue
    return rows


def job_rows(lfile: Path, ledger: Ledger, rec: BatchRecord | None = None) -> list[BatchRecord]:
    """One row per job of a ledger (`rec`: the daemon's row of the input, whose stage, outbox
    and trouble the rows carry)."""
    rows = []
    # what the outbox counts is the input's: a job's row carries it when the input is that one job
    outputs = rec.outputs if rec is not None and len(ledger.jobs) == 1 else {}
    for j in ledger.jobs:
        stage = "delivered" if ledger.delivered_at else _LEDGER_STAGE[j.stage]
        if rec is not None and rec.stage in ("downloading", "failed") and not ledger.delivered_at:
            stage = rec.stage
        rows.append(BatchRecord(
            claim=f"{lfile}#p{j.part}r{j.round}", inbox=rec.inbox if rec else "", input_file_id=j.input_file_id or "",
            endpoint=rec.endpoint if rec else "", poll_seconds=rec.poll_seconds if rec else 0, stage=stage,
            input_path=ledger.input.path, manifest=ledger.manifest or (rec.manifest if rec else None),
            outbox=ledger.outbox or (rec.outbox if rec else None), stem=ledger.stem, requests=j.requests,
            batch_id=j.id, status=j.status, progress=j.progress,
            error=(rec.error if rec is not None and rec.error else None) or j.error, updated_at=ledger.updated_at,
            ledger=str(lfile), outputs=outputs))
    return rows


def _expand(records: list[BatchRecord]) -> list[BatchRecord]:
    """The daemon's rows, an input followed through its ledger shown job by job."""
    out: list[BatchRecord] = []
    for rec in records:
        if not rec.ledger:
            out.append(rec)
            continue
        try:
            out += job_rows(Path(rec.ledger), Ledger.load(Path(rec.ledger)), rec)
        except (OSError, ValueError):
            out.append(rec)  # not planned yet (or unreadable): the input's row
    return out


def ledger_summaries(files: Iterable[Path]) -> list[dict[str, Any]]:
    """One line per ledger file for the status page: its input, parts, rounds, jobs and how many
    requests have their final answer."""
    out: list[dict[str, Any]] = []
    for lfile in files:
        try:
            ledger = Ledger.load(lfile)
        except (OSError, ValueError):
            continue
        progress = _progress(ledger)
        out.append({"input": ledger.input.path, "parts": len(ledger.parts),
                    "rounds": max((j.round for j in ledger.jobs), default=0), "jobs": len(ledger.jobs),
                    "requests": ledger.input.requests, "final": ledger.final_requests(),
                    "statuses": progress.status, "progress": progress.progress,
                    "delivered": ledger.delivered_at is not None, "outbox": ledger.outbox})
    return out


def list_batches(state_dir: Path) -> tuple[Path, list[BatchRecord]]:
    """The journal's path and every batch job it and the command's ledgers know; NoJournal when
    there is neither."""
    path = state_dir / "journal.sqlite3"
    ledgers = ledger_records(state_dir / "ledgers")
    if not path.exists():
        if ledgers:
            return state_dir / "ledgers", ledgers
        raise NoJournal(f"no journal at {path}: no batch job has been made with this state_dir")
    journal = Journal(state_dir)
    try:
        return path, ledgers + _expand(BatchStore(journal).all())
    finally:
        journal.close()


# --- inboxd batch cancel ID -------------------------------------------------------------------


def _ledger_folders(config: Config) -> list[Path]:
    folders = [state_dir_for(config, False) / "ledgers", config.daemon.state_dir / "ledgers"]
    for inbox in config.inboxes:
        folders += [inbox.work, inbox.done]
    return folders


def mark_cancelled(folders: list[Path], batch_id: str) -> int:
    """Leave the operator's cancel beside every ledger that names the job (so its requests are
    not resent); how many did."""
    n = 0
    for folder in folders:
        for lfile in sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []:
            try:
                named = batch_id in Ledger.load(lfile).job_ids()
            except (OSError, ValueError):
                continue
            if named:
                cancel_marker(lfile, batch_id).touch()
                n += 1
    return n


def cancel_batch(config: Config, key: SecretStr, batch_id: str) -> BatchJob:
    """The job as the server answers the cancel; ApiError when it refuses (a 409 on a job that
    ended). The ledgers naming it hear of it first: a job the operator cancels is not resent."""
    register_secret(key.get_secret_value())
    mark_cancelled(_ledger_folders(config), batch_id)
    client = FilesClient(config.api, config.upload, key)
    try:
        return client.cancel_batch(batch_id)
    finally:
        client.close()
