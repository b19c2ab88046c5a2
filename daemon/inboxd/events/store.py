"""The events in the state database (table `events`, owned here): one row per event and sink.

An event is recorded in the transaction that publishes its sidecar's stage (the journal's
`archived` / `failed`, the batch store's `delivered`), so a committed stage always has its
events; its `id` (``msg_…``) is fixed then and is the `webhook-id` of every delivery. The
sender of each sink takes that sink's rows in order (`seq`) and moves them
``pending -> delivered`` or, after `max_age_hours` of failures, ``pending -> dead``;
``inboxd events retry`` puts dead rows back to ``pending``. ``moved``: another host took
the event over (the fleet's event file, `fleet.py`), so this host no longer sends it.

`parked` marks a row refused for itself (a 4xx answer): the sink goes on with the next
events meanwhile. Any other failure (no answer, 5xx, 429, a timeout) holds the whole sink
until the row's `next_at`, so order is kept through an outage.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..state.db import Database

STATES = ("pending", "delivered", "dead", "moved")
_COLUMNS = """
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    sink TEXT NOT NULL,
    type TEXT NOT NULL,
    source TEXT NOT NULL,{key}
    inbox TEXT,
    body TEXT NOT NULL,
    file TEXT,
    created_at REAL NOT NULL,
    since REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    parked INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    delivered_at REAL,
    UNIQUE (id, sink),
    UNIQUE ({unique}, sink)
"""
_COPIED = ("seq, id, sink, type, source, inbox, body, file, created_at, since, attempts, next_at, parked, "
           "last_error, state, delivered_at")
_INDEXES = """
CREATE INDEX IF NOT EXISTS events_by_sink_state ON events (sink, state, seq);
CREATE INDEX IF NOT EXISTS events_by_id ON events (id);
"""
# the events table, version by version (`Database.register`): 2 adds `key` (one event per
# publication, not per path: a name may come again once done/ is emptied); the rows of
# version 1 keep their path as their key
MIGRATIONS = (
    f"CREATE TABLE IF NOT EXISTS events ({_COLUMNS.format(key='', unique='source')}); {_INDEXES}",
    f"""ALTER TABLE events RENAME TO events_v1;
CREATE TABLE events ({_COLUMNS.format(key=chr(10) + '    key TEXT NOT NULL,', unique='key')});
INSERT INTO events ({_COPIED}, key) SELECT {_COPIED}, source FROM events_v1;
DROP TABLE events_v1;
{_INDEXES}""",
)

DELIVERED_KEEP_DAYS = 7.0


@dataclass(frozen=True)
class NewEvent:
    id: str
    type: str
    source: str  # the sidecar's absolute path
    key: str  # the publication: the path and what tells this sidecar from a later one of that name
    inbox: str | None
    body: str
    created_at: float
    file: str | None = None  # the fleet's event file (`fleet.py`), if one was written


@dataclass(frozen=True)
class EventRow:
    seq: int
    id: str
    sink: str
    type: str
    source: str
    key: str
    inbox: str | None
    body: str
    file: str | None
    created_at: float
    since: float
    attempts: int
    next_at: float
    parked: int
    last_error: str | None
    state: str
    delivered_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "sink": self.sink, "type": self.type, "source": self.source, "state": self.state,
                "attempts": self.attempts, "created_at": self.created_at, "next_at": self.next_at,
                "last_error": self.last_error, "delivered_at": self.delivered_at}


_INSERT = ("INSERT INTO events (id, sink, type, source, key, inbox, body, file, created_at, since, next_at) "
           "VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING")


def insert(conn: sqlite3.Connection, event: NewEvent, sinks: Iterable[str]) -> None:
    """Record `event` for `sinks` on `conn` (inside the caller's transaction); a publication
    already recorded for a sink is left as it is (a second record of one sidecar is a no-op)."""
    conn.executemany(_INSERT, [(event.id, sink, event.type, event.source, event.key, event.inbox, event.body,
                                event.file, event.created_at, event.created_at, event.created_at) for sink in sinks])


def adopt(conn: sqlite3.Connection, event: NewEvent, sinks: Iterable[str]) -> None:
    """Record an event taken over from another claimer's event file (same id): a row this host
    already has for it (its own earlier run) gets the file's new path and is pending again if
    it was `moved`."""
    sql = _INSERT.replace("ON CONFLICT DO NOTHING",
                          "ON CONFLICT (id, sink) DO UPDATE SET file = excluded.file, "
                          "state = CASE WHEN state = 'moved' THEN 'pending' ELSE state END")
    for sink in sinks:
        try:
            conn.execute(sql, (event.id, sink, event.type, event.source, event.key, event.inbox, event.body, event.file,
                               event.created_at, event.created_at, event.created_at))
        except sqlite3.IntegrityError:
            pass  # this publication already has an event for the sink under another id: that one is sent


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.register("events", MIGRATIONS)

    @staticmethod
    def _row(r: sqlite3.Row) -> EventRow:
        return EventRow(**{k: r[k] for k in r.keys()})

    # --- recording ----------------------------------------------------------------------

    def record(self, event: NewEvent, sinks: Sequence[str]) -> None:
        if sinks:
            with self.db.transaction() as tx:
                insert(tx, event, sinks)

    def recorded(self, key: str, conn: sqlite3.Connection | None = None) -> bool:
        """Whether this publication (`NewEvent.key`) has its event already."""
        db = conn if conn is not None else self.db.connection()
        return bool(db.execute("SELECT 1 FROM events WHERE key = ? LIMIT 1", (key,)).fetchall())

    # --- the sender ---------------------------------------------------------------------

    def head(self, sink: str, now: float) -> EventRow | None:
        """The sink's next event: the oldest pending one, except those parked until later."""
        rows = self.heads(sink, now, 1)
        return rows[0] if rows else None

    def heads(self, sink: str, now: float, limit: int) -> list[EventRow]:
        """The sink's next `limit` events, in order (as `head`)."""
        rows = self.db.query("SELECT * FROM events WHERE sink = ? AND state = 'pending' "
                             "AND NOT (parked = 1 AND next_at > ?) ORDER BY seq LIMIT ?", (sink, now, limit))
        return [self._row(r) for r in rows]

    def next_parked(self, sink: str) -> float | None:
        rows = self.db.query("SELECT MIN(next_at) FROM events WHERE sink = ? AND state = 'pending' AND parked = 1",
                             (sink,))
        return rows[0][0] if rows and rows[0][0] is not None else None

    def delivered(self, row: EventRow, now: float) -> bool:
        """Mark delivered; True when no sink still has this event pending (its file may go)."""
        return bool(self.delivered_many([row], now))

    def delivered_many(self, rows: Sequence[EventRow], now: float) -> list[EventRow]:
        """Mark `rows` delivered in one commit; those no sink still has pending (their files may go)."""
        if not rows:
            return []
        with self.db.transaction() as tx:
            tx.executemany("UPDATE events SET state = 'delivered', delivered_at = ?, attempts = attempts + 1, "
                           "last_error = NULL WHERE seq = ?", [(now, r.seq) for r in rows])
            return [r for r in rows if not tx.execute(
                "SELECT 1 FROM events WHERE id = ? AND state = 'pending' LIMIT 1", (r.id,)).fetchall()]

    def failed(self, row: EventRow, *, next_at: float, error: str, parked: bool) -> None:
        self.db.execute("UPDATE events SET attempts = attempts + 1, next_at = ?, parked = ?, last_error = ? "
                        "WHERE seq = ?", (next_at, int(parked), error[:500], row.seq))

    def dead(self, row: EventRow, error: str) -> bool:
        with self.db.transaction() as tx:
            tx.execute("UPDATE events SET state = 'dead', attempts = attempts + 1, last_error = ? WHERE seq = ?",
                       (error[:500], row.seq))
            return not tx.execute("SELECT 1 FROM events WHERE id = ? AND state = 'pending' LIMIT 1",
                                  (row.id,)).fetchall()

    def moved(self, row: EventRow) -> None:
        self.db.execute("UPDATE events SET state = 'moved' WHERE seq = ? AND state = 'pending'", (row.seq,))

    def prune(self, now: float, keep_days: float = DELIVERED_KEEP_DAYS) -> int:
        return self.db.execute("DELETE FROM events WHERE state IN ('delivered', 'moved') AND "
                               "COALESCE(delivered_at, created_at) < ?", (now - keep_days * 86400,))

    # --- reading and the operator's commands -------------------------------------------

    def list(self, *, state: str | None = None, sink: str | None = None, limit: int = 1000) -> list[EventRow]:
        sql, args = "SELECT * FROM events WHERE 1 = 1", list[Any]()
        if state is not None:
            sql += " AND state = ?"
            args.append(state)
        if sink is not None:
            sql += " AND sink = ?"
            args.append(sink)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        return [self._row(r) for r in self.db.query(sql, args)]

    def pending(self, now: float | None = None) -> dict[str, tuple[int, float]]:
        """Per sink with pending events: how many, and the oldest one's age in seconds (counted
        from its recording, or from `inboxd events retry`)."""
        now = time.time() if now is None else now
        rows = self.db.query("SELECT sink, COUNT(*), MIN(since) FROM events WHERE state = 'pending' GROUP BY sink")
        return {sink: (n, round(max(0.0, now - oldest), 3)) for sink, n, oldest in rows}

    def backlog(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Per sink: pending, dead, delivered counts and the oldest pending event's age (seconds)."""
        now = time.time() if now is None else now
        out: dict[str, dict[str, Any]] = {}
        for sink, state, n, oldest in self.db.query(
                "SELECT sink, state, COUNT(*), MIN(since) FROM events GROUP BY sink, state"):
            per = out.setdefault(sink, {"pending": 0, "delivered": 0, "dead": 0, "oldest_pending_seconds": None})
            if state in per:
                per[state] = n
            if state == "pending" and oldest is not None:
                per["oldest_pending_seconds"] = round(max(0.0, now - oldest), 3)
        return out

    def retry(self, ids: Sequence[str] | None, now: float | None = None) -> int:
        """Dead events back to pending (all of them when `ids` is None); their age for
        max_age_hours counts again from now. Returns the rows re-queued. Their fleet file went
        with the dead-lettering: a retried event is this host's alone (`file` cleared)."""
        now = time.time() if now is None else now
        sql = ("UPDATE events SET state = 'pending', next_at = ?, since = ?, parked = 0, file = NULL "
               "WHERE state = 'dead'")
        args: list[Any] = [now, now]
        if ids is not None:
            sql += f" AND id IN ({', '.join('?' for _ in ids)})"
            args += list(ids)
        return self.db.execute(sql, args)
