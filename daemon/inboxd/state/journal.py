"""The journal: the local index of claimed files, in the state database (`db.py`).

One row per claimed file, keyed by its claim path, with its stage:
``claimed -> checked -> uploading -> uploaded -> archived`` (or ``failed``). Each stage is
written before the step that cannot be undone, so a restart knows what was done. The
journal also maps (sha256, purpose) to the file object for dedupe, and remembers files
kept in place (``on_success = "keep"``) by (path, size, mtime, sha256).

The rows of files in flight are also kept in memory, as this process last wrote them
(`get` answers from there; a worker reads its row several times per file): every write to
`files` goes through the methods below and updates the cache, under a lock, after its
statement succeeded; a claim's row is written only by the daemon (and the worker) that holds
the claim; a row read from the table is cached under the same lock, so a write that commits
meanwhile is applied on top of it. Finished rows leave the cache.

A file reaching `archived` or `failed` runs the `on_finished` hooks inside the transaction
that writes the stage (the events of its sidecar are recorded in that commit).

Durability is the database's (`db.py`): every stage a power loss can roll back is safe to
redo, because recovery asks the server and the filesystem rather than trusting the row alone.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from .db import Database

FinishedHook = Callable[[sqlite3.Connection, "Row"], None]

class Stage(StrEnum):
    """A claimed file's stage in the journal, each written before the step it enables."""

    CLAIMED = "claimed"
    CHECKED = "checked"  # hashed; the check's verdict is in the row
    UPLOADING = "uploading"  # the server made a file id (or multipart upload) for it
    UPLOADED = "uploaded"  # the server has it whole: only the batch job and the archive are left
    ARCHIVED = "archived"  # in done/ with its manifest (or kept, or deleted)
    FAILED = "failed"  # in failed/ with its error sidecar


STAGES = tuple(Stage)
FINISHED = (Stage.ARCHIVED, Stage.FAILED)
_V1 = """
CREATE TABLE IF NOT EXISTS files (
    claim TEXT PRIMARY KEY,
    inbox TEXT NOT NULL,
    name TEXT NOT NULL,
    stage TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    bytes INTEGER,
    mtime_ns INTEGER,
    sha256 TEXT,
    validation TEXT,
    file_id TEXT,
    upload_id TEXT,
    file_json TEXT,
    method TEXT,
    parts INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    finished_at REAL,
    target TEXT,
    sidecar TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS files_by_inbox_stage ON files (inbox, stage);
CREATE TABLE IF NOT EXISTS uploads (
    sha256 TEXT NOT NULL,
    purpose TEXT NOT NULL,
    file_id TEXT NOT NULL,
    file_json TEXT NOT NULL,
    PRIMARY KEY (sha256, purpose)
);
CREATE TABLE IF NOT EXISTS kept (
    path TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
"""

_V2 = """
ALTER TABLE files ADD COLUMN ino INTEGER;
CREATE TABLE IF NOT EXISTS totals (
    inbox TEXT NOT NULL,
    stage TEXT NOT NULL,
    n INTEGER NOT NULL,
    last_at REAL,
    PRIMARY KEY (inbox, stage)
);
"""

# the files table and its companions, version by version (`Database.register`)
MIGRATIONS = (_V1, _V2)

# the columns `update()` may set (the key, inbox and times are the journal's own)
_UPDATABLE = frozenset({
    "stage", "bytes", "mtime_ns", "ino", "sha256", "validation", "file_id", "upload_id", "file_json", "method",
    "parts", "attempts", "started_at", "finished_at", "target", "sidecar", "error",
})


@dataclass
class Row:
    claim: str
    inbox: str
    name: str
    stage: str
    claimed_at: float
    updated_at: float
    bytes: int | None
    mtime_ns: int | None
    sha256: str | None
    validation: str | None
    file_id: str | None
    upload_id: str | None
    file_json: str | None
    method: str | None
    parts: int | None
    attempts: int
    started_at: float | None
    finished_at: float | None
    target: str | None
    sidecar: str | None
    error: str | None
    ino: int | None = None

    @property
    def file_object(self) -> dict[str, Any] | None:
        return json.loads(self.file_json) if self.file_json else None


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.db = Database(state_dir)
        self.db.register("journal", MIGRATIONS)
        self.path = self.db.path
        self._rows_lock = threading.Lock()  # guards the cache of rows in flight (module docstring)
        self._rows: dict[str, Row] = {}  # rows of files in flight, as last written (module docstring)
        self._later: list[tuple[str, float]] = []  # archived stages not yet written (`archived_later`)
        self._on_finished: list[FinishedHook] = []
        self.on_publishing: list[Callable[[Row, Path], None]] = []  # (row, sidecar): `publishing`

    def on_finished(self, hook: FinishedHook) -> None:
        """`hook(conn, row)` runs inside the transaction that writes a row's `archived` or
        `failed` stage (`row` as it is written); an exception rolls that write back."""
        self._on_finished.append(hook)

    def publishing(self, row: Row, sidecar: Path) -> None:
        """Just before a file's sidecar is put in place (the events' fleet intent, events/fleet.py)."""
        for hook in self.on_publishing:
            hook(row, sidecar)

    def _db(self) -> sqlite3.Connection:
        return self.db.connection()

    def close(self) -> None:
        try:
            self.flush()
        except sqlite3.Error:
            pass  # rolled back: the next start finishes those rows from done/ (`archived_later`)
        self.db.close()
        self._rows.clear()

    @staticmethod
    def _row(r: sqlite3.Row) -> Row:
        return Row(**{k: r[k] for k in r.keys()})

    def uploaded(self, claim: str, sha256: str, purpose: str, file_object: dict[str, Any], **fields: Any) -> None:
        """Stage `uploaded` (the row's sha256 and `fields` with it) and the dedupe entry, in one transaction."""
        cols = ", ".join(f"{k} = ?" for k in fields)
        file_json = json.dumps(file_object)
        now = time.time()

        def statements(db: sqlite3.Connection) -> None:
            db.execute(f"UPDATE files SET stage = 'uploaded', file_json = ?, sha256 = ?, {cols}, updated_at = ? "
                       "WHERE claim = ?", (file_json, sha256, *fields.values(), now, claim))
            db.execute("INSERT OR REPLACE INTO uploads (sha256, purpose, file_id, file_json) VALUES (?,?,?,?)",
                       (sha256, purpose, str(file_object.get("id")), file_json))

        self._write(statements, atomic=True)
        with self._rows_lock:
            self._cached(claim, {"stage": "uploaded", "file_json": file_json, "sha256": sha256, **fields}, now)

    # --- the rows of claimed files ---------------------------------------------------------

    def _cached(self, claim: str, fields: dict[str, Any], now: float) -> None:
        """The cached row of `claim` (if any) after an UPDATE of `fields` that succeeded; called
        with the lock held."""
        row = self._rows.get(claim)
        if row is None:
            return
        if fields.get("stage") in FINISHED:
            del self._rows[claim]
        else:
            self._rows[claim] = replace(row, **fields, updated_at=now)

    # --- the archived stage, written with the next commit -------------------------------

    def archived_later(self, claim: str) -> None:
        """Stage `archived` for a row whose file and manifest are in done/ (both fsynced), written
        with the next write of any thread or by `flush` (the daemon loop's tick, `close`): one
        commit per file fewer. Nothing waits for it: a row left at `uploaded` with its target
        reserved and its claimed file gone is finished the same way by the next start
        (`finish_orphan`: the manifest is there, the row becomes `archived`). The row stays
        in the cache, at its last stage, until written."""
        with self._rows_lock:
            self._later.append((claim, time.time()))

    def flush(self) -> None:
        """Write the archived stages waiting for a commit (`archived_later`), if any."""
        if self._later:
            self._write(lambda db: None)

    def _write(self, statements: Callable[[sqlite3.Connection], object], atomic: bool = False) -> None:
        """Run `statements(db)` with the archived stages that wait for a commit, in one
        transaction (also without any, if `atomic`); on failure those wait for the next one."""
        with self._rows_lock:
            later, self._later = self._later, []
        db = self._db()
        if not later and not atomic:
            statements(db)  # one statement: its own transaction
            return
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                if later:
                    db.executemany("UPDATE files SET stage = 'archived', updated_at = ? WHERE claim = ?",
                                   [(when, claim) for claim, when in later])
                    _run_hooks(self._on_finished, self._rows, db,
                               [(claim, {"stage": "archived", "updated_at": when}) for claim, when in later])
                statements(db)
        except BaseException:
            with self._rows_lock:
                self._later[:0] = later
            raise
        with self._rows_lock:
            for claim, when in later:
                self._cached(claim, {"stage": "archived"}, when)

    def claimed(self, claim: str, inbox: str, name: str) -> None:
        self.claimed_many([(claim, inbox, name)])

    def claimed_many(self, claims: list[tuple[str, str, str]]) -> None:
        """Rows at stage `claimed` for (claim, inbox, name) each, in one commit."""
        now = time.time()
        self._write(lambda db: db.executemany(
            "INSERT OR REPLACE INTO files (claim, inbox, name, stage, claimed_at, updated_at) VALUES (?,?,?,?,?,?)",
            [(claim, inbox, name, "claimed", now, now) for claim, inbox, name in claims],
        ), atomic=len(claims) > 1)
        with self._rows_lock:
            for claim, inbox, name in claims:
                self._rows[claim] = Row(claim=claim, inbox=inbox, name=name, stage="claimed", claimed_at=now,
                                        updated_at=now, bytes=None, mtime_ns=None, sha256=None, validation=None,
                                        file_id=None, upload_id=None, file_json=None, method=None, parts=None,
                                        attempts=0, started_at=None, finished_at=None, target=None, sidecar=None,
                                        error=None, ino=None)

    def update(self, claim: str, **fields: Any) -> None:
        """Set `fields` (column names) of the row, and its updated_at."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"journal.update: not an updatable column: {sorted(unknown)}")
        if "stage" in fields and fields["stage"] not in STAGES:
            raise ValueError(f"unknown stage {fields['stage']!r}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        now = time.time()
        finishing = fields.get("stage") in FINISHED and bool(self._on_finished)

        def statements(db: sqlite3.Connection) -> None:
            db.execute(f"UPDATE files SET {cols}, updated_at = ? WHERE claim = ?", (*fields.values(), now, claim))
            if finishing:
                _run_hooks(self._on_finished, self._rows, db, [(claim, {**fields, "updated_at": now})])

        self._write(statements, atomic=finishing)
        with self._rows_lock:
            self._cached(claim, fields, now)

    def move(self, old_claim: str, new_claim: str) -> None:
        """A stale claim was taken over under a new claim path."""
        self._db().execute("UPDATE files SET claim = ?, updated_at = ? WHERE claim = ?",
                           (new_claim, time.time(), old_claim))
        with self._rows_lock:
            self._rows.pop(old_claim, None)
            self._rows.pop(new_claim, None)  # read again from the table

    def forget(self, claim: str) -> None:
        self._db().execute("DELETE FROM files WHERE claim = ?", (claim,))
        with self._rows_lock:
            self._rows.pop(claim, None)

    def get(self, claim: str) -> Row | None:
        row = self._rows.get(claim)
        if row is None:
            # a miss (rows read back after a restart, a takeover): read and cache under the lock;
            # a write that commits meanwhile waits for it and is then applied to the cached row
            with self._rows_lock:
                row = self._rows.get(claim)
                if row is None:
                    rows = self._db().execute("SELECT * FROM files WHERE claim = ?", (claim,)).fetchall()
                    if not rows:
                        return None
                    row = self._row(rows[0])
                    if row.stage in FINISHED:
                        return row
                    self._rows[claim] = row
        return replace(row)  # a copy: the caller may change it

    def open_rows(self, inbox: str | None = None) -> list[Row]:
        """Rows not archived nor failed (in flight, or interrupted)."""
        sql = "SELECT * FROM files WHERE stage NOT IN ('archived', 'failed')"
        args: tuple[Any, ...] = ()
        if inbox is not None:
            sql += " AND inbox = ?"
            args = (inbox,)
        return [self._row(r) for r in self.db.query(sql, args)]

    # --- dedupe ----------------------------------------------------------------------------

    def known_upload(self, sha256: str, purpose: str) -> dict[str, Any] | None:
        rows = self.db.query("SELECT file_json FROM uploads WHERE sha256 = ? AND purpose = ?", (sha256, purpose))
        return json.loads(rows[0][0]) if rows else None

    # --- files kept in place ---------------------------------------------------------------

    def remember_kept(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO kept (path, bytes, mtime_ns, sha256) VALUES (?,?,?,?)",
            (path, size, mtime_ns, sha256),
        )

    def is_kept(self, path: str, size: int, mtime_ns: int) -> bool:
        rows = self.db.query("SELECT 1 FROM kept WHERE path = ? AND bytes = ? AND mtime_ns = ?", (path, size, mtime_ns))
        return bool(rows)

    # --- status ----------------------------------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        """Files per inbox and stage, including finished rows already removed by `prune`."""
        out: dict[str, dict[str, int]] = {}
        for inbox, stage, n in self.db.query("SELECT inbox, stage, COUNT(*) FROM files GROUP BY inbox, stage"):
            out.setdefault(inbox, {})[stage] = n
        for inbox, stage, n in self.db.query("SELECT inbox, stage, n FROM totals"):
            per = out.setdefault(inbox, {})
            per[stage] = per.get(stage, 0) + n
        return out

    def last_success(self, inbox: str) -> float | None:
        rows = self.db.query("SELECT MAX(updated_at) FROM files WHERE inbox = ? AND stage = 'archived'", (inbox,))
        latest = rows[0][0] if rows else None
        pruned = self.db.query("SELECT last_at FROM totals WHERE inbox = ? AND stage = 'archived'", (inbox,))
        if pruned and pruned[0][0] is not None and (latest is None or pruned[0][0] > latest):
            return float(pruned[0][0])
        return latest

    def prune(self, older_than_days: float, now: float | None = None) -> int:
        """Delete rows of finished files older than the retention; their counts move to `totals`
        (status stays right) and the dedupe map (`uploads`) is kept. Returns the rows removed."""
        cutoff = (time.time() if now is None else now) - older_than_days * 86400
        db = self._db()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO totals (inbox, stage, n, last_at) "
                "SELECT inbox, stage, COUNT(*), MAX(updated_at) FROM files "
                "WHERE stage IN ('archived', 'failed') AND updated_at < ? GROUP BY inbox, stage "
                "ON CONFLICT (inbox, stage) DO UPDATE SET n = n + excluded.n, "
                "last_at = MAX(COALESCE(last_at, 0), excluded.last_at)",
                (cutoff,),
            )
            cur = db.execute("DELETE FROM files WHERE stage IN ('archived', 'failed') AND updated_at < ?", (cutoff,))
            return cur.rowcount

    def recent_failures(self, inbox: str, limit: int = 5) -> list[Row]:
        rows = self.db.query(
            "SELECT * FROM files WHERE inbox = ? AND stage = 'failed' ORDER BY updated_at DESC LIMIT ?", (inbox, limit)
        )
        return [self._row(r) for r in rows]


def _run_hooks(hooks: list[FinishedHook], cached: dict[str, Row], db: sqlite3.Connection,
               changes: list[tuple[str, dict[str, Any]]]) -> None:
    """Run the `on_finished` hooks for rows that reach a finished stage in this transaction."""
    if not hooks:
        return
    for claim, fields in changes:
        row = cached.get(claim)
        if row is None:
            found = db.execute("SELECT * FROM files WHERE claim = ?", (claim,)).fetchall()
            if not found:
                continue
            row = Row(**{k: found[0][k] for k in found[0].keys()})
        row = replace(row, **fields)
        for hook in hooks:
            hook(db, row)
