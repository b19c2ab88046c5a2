"""The batch jobs in the state database (table `batches`, owned here): one row per input file.

Stages (SPEC §10), each written before the step that cannot be undone:
``creating`` (before ``POST /batches``) → ``created`` (the batch id) → ``following`` (the
archived input, manifest and outbox are known: the poller may deliver) → ``downloading`` (the
job is terminal; the outbox is being written) → ``delivered`` (``<stem>.batch.json`` is in
place). ``failed``: the job can never be delivered (the server forgot it).

A row carries everything the poller needs (outbox, stem, endpoint, join, manifest path), so a
job keeps being followed when its inbox's ``[inboxes.batch]`` table is removed from the config.
The SQL goes through the database's public API (`state/db.py`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import BatchConfig
from ..state.journal import Journal

DeliveredHook = Callable[[sqlite3.Connection, "BatchRecord"], None]

STAGES = ("creating", "created", "following", "downloading", "delivered", "failed")
OPEN_STAGES = ("following", "downloading")  # the poller's work
FINISHED_STAGES = ("delivered", "failed")

# the batches table, version by version (`Database.register`)
MIGRATIONS = ("""
CREATE TABLE IF NOT EXISTS batches (
    claim TEXT PRIMARY KEY,
    inbox TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    input_sha256 TEXT,
    manifest TEXT,
    input_path TEXT,
    stem TEXT,
    outbox TEXT,
    endpoint TEXT NOT NULL,
    completion_window TEXT,
    model_id TEXT,
    priority INTEGER,
    poll_seconds REAL NOT NULL,
    join_results INTEGER NOT NULL DEFAULT 0,
    requests INTEGER,
    stage TEXT NOT NULL,
    batch_id TEXT,
    status TEXT,
    progress REAL,
    output_file_id TEXT,
    error_file_id TEXT,
    job_json TEXT,
    outputs_json TEXT,
    error TEXT,
    dropped_at REAL,
    uploaded_at REAL,
    creating_at REAL,
    created_at REAL,
    finished_at REAL,
    delivered_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_by_stage ON batches (stage);
CREATE INDEX IF NOT EXISTS batches_by_batch_id ON batches (batch_id);
""", """
ALTER TABLE batches ADD COLUMN ledger TEXT;
CREATE INDEX IF NOT EXISTS batches_by_ledger ON batches (ledger);
""")

# record field -> column (the rest have the same name)
_COLUMN = {"join": "join_results", "job": "job_json", "outputs": "outputs_json"}
_JSON_FIELDS = ("job", "outputs")
_UPDATABLE = frozenset({
    "input_sha256", "manifest", "input_path", "stem", "outbox", "endpoint", "completion_window", "model_id",
    "priority", "poll_seconds", "join", "requests", "stage", "batch_id", "status", "progress", "output_file_id",
    "error_file_id", "job", "outputs", "error", "dropped_at", "uploaded_at", "creating_at", "created_at",
    "finished_at", "delivered_at", "ledger",
})


@dataclass
class BatchRecord:
    """One input file's batch job, as the journal has it."""

    claim: str
    inbox: str
    input_file_id: str
    endpoint: str
    poll_seconds: float
    stage: str
    input_sha256: str | None = None
    manifest: str | None = None  # the input's manifest in done/ (gains a `batch` section)
    input_path: str | None = None  # the archived input (read by join)
    stem: str | None = None  # <outbox>/<stem>.output.jsonl ...
    outbox: str | None = None
    completion_window: str | None = "24h"
    model_id: str | None = None
    priority: int | None = None
    join: bool = False
    requests: int | None = None  # input lines (requests), when known
    batch_id: str | None = None
    status: str | None = None
    progress: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    job: dict[str, Any] | None = None  # the last BatchJob seen
    outputs: dict[str, Any] = field(default_factory=dict)  # kind -> {path, bytes, sha256, lines}, before rename
    error: str | None = None
    dropped_at: float | None = None
    uploaded_at: float | None = None
    creating_at: float | None = None
    created_at: float | None = None
    finished_at: float | None = None
    delivered_at: float | None = None
    updated_at: float = 0.0
    ledger: str | None = None  # <done>/<name>.ledger.json: the input's jobs, parts and rounds (SPEC §10)

    @property
    def terminal(self) -> bool:
        return (self.status or "") in ("COMPLETED", "FAILED", "EXPIRED", "CANCELLED")

    def path(self, kind: str) -> Path:
        """<outbox>/<stem>.<kind>: output.jsonl, errors.jsonl, results.jsonl, batch.json."""
        assert self.outbox and self.stem
        return Path(self.outbox) / f"{self.stem}.{kind}"

    def config(self) -> BatchConfig:
        """The [inboxes.batch] this job was made with (for create_once after a SIGHUP removed the table)."""
        return BatchConfig(endpoint=self.endpoint, completion_window=self.completion_window or "24h",
                           model_id=self.model_id, priority=self.priority, poll_seconds=self.poll_seconds,
                           outbox=Path(self.outbox) if self.outbox else None, join=self.join)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def stem_of(name: str) -> str:
    """The archived input's name without `.jsonl` (x.2.jsonl -> x.2)."""
    return name[: -len(".jsonl")] if name.endswith(".jsonl") and len(name) > len(".jsonl") else name


class BatchStore:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.db = journal.db
        self.db.register("batches", MIGRATIONS)
        self._on_delivered: list[DeliveredHook] = []

    # --- reading ---------------------------------------------------------------------------

    @staticmethod
    def _record(row: sqlite3.Row) -> BatchRecord:
        values: dict[str, Any] = {}
        for f in fields(BatchRecord):
            raw = row[_COLUMN.get(f.name, f.name)]
            if f.name in _JSON_FIELDS:
                raw = json.loads(raw) if raw else ({} if f.name == "outputs" else None)
            elif f.name == "join":
                raw = bool(raw)
            values[f.name] = raw
        return BatchRecord(**values)

    def get(self, claim: str) -> BatchRecord | None:
        rows = self.db.query("SELECT * FROM batches WHERE claim = ?", (claim,))
        return self._record(rows[0]) if rows else None

    def by_ledger(self, ledger: str) -> BatchRecord | None:
        rows = self.db.query("SELECT * FROM batches WHERE ledger = ?", (ledger,))
        return self._record(rows[0]) if rows else None

    def by_batch_id(self, batch_id: str) -> BatchRecord | None:
        rows = self.db.query("SELECT * FROM batches WHERE batch_id = ?", (batch_id,))
        return self._record(rows[0]) if rows else None

    def all(self, limit: int | None = None) -> list[BatchRecord]:
        sql = "SELECT * FROM batches ORDER BY COALESCE(creating_at, updated_at) DESC"
        args: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            args = (limit,)
        return [self._record(r) for r in self.db.query(sql, args)]

    def open_records(self) -> list[BatchRecord]:
        """Jobs the poller follows: created and attached (following) or being delivered."""
        rows = self.db.query("SELECT * FROM batches WHERE stage IN (?, ?) AND (batch_id IS NOT NULL OR ledger IS NOT "
                             "NULL) ORDER BY updated_at", OPEN_STAGES)
        return [self._record(r) for r in rows]

    def unfinished_creates(self) -> list[BatchRecord]:
        """Rows at `creating` (the POST may or may not have happened) or `created` and not yet
        attached: the daemon's recovery finishes them (create_once adopts; then attach). The
        poller never creates."""
        rows = self.db.query("SELECT * FROM batches WHERE stage IN ('creating', 'created') ORDER BY updated_at")
        return [self._record(r) for r in rows]

    def owned_batch_ids(self, except_claim: str | None = None) -> set[str]:
        rows = self.db.query("SELECT batch_id FROM batches WHERE batch_id IS NOT NULL AND claim != ?",
                                  (except_claim or "",))
        return {r[0] for r in rows}

    def counts(self) -> dict[str, int]:
        """Jobs by status (stage when no status yet), for a gauge."""
        rows = self.db.query("SELECT COALESCE(status, stage), COUNT(*) FROM batches GROUP BY 1")
        return {r[0]: r[1] for r in rows}

    # --- writing ---------------------------------------------------------------------------

    def begin(self, claim: str, *, inbox: str, input_file_id: str, endpoint: str, poll_seconds: float,
              **values: Any) -> BatchRecord:
        """The row of a new job at stage `creating` (written BEFORE the create call). An existing
        row is left as it is and returned (a retry, or recovery after a crash)."""
        now = time.time()
        existing = self.get(claim)
        if existing is not None:
            return existing
        rec = BatchRecord(claim=claim, inbox=inbox, input_file_id=input_file_id, endpoint=endpoint,
                          poll_seconds=poll_seconds, stage="creating", creating_at=now, updated_at=now)
        for k, v in values.items():
            if k not in _UPDATABLE:
                raise ValueError(f"batch store: not a record field: {k}")
            setattr(rec, k, v)
        if rec.stem is None and rec.input_path:
            rec.stem = stem_of(Path(rec.input_path).name)
        cols = [f.name for f in fields(BatchRecord)]
        self.db.execute(
            f"INSERT OR IGNORE INTO batches ({', '.join(_COLUMN.get(c, c) for c in cols)}) "
            f"VALUES ({', '.join('?' for _ in cols)})",
            tuple(self._value(c, getattr(rec, c)) for c in cols),
        )
        got = self.get(claim)
        assert got is not None
        return got

    @staticmethod
    def _value(name: str, value: Any) -> Any:
        if name in _JSON_FIELDS:
            return json.dumps(value) if value is not None else None
        if name == "join":
            return int(bool(value))
        if isinstance(value, Path):
            return str(value)
        return value

    def update(self, claim: str, *, announce: bool = True, **values: Any) -> BatchRecord:
        """Write `values`; a `delivered` stage runs the on_delivered hooks in the same commit,
        unless `announce` is False (another host delivered it, and announces it)."""
        unknown = set(values) - _UPDATABLE
        if unknown:
            raise ValueError(f"batch store: not an updatable field: {sorted(unknown)}")
        if "stage" in values and values["stage"] not in STAGES:
            raise ValueError(f"batch store: unknown stage {values['stage']!r}")
        cols = ", ".join(f"{_COLUMN.get(k, k)} = ?" for k in values)
        args = (*(self._value(k, v) for k, v in values.items()), time.time(), claim)
        with self.db.transaction() as tx:
            tx.execute(f"UPDATE batches SET {cols}, updated_at = ? WHERE claim = ?", args)
            rows = tx.execute("SELECT * FROM batches WHERE claim = ?", (claim,)).fetchall()
            if not rows:
                raise KeyError(claim)
            rec = self._record(rows[0])
            if values.get("stage") == "delivered" and announce:
                for hook in self._on_delivered:
                    hook(tx, rec)
        return rec

    def on_delivered(self, hook: DeliveredHook) -> None:
        """`hook(conn, record)` runs inside the transaction that writes a job's `delivered`
        stage (its batch.json is published); an exception rolls that write back."""
        self._on_delivered.append(hook)

    def attach(self, claim: str, *, manifest: Path | str | None, input_path: Path | str | None,
               outbox: Path | str | None = None, stem: str | None = None, requests: int | None = None) -> BatchRecord:
        """The input is archived: its manifest and archived path are known, so the job may be
        delivered. Moves `created` to `following` (later stages are left alone)."""
        rec = self.get(claim)
        if rec is None:
            raise KeyError(claim)
        values: dict[str, Any] = {"manifest": str(manifest) if manifest else None,
                                  "input_path": str(input_path) if input_path else None}
        if stem is None and rec.stem is None:
            stem = stem_of(Path(input_path).name) if input_path else stem_of(rec.claim.rsplit("/", 1)[-1])
        if stem is not None and rec.stage in ("creating", "created", "following"):
            values["stem"] = stem
        if outbox is not None:
            values["outbox"] = str(outbox)
        if requests is not None:
            values["requests"] = requests
        if rec.stage == "created":
            values["stage"] = "following"
        return self.update(claim, **values)

    def forget(self, claim: str) -> None:
        self.db.execute("DELETE FROM batches WHERE claim = ?", (claim,))

    def move(self, old_claim: str, new_claim: str) -> None:
        """The input's claim was taken over under a new path (as `Journal.move`)."""
        self.db.execute("UPDATE batches SET claim = ? WHERE claim = ?", (new_claim, old_claim))
