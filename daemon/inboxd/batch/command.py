"""The work of `inboxd batch FILE`, `inboxd batches` and `inboxd batch cancel ID` (SPEC §5,
issue 12), as data; the command line (`inboxd.cli.batch`) renders it.

`run_batch`: the round trip for one file, through the same pieces as the daemon: the check
(basic), `FilesClient.upload`, the wait for processing, `create_once`, one `Poller`, the
outbox (default ``<FILE's folder>/outbox``). Where it is goes to `on_step` (a live status
line on a terminal). The job is journaled (``daemon.state_dir`` with --config, else
``$XDG_STATE_HOME/inboxd`` or ``~/.local/state/inboxd``) under a key made of the file's path
and sha256, so running the command again after Ctrl-C, --no-wait or a crash follows the same
job instead of creating another; once delivered, running it again makes a new job.

It ends `BatchDelivered` (the job ended: COMPLETED, or FAILED, EXPIRED or CANCELLED with its
outbox still delivered), `BatchCreated` (--no-wait), `BatchInterrupted` (Ctrl-C: the job
goes on) or `BatchFailure` (the check, the upload, processing, a rejected create, a job that
could not be followed, or a usage error).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
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
from .create import create_once
from .poller import Poller
from .store import FINISHED_STAGES, BatchRecord, BatchStore

if TYPE_CHECKING:
    from ..check import CheckIssue, CheckReport


def state_dir_for(config: Config, from_file: bool, env: dict[str, str] | None = None) -> Path:
    """The daemon's state_dir with --config; else the user's state folder."""
    if from_file:
        return config.daemon.state_dir
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "inboxd"


# --- what run_batch says --------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """Where the round trip is: uploading, processing, creating, then following (`record`)."""

    stage: str
    name: str
    bytes: int | None = None
    file_id: str | None = None
    record: BatchRecord | None = None
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
    job: dict[str, Any]
    outbox: str | None
    journal: Path
    path: Path


@dataclass(frozen=True)
class BatchInterrupted:
    pass


@dataclass(frozen=True)
class BatchDelivered:
    record: BatchRecord
    sidecar: Path  # batch.json in the outbox
    data: dict[str, Any]  # its content
    seconds: float

    @property
    def completed(self) -> bool:
        return self.record.status == "COMPLETED"


BatchOutcome = BatchDelivered | BatchCreated | BatchInterrupted | BatchFailure


def _key(path: Path, sha256: str, store: BatchStore) -> tuple[str, BatchRecord | None]:
    """The journal key of this file's job: the one not yet delivered, else a fresh one."""
    base = f"cli:{path}:{sha256}"
    n = 1
    while True:
        key = base if n == 1 else f"{base}#{n}"
        rec = store.get(key)
        if rec is None or rec.stage not in FINISHED_STAGES:
            return key, rec
        n += 1


def run_batch(config: Config, key: SecretStr, path: Path, *, endpoint: str, model_id: str | None,
              outbox: Path | None, wait: bool, join: bool, poll_seconds: float, completion_window: str,
              priority: int | None, state_dir: Path, on_step: Callable[[Step], None] | None = None) -> BatchOutcome:
    register_secret(key.get_secret_value())
    run = _Run(path, on_step)
    try:
        bcfg = BatchConfig(endpoint=endpoint, model_id=model_id, outbox=Path(os.path.abspath(outbox)) if outbox
                           else run.path.parent / "outbox", join=join, poll_seconds=poll_seconds,
                           completion_window=completion_window, priority=priority)
    except ValueError as exc:
        return run.fail("usage", str(exc).splitlines()[-1] if str(exc) else "bad option", EXIT_USAGE)
    report = run.check(config)
    if isinstance(report, BatchFailure):
        return report
    try:
        journal = Journal(state_dir)
    except OSError as exc:
        return run.fail("usage", f"cannot open the journal in {state_dir}: {exc.strerror}", EXIT_USAGE)
    client = FilesClient(config.api, config.upload, key)
    try:
        return run.round_trip(client, BatchStore(journal), report, bcfg, wait=wait, journal=journal.path)
    finally:
        client.close()
        journal.close()


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

    def check(self, config: Config) -> CheckReport | BatchFailure:
        from ..check import check_file

        try:
            report = check_file(self.path, "batch-api", "basic", name=self.path.name,
                                max_line_bytes=config.check.max_line_bytes, max_errors=config.check.max_errors)
        except OSError as exc:
            return self.fail("unreadable", f"cannot read it: {exc.strerror}")
        if not report.passed:
            first = report.errors[0]
            return self.fail(first.rule, f"not sent: the basic check failed ({len(report.errors)} error(s))",
                             issues=tuple(report.errors), line=first.line)
        return report

    def round_trip(self, client: FilesClient, store: BatchStore, report: CheckReport, bcfg: BatchConfig, *,
                   wait: bool, journal: Path) -> BatchOutcome:
        """Upload (unless an earlier run did), create once, then follow the job to its outbox."""
        poller: Poller | None = None
        try:
            claim, rec = _key(self.path, report.sha256, store)
            if rec is None:
                self.step("uploading", bytes=report.bytes)
                result = client.upload(self.path, "batch-api", sha256=report.sha256, expected_size=report.bytes)
                self.step("processing", file_id=result.file.id)
                file_id = client.wait_for_processing(result.file.id).id
                uploaded_at: float | None = time.time()
            else:
                file_id, uploaded_at = rec.input_file_id, rec.uploaded_at
            self.step("creating")
            job = create_once(client, store, claim, file_id, bcfg, inbox=self.path.parent, outbox=bcfg.outbox,
                              input_sha256=report.sha256, dropped_at=self.t0, uploaded_at=uploaded_at,
                              requests=report.records, input_path=self.path)
            rec = store.attach(claim, manifest=None, input_path=self.path, requests=report.records)
            if rec.stage == "following":  # this run's choices for a job an earlier run created (--no-wait, Ctrl-C)
                rec = store.update(claim, poll_seconds=bcfg.poll_seconds, join=bcfg.join)
            if not wait:
                return BatchCreated(job, rec.outbox, journal, self.path)
            poller = Poller(lambda: client, store)
            poller.start()
            poller.follow(claim)
            rec = self._follow(store, claim)
        except KeyboardInterrupt:
            return BatchInterrupted()
        except ApiError as exc:
            return self.fail(exc.kind, f"{type(exc).__name__}: {exc}", status=exc.status,
                             validation_report=exc.report if isinstance(exc, RejectedError) else None)
        except OSError as exc:
            return self.fail("os", f"{exc.strerror or exc}: {getattr(exc, 'filename', '')}")
        finally:
            if poller is not None:
                poller.stop()
        if rec.stage == "failed":
            return BatchFailure("batch_lost", rec.error or "the job could not be followed", str(rec.batch_id),
                                {"batch_id": rec.batch_id})
        sidecar = rec.path("batch.json")
        return BatchDelivered(rec, sidecar, json.loads(sidecar.read_text()), time.time() - self.t0)

    def _follow(self, store: BatchStore, claim: str) -> BatchRecord:
        """Until the poller has finished the job (delivered, or lost)."""
        while True:
            rec = store.get(claim)
            assert rec is not None
            if rec.stage in FINISHED_STAGES:
                return rec
            self.step("following", record=rec)
            time.sleep(0.2 if self.on_step is not None else 0.1)


# --- inboxd batches ---------------------------------------------------------------------------


class NoJournal(Exception):
    """No journal in this state_dir: no batch job has been made with it (exit 2)."""


def list_batches(state_dir: Path) -> tuple[Path, list[BatchRecord]]:
    """The journal's path and every batch job it knows; NoJournal when there is none."""
    path = state_dir / "journal.sqlite3"
    if not path.exists():
        raise NoJournal(f"no journal at {path}: no batch job has been made with this state_dir")
    journal = Journal(state_dir)
    try:
        return path, BatchStore(journal).all()
    finally:
        journal.close()


# --- inboxd batch cancel ID -------------------------------------------------------------------


def cancel_batch(config: Config, key: SecretStr, batch_id: str) -> BatchJob:
    """The job as the server answers the cancel; ApiError when it refuses (a 409 on a job that ended)."""
    register_secret(key.get_secret_value())
    client = FilesClient(config.api, config.upload, key)
    try:
        return client.cancel_batch(batch_id)
    finally:
        client.close()
