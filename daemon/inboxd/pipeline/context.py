"""What the workers share (`Context`), one file's run through the steps (`FileRun`), and
how a run ends (`Outcome`)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, BinaryIO

from ..api import Client
from ..batch import BatchStore, Poller
from ..config import Config
from ..state.journal import Journal, Row
from .work import Heartbeat, Job, WorkQueue


class Outcome(StrEnum):
    """How one run of a job ended (the values are the counters' names)."""

    ARCHIVED = "archived"  # in done/ with its manifest
    FAILED = "failed"  # in failed/ with its error sidecar
    UPLOADED = "uploaded"  # uploaded and journaled: handed to the archive lane
    RETRY = "retried"  # stays claimed; queued again after a delay
    PAUSED = "paused"  # the key was rejected: stays claimed, queued, no attempt counted
    CANCELLED = "cancelled"  # shutdown: stays claimed for the next start
    LOST = "lost"  # the claimed file vanished before anything was archived


@dataclass
class Context:
    """What the workers share. A reload replaces `client` and `config`; a run takes both once
    at its start (`FileRun`), so one file is never handled with two configurations."""

    config: Config
    client: Client
    journal: Journal
    queue: WorkQueue
    cancel: threading.Event
    on_auth_rejected: Callable[[BaseException], None]
    observe: Callable[[str, Job], None] | None = None  # for metrics
    batches: BatchStore | None = None  # the batch round trip (inboxes with [inboxes.batch])
    syncer: Executor | None = None  # fsyncs the claim's state while the upload goes on (else done in line)
    poller: Poller | None = None
    inject_bug: str = ""  # tests only: a step at which a plain exception is raised (INBOXD_INJECT_BUG)
    counters: dict[str, int] = field(default_factory=lambda: {"archived": 0, "failed": 0, "retried": 0})
    by_inbox: dict[str, dict[str, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, outcome: Outcome, job: Job) -> None:
        """Count an outcome where it happens (all of them: `status` and metrics read these)."""
        with self.lock:
            self.counters[outcome.value] = self.counters.get(outcome.value, 0) + 1
            per = self.by_inbox.setdefault(job.key, {})
            per[outcome.value] = per.get(outcome.value, 0) + 1
        if self.observe is not None and outcome in (Outcome.ARCHIVED, Outcome.FAILED):
            self.observe(outcome.value, job)


@dataclass
class FileRun:
    """One job's run through the steps: the job, its journal row as last written, and what the
    steps hand on (the open file, its stat, the check's fields not yet journaled)."""

    job: Job
    hb: Heartbeat
    config: Config
    client: Client
    journal: Journal
    row: Row
    cancel: threading.Event
    syncer: Executor | None = None
    f: BinaryIO | None = None
    st: os.stat_result | None = None
    checked: dict[str, Any] = field(default_factory=dict)  # the check's fields, journaled with the upload
    files: ExitStack = field(default_factory=ExitStack)

    @classmethod
    def start(cls, ctx: Context, job: Job, hb: Heartbeat) -> FileRun:
        row = ctx.journal.get(str(job.claim))
        if row is None:
            ctx.journal.claimed(str(job.claim), str(job.inbox.path), job.name)
            row = ctx.journal.get(str(job.claim))
        if row is None:
            raise sqlite3.OperationalError(f"the journal lost the row of {job.claim}")  # transient: retried
        return cls(job=job, hb=hb, config=ctx.config, client=ctx.client, journal=ctx.journal, row=row,
                   cancel=ctx.cancel, syncer=ctx.syncer)

    @property
    def claim(self) -> str:
        return str(self.job.claim)

    def update(self, **fields: Any) -> None:
        """Write `fields` to the journal row and keep `row` in step with it."""
        self.journal.update(self.claim, **fields)
        self.row = replace(self.row, **fields)

    def refresh(self) -> Row:
        """The row as the journal has it now (after a write made by another module)."""
        row = self.journal.get(self.claim)
        if row is not None:
            self.row = row
        return self.row

    def fields(self, **extra: Any) -> dict[str, Any]:
        """The log fields of this file."""
        return log_fields(self.job, self.row, **extra)


def log_fields(job: Job, row: Row | None, **extra: Any) -> dict[str, Any]:
    """The log fields of a file: its inbox and name, and what its journal row knows."""
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
