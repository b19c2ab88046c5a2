"""The daemon's hooks into the operations layer (`inboxd.service`): sd_notify,
metrics and health. The daemon calls these; each is one line where the work happens.

READY once every inbox is watched and the first scan is done; STATUS with a one-line
summary when it changes; WATCHDOG=1 at half the interval systemd asks for, and only while
`daemon.alive()` (every watch and every worker alive, no worker wedged); RELOADING around
SIGHUP; STOPPING on SIGTERM.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import structlog

from ..config import Config
from .running import Running
from .work import Job

log = structlog.get_logger("inboxd.daemon")


class Hooks(Protocol):
    """What the daemon calls at each point of its life. Each hook does nothing unless an
    implementation says otherwise, so `NoService` is this Protocol as it stands."""

    def ready(self, daemon: Running) -> None:
        return None

    def tick(self, daemon: Running) -> None:
        return None

    def observe(self, event: str, job: Job) -> None:
        return None

    def batch_event(self, name: str, fields: dict[str, Any]) -> None:
        return None

    def reloading(self, daemon: Running) -> None:
        return None

    def stopping(self, daemon: Running) -> None:
        return None

    def close(self) -> None:
        return None


class NoService(Hooks):
    """Every hook does nothing (the Protocol's own bodies): the daemon without sd_notify or metrics."""


def wedge_seconds(daemon: Running) -> float:
    """A busy worker without progress (bytes, a stage change) for this long is wedged."""
    return max(10.0, 2 * daemon.config.api.timeout_seconds)


def alive(daemon: Running) -> bool:
    """Every watch (of the inboxes that exist) and every worker alive: the watchdog may be fed."""
    limit = wedge_seconds(daemon)
    workers = all(w.alive() and not w.heartbeat.wedged(limit) for w in daemon.workers)
    return daemon.inboxes.watches_alive() and workers


def snapshot(daemon: Running) -> dict[str, Any]:
    """Per-inbox counts and liveness, for metrics, health, the STATUS line and the watchdog."""
    queued = daemon.queue.queued_by_inbox()
    busy: dict[str, int] = {}
    for w in daemon.workers:
        if w.heartbeat.busy and w.current is not None:
            busy[w.current] = busy.get(w.current, 0) + 1
    limit = wedge_seconds(daemon)
    by_inbox = daemon.ctx.by_inbox
    return {
        "paused": daemon.gate.paused,
        "watches_alive": daemon.inboxes.watches_alive(),
        "inboxes_missing": daemon.inboxes.missing(),
        "workers_alive": all(w.alive() and not w.heartbeat.wedged(limit) for w in daemon.workers),
        "inboxes": {
            s.key: {
                "purpose": s.config.purpose,
                "waiting": daemon.claimer.waiting(s.key),
                "held_open": len(daemon.claimer.tracker.held_open(s.key)),
                "stuck": daemon.claimer.stuck(s.key),
                "queued": queued.get(s.key, 0),
                "in_flight": busy.get(s.key, 0),
                "done": by_inbox.get(s.key, {}).get("archived", 0),
                "failed": by_inbox.get(s.key, {}).get("failed", 0),
                "retried": by_inbox.get(s.key, {}).get("retried", 0),
                "watch_alive": s.watch_ok(),
                "missing": s.missing,
                "held": s.held,  # why nothing is claimed here: its settings differ (fingerprint.py)
            }
            for s in daemon.inboxes
        },
        "busy": daemon.queue.counts()[1],
        "counters": dict(daemon.ctx.counters),
    }


def summary(snapshot: dict[str, Any]) -> str:
    waiting = sum(i["waiting"] + i["queued"] for i in snapshot["inboxes"].values())
    c = snapshot["counters"]
    text = (f"{len(snapshot['inboxes'])} inboxes, waiting {waiting}, in flight {snapshot['busy']}, "
            f"done {c.get('archived', 0)}, failed {c.get('failed', 0)}")
    if snapshot["paused"]:
        text += ", PAUSED: the API rejects the key"
    if snapshot["inboxes_missing"]:
        text += f", missing inbox folders: {len(snapshot['inboxes_missing'])}"
    held = sum(1 for i in snapshot["inboxes"].values() if i.get("held"))
    if held:
        text += f", NOT CLAIMING in {held} inboxes: settings differ from their other daemons'"
    return text


class Notify(NoService):
    """sd_notify through `inboxd.service.Notifier`."""

    def __init__(self, notifier: Any) -> None:
        self.n = notifier
        self._status = ""
        self._last_status = 0.0
        self._last_ping = 0.0

    def ready(self, daemon: Running) -> None:
        self.n.ready()
        self._send_status(daemon, force=True)

    def tick(self, daemon: Running) -> None:
        now = time.monotonic()
        interval = self.n.watchdog_interval
        if interval and now - self._last_ping >= interval:
            if alive(daemon):
                self.n.watchdog_ping()
                self._last_ping = now
        if now - self._last_status >= 1.0:
            self._send_status(daemon)

    def _send_status(self, daemon: Running, force: bool = False) -> None:
        self._last_status = time.monotonic()
        text = summary(snapshot(daemon))
        if force or text != self._status:
            self._status = text
            self.n.status(text)

    def reloading(self, daemon: Running) -> None:
        self.n.reloading()

    def reloaded(self, daemon: Running) -> None:
        self.n.ready()

    def stopping(self, daemon: Running) -> None:
        self.n.stopping()


class Service(Notify):
    """sd_notify, and when `daemon.metrics_address` is set, Prometheus metrics and /healthz."""

    def __init__(self, notifier: Any, config: Config) -> None:
        from ..service import Metrics

        super().__init__(notifier)
        self.config = config
        self.metrics = Metrics()
        self.server: Any = None
        self.daemon: Running | None = None
        self.started = time.time()
        self.last_success: dict[str, float] = {}
        self._snapshot: dict[str, Any] | None = None

    def ready(self, daemon: Running) -> None:
        self.daemon = daemon
        self._refresh(daemon)
        if not getattr(self, "_events_watched", False):  # the event sinks' series (once: ready follows reloads)
            self._events_watched = True
            self.metrics.watch_events(daemon.events.figures)
        address = self.config.daemon.metrics_host_port
        if address is not None and self.server is None:
            from ..service import MetricsServer
            from .overview import LiveStatus

            page = LiveStatus(lambda: self.config, lambda: self._snapshot, self.health, self.started)
            self.server = MetricsServer(address[0], address[1], self.metrics, self.health, page=page,
                                        token_file=self.config.daemon.status_token_file).start()
            log.info("metrics.listening", address=f"{address[0]}:{self.server.port}",
                     status_page=self.server.page_said)
        super().ready(daemon)

    def tick(self, daemon: Running) -> None:
        super().tick(daemon)
        if time.monotonic() - getattr(self, "_last_refresh", 0.0) >= 1.0:
            self._refresh(daemon)

    def _refresh(self, daemon: Running) -> None:
        self._last_refresh = time.monotonic()
        snap = snapshot(daemon)
        self._snapshot = snap
        m = self.metrics
        for key, inbox in snap["inboxes"].items():
            m.set_queue_depth(key, inbox["waiting"] + inbox["queued"])
            m.set_watch_alive(key, bool(inbox["watch_alive"]) and not inbox["missing"])
            m.set_in_flight(key, inbox["in_flight"])
        if daemon.ctx.batches is not None:
            m.set_batch_jobs(daemon.ctx.batches.counts())
        m.set_paused(snap["paused"])

    def observe(self, event: str, job: Job) -> None:
        inbox = str(job.inbox.path)
        row = self.daemon.journal.get(str(job.claim)) if self.daemon is not None else None
        if event == "archived":
            existing = row is not None and row.method == "existing"
            seconds = None
            if row is not None and row.started_at and row.finished_at:
                seconds = max(0.0, row.finished_at - row.started_at)
            self.metrics.file_finished(inbox, "existing" if existing else "done",
                                       bytes=0 if existing or row is None else (row.bytes or 0), seconds=seconds)
            now = time.time()
            self.last_success[inbox] = now
            self.metrics.set_last_success(inbox, now)
        elif event == "failed":
            self.metrics.file_finished(inbox, "failed")

    def batch_event(self, name: str, fields: dict[str, Any]) -> None:
        """The batch poller's events: results delivered (drop to results), downloads."""
        if name == "batch.delivered":
            seconds = fields.get("seconds")
            self.metrics.batch_delivered(float(seconds) if isinstance(seconds, (int, float)) else None)
        elif name == "batch.download":
            self.metrics.batch_download(str(fields.get("outcome", "?")))

    def api_event(self, event: str, fields: dict[str, Any]) -> None:
        """The API client's observer: errors and retries, by route."""
        if event == "api_error":
            self.metrics.api_error(str(fields.get("route")), fields.get("status", "?"))
        elif event == "retry":
            self.metrics.retry(str(fields.get("route")))

    def health(self) -> tuple[bool, dict[str, Any]]:
        from ..service import health_verdict

        snap = self._snapshot or {"paused": False, "watches_alive": True, "inboxes_missing": [], "inboxes": {}}
        waiting = sum(i["waiting"] + i["queued"] + i["in_flight"] for i in snap["inboxes"].values())
        last = max(self.last_success.values()) if self.last_success else None
        return health_verdict(paused=snap["paused"], watches_alive=snap["watches_alive"],
                              inboxes_missing=snap["inboxes_missing"], waiting=waiting, last_success=last,
                              started=self.started, now=time.time(),
                              stale_seconds=self.config.daemon.health_stale_seconds,
                              stuck={p: why for i in snap["inboxes"].values() for p, why in i.get("stuck", {}).items()},
                              held={k: i["held"] for k, i in snap["inboxes"].items() if i.get("held")},
                              undeliverable=self._undeliverable(),
                              events_behind=self.daemon.events.problems() if self.daemon is not None else None)

    def _undeliverable(self) -> list[str]:
        """Batch results the poller cannot write into their outbox, and why."""
        poller = self.daemon.ctx.poller if self.daemon is not None else None
        return poller.problems() if poller is not None else []

    def reloading(self, daemon: Running) -> None:
        super().reloading(daemon)

    def stopping(self, daemon: Running) -> None:
        super().stopping(daemon)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def make_service(config: Config) -> Any:
    from ..service import Notifier

    return Service(Notifier.from_env(), config)
