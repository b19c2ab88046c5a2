"""Pausing uploads while the API rejects the key (401/403): a configuration problem, not
the file's fault. No file fails; every claimed file waits. The daemon loop logs once a
minute, probes the key now and then, and resumes on a successful probe (a SIGHUP with a
new key probes at once).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from .work import WorkQueue

log = structlog.get_logger("inboxd.pipeline")


class AuthGate:
    def __init__(self, queue: WorkQueue, *, log_every: float = 60.0, probe_every: float = 30.0) -> None:
        self._queue = queue
        self._lock = threading.Lock()
        self.paused_since: float | None = None
        self._last_log = 0.0
        self._last_probe = 0.0
        self._probing = False
        self.log_every, self.probe_every = log_every, probe_every

    @property
    def paused(self) -> bool:
        return self.paused_since is not None

    def rejected(self, exc: BaseException) -> None:
        """A worker got 401/403 (or 407 from the proxy, or a certificate it cannot verify): hold
        every upload back."""
        with self._lock:
            self._queue.pause()
            if self.paused_since is None:
                self.paused_since = time.monotonic()
                self._last_log = time.monotonic()
                self._last_probe = time.monotonic()
                log.error("uploads.paused", reason=str(exc), status=getattr(exc, "status", None),
                          hint="fix the configuration (the API key, the proxy's credentials or the CA bundle "
                               "named in the reason) and send SIGHUP (systemctl reload inboxd); nothing is failed")

    def tick(self, probe: Callable[[], bool], *, now_probe: bool = False) -> None:
        """From the daemon loop: log once a minute while paused, and probe the key in the background."""
        if self.paused_since is None:
            return
        now = time.monotonic()
        if now - self._last_log >= self.log_every:
            self._last_log = now
            log.error("uploads.paused", paused_seconds=round(now - self.paused_since),
                      hint="fix the API key and send SIGHUP; nothing is failed")
        if (now_probe or now - self._last_probe >= self.probe_every) and not self._probing:
            self._last_probe = now
            self._probing = True
            threading.Thread(target=self._probe, args=(probe,), name="key probe", daemon=True).start()

    def _probe(self, probe: Callable[[], bool]) -> None:
        try:
            ok = probe()
        except Exception as exc:  # noqa: BLE001 - a failed probe only means: still paused
            log.warning("uploads.probe_failed", error=str(exc))
            ok = False
        finally:
            self._probing = False
        if ok:
            self.resume("the key was accepted")

    def resume(self, why: str) -> None:
        with self._lock:
            if self.paused_since is None:
                return
            seconds = round(time.monotonic() - self.paused_since, 1)
            self.paused_since = None
            self._queue.resume()
            log.info("uploads.resumed", reason=why, paused_seconds=seconds)
