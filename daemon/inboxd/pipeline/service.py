"""The daemon's hooks into the operations layer (`inboxd.service`, issue 6): sd_notify,
metrics and health. The daemon calls these; each is one line where the work happens.

READY once every inbox is watched and the first scan is done; STATUS with a one-line
summary when it changes; WATCHDOG=1 at half the interval systemd asks for, and only while
`daemon.alive()` (every watch and every worker alive, no worker wedged); RELOADING around
SIGHUP; STOPPING on SIGTERM.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from ..config import Config

log = structlog.get_logger("inboxd.daemon")


class NoService:
    def ready(self, daemon: Any) -> None: ...
    def tick(self, daemon: Any) -> None: ...
    def observe(self, event: str, job: Any) -> None: ...
    def reloading(self, daemon: Any) -> None: ...
    def stopping(self, daemon: Any) -> None: ...
    def close(self) -> None: ...


def summary(snapshot: dict[str, Any]) -> str:
    waiting = sum(i["waiting"] + i["queued"] for i in snapshot["inboxes"].values())
    c = snapshot["counters"]
    text = (f"{len(snapshot['inboxes'])} inboxes, waiting {waiting}, in flight {snapshot['busy']}, "
            f"done {c.get('archived', 0)}, failed {c.get('failed', 0)}")
    if snapshot["paused"]:
        text += ", PAUSED: the API rejects the key"
    if snapshot["inboxes_missing"]:
        text += f", missing inbox folders: {len(snapshot['inboxes_missing'])}"
    return text


class Notify(NoService):
    """sd_notify through `inboxd.service.Notifier`."""

    def __init__(self, notifier: Any) -> None:
        self.n = notifier
        self._status = ""
        self._last_status = 0.0
        self._last_ping = 0.0

    def ready(self, daemon: Any) -> None:
        self.n.ready()
        self._send_status(daemon, force=True)

    def tick(self, daemon: Any) -> None:
        now = time.monotonic()
        interval = self.n.watchdog_interval
        if interval and now - self._last_ping >= interval:
            if daemon.alive():
                self.n.watchdog_ping()
                self._last_ping = now
        if now - self._last_status >= 1.0:
            self._send_status(daemon)

    def _send_status(self, daemon: Any, force: bool = False) -> None:
        self._last_status = time.monotonic()
        text = summary(daemon.snapshot())
        if force or text != self._status:
            self._status = text
            self.n.status(text)

    def reloading(self, daemon: Any) -> None:
        self.n.reloading()

    def reloaded(self, daemon: Any) -> None:
        self.n.ready()

    def stopping(self, daemon: Any) -> None:
        self.n.stopping()


def make_service(config: Config) -> Any:
    try:
        from ..service import Notifier
    except ImportError:
        return NoService()
    return Notify(Notifier.from_env())
