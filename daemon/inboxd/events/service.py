"""The events of a running daemon: recording (hooks into the stages that publish sidecars),
one sender thread per sink, and the figures for metrics, /healthz and status.

Recording. `on_file_finished` runs inside the journal transaction that writes a file's
`archived` or `failed` stage, `on_batch_delivered` inside the batch store's one that writes
`delivered`: the event rows commit with the stage or not at all. The sidecar is renamed into
place before that commit (done/ says it first), so a crash between the two leaves a stage
that the next start writes again (`finish_orphan`, the poller's redelivery): the hook runs
then. A manifest a survivor moves for a dead peer has no row here and is recorded by
`record_sidecar`. An exception in a hook would roll the stage back: only database errors
may leave it (the event file is best effort, `fleet.py`).

Delivery. Each sink's `Sender` takes the sink's oldest pending event, sends it, and on a
failure retries it after a backoff (doubling from `backoff_seconds` to `max_backoff_seconds`,
with jitter; a `Retry-After` answer wins) under the same id; after `max_age_hours` without
success the event is dead-lettered. Every failure but a 4xx holds the sink (order kept); a
4xx parks that event and the sink goes on. A slow or dead sink holds only its own thread:
the uploads never wait for an event, and other sinks have their own threads.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from ..api import Network, resolve_network
from ..config import Config, ConfigError, EventSinkConfig
from ..retry import Backoff
from ..state.db import Database
from ..state.sidecars import ERROR_SUFFIX, MANIFEST_SUFFIX
from . import payload
from .fleet import Intent, remove_event_file, remove_intent, take_over, write_event_file, write_intent
from .signing import read_secret
from .sinks import CommandSink, Outcome, Sink, WebhookSink
from .store import EventRow, EventStore, NewEvent, adopt, insert

log = structlog.get_logger("inboxd.events")

IDLE_POLL = 1.0  # a sender with nothing due looks again this often (retried events, `inboxd events retry`)
# a record wakes its senders from inside the transaction, before the commit that makes it
# visible (which may carry more rows and their event files): after a wake-up, a sender with
# nothing visible yet looks again every COMMIT_POLL for up to COMMIT_WAIT
COMMIT_POLL = 0.02
COMMIT_WAIT = 2.0
BATCH = 32  # events read per query, and delivered marks per commit at most
PRUNE_EVERY = 3600.0


def make_sink(config: EventSinkConfig, network: Network) -> Sink:
    if config.url is not None:
        return WebhookSink(config, read_secret(config), network)
    return CommandSink(config)


class Counters:
    """Per process, for the Prometheus counters (reset at start, as counters may be)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered: dict[str, int] = {}
        self.failed: dict[tuple[str, str], int] = {}
        self.dead: dict[str, int] = {}

    def add(self, table: dict[Any, int], key: Any) -> None:
        with self.lock:
            table[key] = table.get(key, 0) + 1


class Sender(threading.Thread):
    def __init__(self, events: Events, sink: Sink) -> None:
        super().__init__(name=f"events:{sink.label}"[:40], daemon=True)
        self.events, self.sink, self.label = events, sink, sink.label
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._eager_until = 0.0  # after a wake-up: look again soon (COMMIT_POLL) until then

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._round()
            except sqlite3.Error as exc:
                log.warning("events.store_error", sink=self.label, error=str(exc), retry_in=1.0)
                self._sleep(1.0)
            except Exception as exc:  # noqa: BLE001 - the sender must not die: say it, wait, go on
                log.exception("events.sender_error", sink=self.label, error=str(exc), retry_in=1.0)
                self._sleep(1.0)

    def _round(self) -> None:
        """Send the sink's next events in order, until one fails or waits; their `delivered`
        marks commit together (a kill before that commit sends them again, same ids)."""
        store = self.events.store
        now = time.time()
        rows = store.heads(self.label, now, BATCH)
        if not rows:
            self.events.tick(now)  # housekeeping while idle: delivered events past their keep go
            parked = store.next_parked(self.label)
            idle = COMMIT_POLL if now < self._eager_until else IDLE_POLL
            self._sleep(idle if parked is None else min(idle, parked - now))
            return
        sent: list[EventRow] = []
        try:
            for row in rows:
                if self.stopping.is_set():
                    return
                if row.next_at > time.time():  # the sink is held until this one's retry: order
                    if not sent:
                        self._sleep(min(IDLE_POLL, row.next_at - time.time()))
                    return
                if row.file and not os.path.exists(row.file):
                    store.moved(row)  # taken over by another host (fleet.py): it sends it
                    log.info("event.moved", sink=self.label, id=row.id, source=row.source)
                    continue
                outcome = self.sink.send(row.id, row.body)
                if outcome.ok:
                    sent.append(row)
                    continue
                self._delivered(sent)
                sent = []
                self._failed(row, outcome)
                return  # after a failure, ask again: a parked event lets the next ones by, a held sink waits
        finally:
            self._delivered(sent)

    def _sleep(self, seconds: float) -> None:
        if self.wake.wait(max(0.0, seconds)):
            self.wake.clear()
            self._eager_until = time.time() + COMMIT_WAIT  # woken by a record: its commit lands soon

    def _delivered(self, rows: list[EventRow]) -> None:
        if not rows:
            return
        now = time.time()
        for row in self.events.store.delivered_many(rows, now):
            remove_event_file(row.file)
        counters = self.events.counters
        for row in rows:
            counters.add(counters.delivered, self.label)
            log.info("event.delivered", sink=self.label, id=row.id, type=row.type, source=row.source,
                     attempts=row.attempts + 1, seconds=round(now - row.created_at, 3))

    def _failed(self, row: EventRow, outcome: Outcome) -> None:
        store, counters, cfg = self.events.store, self.events.counters, self.sink.config
        now = time.time()
        counters.add(counters.failed, (self.label, outcome.reason))
        if now - row.since >= cfg.max_age_hours * 3600:
            if store.dead(row, outcome.error):
                remove_event_file(row.file)
            counters.add(counters.dead, self.label)
            log.error("event.dead", sink=self.label, id=row.id, type=row.type, source=row.source,
                      attempts=row.attempts + 1, error=outcome.error,
                      hint="inboxd events --dead lists it; inboxd events retry sends it again")
            return
        delay = Backoff(cfg.backoff_seconds, cfg.max_backoff_seconds).delay(row.attempts + 1)
        if outcome.retry_after is not None:
            delay = outcome.retry_after
        store.failed(row, next_at=now + delay, error=outcome.error, parked=outcome.parked)
        log.warning("event.retry", sink=self.label, id=row.id, type=row.type, attempts=row.attempts + 1,
                    reason=outcome.reason, error=outcome.error, retry_in=round(delay, 3))


class Events:
    """The daemon's events: `record_*` (the hooks), `start` / `stop` (the senders), `backlog`."""

    def __init__(self, config: Config, db: Database, claimer: str | None,
                 make: Callable[[EventSinkConfig, Network], Sink] = make_sink) -> None:
        self.store = EventStore(db)
        self.claimer = claimer
        self.counters = Counters()
        self.config = config
        self._make = make
        self.senders: dict[str, Sender] = {}
        self._wants: dict[str, list[str]] = {}
        self._inbox_work: dict[str, Path] = {}
        self._next_prune = 0.0
        self.configure(config)

    @classmethod
    def attach(cls, config: Config, journal: Any, batches: Any, claimer: str | None) -> Events:
        """The daemon's events: recorded inside the journal's and the batch store's commits that
        publish a sidecar (their `on_finished` and `on_delivered` hooks)."""
        events = cls(config, journal.db, claimer)
        journal.on_publishing.append(events.on_publishing)
        journal.on_finished(events.on_file_finished)
        batches.on_delivered(events.on_batch_delivered)
        return events

    def configure(self, config: Config) -> None:
        """The sinks of `config` (at start; a reload calls `reload`): ConfigError if a secret
        cannot be read, and then nothing has changed."""
        network = resolve_network(config.api)
        sinks = [self._make(s, network) for s in config.events]
        self.stop()
        self.config = config
        self._sinks = sinks
        wants: dict[str, list[str]] = {}
        for s in config.events:
            for t in s.types:
                wants.setdefault(t, []).append(s.label)
        self._wants = wants
        self._inbox_work = {str(i.path): i.work for i in config.inboxes}

    @property
    def enabled(self) -> bool:
        return bool(self.config.events)

    def start(self) -> None:
        for sink in self._sinks:
            sender = Sender(self, sink)
            self.senders[sink.label] = sender
            sender.start()
        if self._sinks:
            log.info("events.started", sinks=[s.label for s in self._sinks])

    def stop(self, timeout: float = 5.0) -> None:
        for s in self.senders.values():
            s.stop()
        deadline = time.monotonic() + timeout
        for s in self.senders.values():
            s.join(max(0.0, deadline - time.monotonic()))
            s.sink.close()
        self.senders.clear()

    def reload(self, config: Config) -> bool:
        """New sinks from a reloaded config (made first: a secret that cannot be read keeps the
        running senders, says so and returns False); the old senders stop, pending rows stay
        for the new ones."""
        try:
            self.configure(config)
        except ConfigError as exc:
            log.error("config.rejected", error=str(exc), hint="the running configuration is kept")
            return False
        self.start()
        return True

    def _wake(self, sinks: Sequence[str]) -> None:
        for label in sinks:
            sender = self.senders.get(label)
            if sender is not None:
                sender.wake.set()

    # --- recording ----------------------------------------------------------------------

    def _new(self, conn: sqlite3.Connection | None, kind: str, source: str, key: str, inbox: str | None,
             body: dict[str, Any], when: float, *, fleet: bool = True) -> None:
        """Record one publication. `key` tells it from a later sidecar of the same path (done/
        may be emptied and a name come again): the path and the claim's time, or the job's id."""
        sinks = self._wants.get(kind, [])
        if not sinks:
            return
        if self.store.recorded(key, conn):
            return  # a stage written again (a delivery resumed after a crash): its event exists, no second file
        event = NewEvent(id=payload.new_id(), type=kind, source=source, key=key, inbox=inbox,
                         body=payload.encode(body), created_at=when)
        work = self._inbox_work.get(inbox or "")
        if fleet and work is not None and self.claimer:
            try:
                event = NewEvent(**{**event.__dict__, "file": write_event_file(work, self.claimer, event)})
            except OSError as exc:  # best effort: the journal row is the record
                log.warning("event.file_unwritable", inbox=inbox, id=event.id, error=str(exc))
        if conn is not None:
            insert(conn, event, sinks)
        else:
            self.store.record(event, sinks)
        self._wake(sinks)

    def on_publishing(self, row: Any, sidecar: Path) -> None:
        """The journal's publishing hook, just before a file's sidecar is put in place: the
        fleet's intent (fleet.py), so that a survivor announces it if we die before the commit."""
        kind = "file.archived" if sidecar.name.endswith(MANIFEST_SUFFIX) else "file.failed"
        work = self._inbox_work.get(row.inbox)
        if not self._wants.get(kind) or work is None or self.claimer is None or not row.sidecar:
            return
        try:
            write_intent(work, self.claimer, Intent(str(sidecar), _file_key(str(sidecar), json.loads(row.sidecar)),
                                                    row.inbox))
        except (OSError, ValueError) as exc:  # best effort, as the event file
            log.warning("event.intent_unwritable", inbox=row.inbox, name=row.name, error=str(exc))

    def on_file_finished(self, conn: sqlite3.Connection, row: Any) -> None:
        """The journal's on_finished hook: a file's manifest or error sidecar is published.
        Only a database error may leave it (it fails the commit anyway): anything else would
        roll back the stage, and with it every stage waiting for that commit, again and again."""
        if not row.target or not row.sidecar:
            return
        kind = "file.archived" if row.stage == "archived" else "file.failed"
        if not self._wants.get(kind):
            return
        when = time.time()
        try:
            sidecar = json.loads(row.sidecar)
            if kind == "file.archived":
                path = row.target + MANIFEST_SUFFIX
                body = payload.file_archived(path, sidecar, inbox=row.inbox, name=row.name, when=when)
            else:
                path = row.target + ERROR_SUFFIX
                body = payload.file_failed(path, sidecar, inbox=row.inbox, name=row.name, when=when)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.error("event.unrecordable", inbox=row.inbox, name=row.name, stage=row.stage, error=str(exc))
            return
        key = _file_key(path, sidecar)
        self._new(conn, kind, path, key, row.inbox, body, when)
        work = self._inbox_work.get(row.inbox)
        if work is not None and self.claimer is not None:
            remove_intent(work, self.claimer, key)  # the event file (if any) and the row carry it now

    def on_batch_delivered(self, conn: sqlite3.Connection, rec: Any) -> None:
        """The batch store's on_delivered hook: a batch.json is published."""
        if not self._wants.get("batch.delivered") or not rec.outbox or not rec.stem:
            return
        path = str(Path(rec.outbox) / f"{rec.stem}.batch.json")
        try:
            sidecar = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            sidecar = {"batch": {"id": rec.batch_id, "status": rec.status, "input_file_id": rec.input_file_id},
                       "input": {"path": rec.input_path}}
        when = time.time()
        try:
            body = payload.batch_delivered(path, sidecar, inbox=rec.inbox, when=when)
        except Exception as exc:  # noqa: BLE001 - as on_file_finished: never roll the stage back
            log.error("event.unrecordable", inbox=rec.inbox, batch=path, error=str(exc))
            return
        self._new(conn, "batch.delivered", path, f"{path}@{rec.batch_id}", rec.inbox, body, when)

    def record_sidecar(self, inbox: str, path: Path) -> None:
        """A sidecar published without a stage of ours (a survivor finishing a dead peer's
        manifest): recorded on its own, once."""
        try:
            sidecar = json.loads(path.read_text(encoding="utf-8"))
            when = time.time()
            name = (sidecar.get("source") or {}).get("name") or path.name
            key = _file_key(str(path), sidecar)
            if path.name.endswith(MANIFEST_SUFFIX):
                kind, body = "file.archived", payload.file_archived(str(path), sidecar, inbox=inbox, name=name,
                                                                    when=when)
            else:
                kind, body = "file.failed", payload.file_failed(str(path), sidecar, inbox=inbox, name=name, when=when)
        except (OSError, ValueError, AttributeError) as exc:
            log.error("event.unrecordable", inbox=inbox, sidecar=str(path), error=str(exc))
            return
        self._new(None, kind, str(path), key, inbox, body, when)

    def take_over(self, inbox: str, work: Path, dead: Callable[[Path], bool]) -> int:
        """The pending events of dead claimers of this inbox (fleet.py), now ours."""
        if self.claimer is None:
            return 0
        taken, intents = take_over(work, self.claimer, dead)
        for event in taken:
            sinks = self._wants.get(event.type, [])
            if not sinks:
                remove_event_file(event.file)
                continue
            with self.store.db.transaction() as tx:
                adopt(tx, event, sinks)
            self._wake(sinks)
            log.info("event.taken_over", inbox=inbox, id=event.id, type=event.type, source=event.source)
        for intent in intents:  # published by the dead claimer, not recorded: announced by us
            if os.path.exists(intent.source) and not self.store.recorded(intent.key):
                self.record_sidecar(inbox, Path(intent.source))
                log.info("event.taken_over", inbox=inbox, source=intent.source, how="published, not yet recorded")
        return len(taken) + len(intents)

    # --- figures ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            try:
                self.store.prune(now)
            except sqlite3.Error as exc:
                log.warning("events.prune_failed", error=str(exc))

    def backlog(self) -> dict[str, dict[str, Any]]:
        """Per configured sink: pending, delivered, dead, the oldest pending age, and `behind`
        (that age past the sink's unhealthy_after_seconds)."""
        data = self.store.backlog()
        out = {}
        for s in self.config.events:
            per = data.get(s.label, {"pending": 0, "delivered": 0, "dead": 0, "oldest_pending_seconds": None})
            age = per.get("oldest_pending_seconds")
            out[s.label] = {**per, "behind": age is not None and age > s.unhealthy_after_seconds}
        return out

    def figures(self) -> dict[str, Any]:
        """For the metrics (`service.metrics.EventFigures`): every configured sink appears."""
        pending = {s.label: (0, 0.0) for s in self.config.events}
        pending.update(self.store.pending())
        with self.counters.lock:
            return {"pending": pending, "delivered": dict(self.counters.delivered),
                    "failed": dict(self.counters.failed), "dead": dict(self.counters.dead)}

    def problems(self) -> list[str]:
        """/healthz: each configured sink whose oldest pending event is older than its threshold."""
        pending = self.store.pending()
        out = []
        for s in self.config.events:
            _, age = pending.get(s.label, (0, 0.0))
            if age > s.unhealthy_after_seconds:
                out.append(f"event sink {s.label}: the oldest pending event waits for {int(age)} s "
                           f"(unhealthy_after_seconds = {s.unhealthy_after_seconds:g})")
        return out


def _file_key(path: str, sidecar: dict[str, Any]) -> str:
    """A file sidecar's publication: its path and its own time (the manifest's upload start, the
    error sidecar's time), the same from the journal row, the published file or an intent."""
    when = (sidecar.get("upload") or {}).get("started_at") or sidecar.get("time")
    return f"{path}@{when}"


def ping(config: Config, timeout: float | None = None) -> list[dict[str, Any]]:
    """`inboxd config check --ping`: one `ping` event to each sink, now, without the journal."""
    network = resolve_network(config.api)
    out = []
    for cfg in config.events:
        if timeout is not None:
            cfg = cfg.model_copy(update={"timeout_seconds": timeout})
        entry: dict[str, Any] = {"sink": cfg.label}
        try:
            sink = make_sink(cfg, network)
        except Exception as exc:  # noqa: BLE001 - a ConfigError (the secret): reported per sink
            out.append({**entry, "ok": False, "reason": "config", "error": str(exc)})
            continue
        started = time.monotonic()
        try:
            outcome = sink.send(payload.new_id(), payload.encode(payload.ping(cfg.label, time.time())))
        finally:
            sink.close()
        out.append({**entry, "ok": outcome.ok, "reason": outcome.reason or None, "error": outcome.error or None,
                    "seconds": round(time.monotonic() - started, 3)})
    return out
