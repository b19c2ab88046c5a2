"""The journal: SQLite in WAL mode in `state_dir` (a local disk; never a network share).

One row per claimed file, keyed by its claim path, with its stage:
``claimed -> checked -> uploading -> uploaded -> archived`` (or ``failed``). Each stage is
written before the step that cannot be undone, so a restart knows what was done. The
journal also maps (sha256, purpose) to the file object for dedupe, and remembers files
kept in place (``on_success = "keep"``) by (path, size, mtime, sha256).

One connection per thread (WAL lets readers run beside the one writer; SQLite serialises
the writers itself, briefly): no Python lock is held while SQLite works, so workers do not
queue behind each other's statements.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGES = ("claimed", "checked", "uploading", "uploaded", "archived", "failed")

_SCHEMA = """
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

    @property
    def file_object(self) -> dict[str, Any] | None:
        return json.loads(self.file_json) if self.file_json else None


class Journal:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "journal.sqlite3"
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
            with self._all_lock:
                self._all.append(db)
        return db

    def close(self) -> None:
        with self._all_lock:
            for db in self._all:
                try:
                    db.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._db().execute(sql, args).fetchall()

    def uploaded(self, claim: str, sha256: str, purpose: str, file_object: dict[str, Any], **fields: Any) -> None:
        """Stage `uploaded` and the dedupe entry, in one transaction."""
        db = self._db()
        cols = ", ".join(f"{k} = ?" for k in fields)
        file_json = json.dumps(file_object)
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(f"UPDATE files SET stage = 'uploaded', file_json = ?, {cols}, updated_at = ? WHERE claim = ?",
                       (file_json, *fields.values(), time.time(), claim))
            db.execute("INSERT OR REPLACE INTO uploads (sha256, purpose, file_id, file_json) VALUES (?,?,?,?)",
                       (sha256, purpose, str(file_object.get("id")), file_json))

    # --- the rows of claimed files ---------------------------------------------------------

    def claimed(self, claim: str, inbox: str, name: str) -> None:
        now = time.time()
        self._exec(
            "INSERT OR REPLACE INTO files (claim, inbox, name, stage, claimed_at, updated_at) VALUES (?,?,?,?,?,?)",
            (claim, inbox, name, "claimed", now, now),
        )

    def update(self, claim: str, **fields: Any) -> None:
        """Set `fields` (column names) of the row, and its updated_at."""
        if "stage" in fields and fields["stage"] not in STAGES:
            raise ValueError(f"unknown stage {fields['stage']!r}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._exec(f"UPDATE files SET {cols}, updated_at = ? WHERE claim = ?", (*fields.values(), time.time(), claim))

    def move(self, old_claim: str, new_claim: str) -> None:
        """A stale claim was taken over under a new claim path."""
        self._exec("UPDATE files SET claim = ?, updated_at = ? WHERE claim = ?", (new_claim, time.time(), old_claim))

    def forget(self, claim: str) -> None:
        self._exec("DELETE FROM files WHERE claim = ?", (claim,))

    def get(self, claim: str) -> Row | None:
        rows = self._exec("SELECT * FROM files WHERE claim = ?", (claim,))
        return Row(*rows[0]) if rows else None

    def open_rows(self, inbox: str | None = None) -> list[Row]:
        """Rows not archived nor failed (in flight, or interrupted)."""
        sql = "SELECT * FROM files WHERE stage NOT IN ('archived', 'failed')"
        args: tuple[Any, ...] = ()
        if inbox is not None:
            sql += " AND inbox = ?"
            args = (inbox,)
        return [Row(*r) for r in self._exec(sql, args)]

    # --- dedupe ----------------------------------------------------------------------------

    def remember_upload(self, sha256: str, purpose: str, file_id: str, file_object: dict[str, Any]) -> None:
        self._exec(
            "INSERT OR REPLACE INTO uploads (sha256, purpose, file_id, file_json) VALUES (?,?,?,?)",
            (sha256, purpose, file_id, json.dumps(file_object)),
        )

    def known_upload(self, sha256: str, purpose: str) -> dict[str, Any] | None:
        rows = self._exec("SELECT file_json FROM uploads WHERE sha256 = ? AND purpose = ?", (sha256, purpose))
        return json.loads(rows[0][0]) if rows else None

    # --- files kept in place ---------------------------------------------------------------

    def remember_kept(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        self._exec(
            "INSERT OR REPLACE INTO kept (path, bytes, mtime_ns, sha256) VALUES (?,?,?,?)",
            (path, size, mtime_ns, sha256),
        )

    def is_kept(self, path: str, size: int, mtime_ns: int) -> bool:
        rows = self._exec("SELECT 1 FROM kept WHERE path = ? AND bytes = ? AND mtime_ns = ?", (path, size, mtime_ns))
        return bool(rows)

    # --- status ----------------------------------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for inbox, stage, n in self._exec("SELECT inbox, stage, COUNT(*) FROM files GROUP BY inbox, stage"):
            out.setdefault(inbox, {})[stage] = n
        return out

    def last_success(self, inbox: str) -> float | None:
        rows = self._exec("SELECT MAX(updated_at) FROM files WHERE inbox = ? AND stage = 'archived'", (inbox,))
        return rows[0][0] if rows else None

    def recent_failures(self, inbox: str, limit: int = 5) -> list[Row]:
        rows = self._exec(
            "SELECT * FROM files WHERE inbox = ? AND stage = 'failed' ORDER BY updated_at DESC LIMIT ?", (inbox, limit)
        )
        return [Row(*r) for r in rows]
