"""SQLite in WAL mode in `state_dir` (a local disk; never a network share), shared by the
owners of its tables.

Each owner (`journal` for the files, `batches`, `events`) registers the statements that
build its tables, one per version, and `register` brings that owner forward at open; the
versions are kept per owner in the `schema` table, so owners migrate independently and a
newer owner version than this inboxd knows is refused instead of touched.

One connection per thread (WAL lets readers run beside the one writer; SQLite serialises
the writers itself, briefly): no Python lock is held while SQLite works; with 4 workers on
2 busy cores a Python lock around each write made the burst slower, because its holder
loses the GIL inside SQLite and the others queue behind it.

Durability: `synchronous=NORMAL`. A crash of the process loses nothing committed; a power
loss may roll back the last commits, never corrupt the file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILE_NAME = "journal.sqlite3"

# journals written before owners had versions of their own: PRAGMA user_version counted the
# files' schema (1, 2) and the batches table came with 3
_LEGACY = {1: {"journal": 1}, 2: {"journal": 2}, 3: {"journal": 2, "batches": 1}}


OWNERS_VERSION = 100  # PRAGMA user_version of a journal whose versions are in `schema`


class SchemaTooNew(sqlite3.DatabaseError):
    pass


class Database:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / FILE_NAME
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        db = self.connection()
        db.execute("PRAGMA journal_mode=WAL")
        with self.transaction() as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS schema (owner TEXT PRIMARY KEY, version INTEGER NOT NULL)")
            legacy = tx.execute("PRAGMA user_version").fetchone()[0]
            if legacy not in (0, OWNERS_VERSION, *_LEGACY):
                raise SchemaTooNew(f"the journal has schema version {legacy}, newer than this inboxd; "
                                   "refusing to touch it")
            if legacy in _LEGACY and not tx.execute("SELECT 1 FROM schema").fetchall():
                tx.executemany("INSERT INTO schema (owner, version) VALUES (?, ?)", sorted(_LEGACY[legacy].items()))
            # an inboxd from before owner versions refuses this journal as newer instead of migrating it
            tx.execute(f"PRAGMA user_version = {OWNERS_VERSION}")

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit: each statement outside `transaction` commits alone)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
            with self._all_lock:
                self._all.append(db)
        return db

    def register(self, owner: str, migrations: Sequence[str]) -> None:
        """Bring `owner`'s tables to version len(migrations): migrations[i] takes version i to i + 1."""
        db = self.connection()
        with self.transaction() as tx:
            rows = tx.execute("SELECT version FROM schema WHERE owner = ?", (owner,)).fetchall()
            version = rows[0][0] if rows else 0
            if version > len(migrations):
                raise SchemaTooNew(f"the journal's {owner} tables have schema version {version}, newer than this "
                                   f"inboxd ({len(migrations)}); refusing to touch them")
        if version == len(migrations):
            return
        for target in range(version + 1, len(migrations) + 1):
            db.executescript(f"BEGIN IMMEDIATE; {migrations[target - 1]} "
                             f"INSERT INTO schema (owner, version) VALUES ('{owner}', {target}) "
                             f"ON CONFLICT (owner) DO UPDATE SET version = excluded.version; COMMIT;")

    def version(self, owner: str) -> int:
        rows = self.query("SELECT version FROM schema WHERE owner = ?", (owner,))
        return int(rows[0][0]) if rows else 0

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, tuple(args)).fetchall()

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """One statement in its own transaction; the number of rows it changed."""
        return self.connection().execute(sql, tuple(args)).rowcount

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE` ... `COMMIT` on this thread's connection (rolled back on an exception)."""
        db = self.connection()
        with db:
            db.execute("BEGIN IMMEDIATE")
            yield db

    def close(self) -> None:
        with self._all_lock:
            for db in self._all:
                try:
                    db.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()
