"""The daemon loop: watch -> ready -> claim, then hand jobs to the workers.

The loop owns the watches, the readiness tracker and the ready sets; workers own the jobs.
One pass of the loop: take the paths the observers reported, look at each again (lstat),
rescan when due or when events may have been lost, look again at files whose settle time
ran out, check that every watch is alive, claim ready files round-robin across inboxes
while fewer than `capacity` are in flight, and tick the pause gate and the service hooks.
Signals only set flags; the loop acts on them.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr

from ..config import Config, ConfigError, InboxConfig, load_config, resolve_api_key
from ..log import register_secret
from ..watch.observers import hook_overflow
from ..watch.queue import PathQueue
from ..watch.readiness import ReadinessTracker
from ..watch.scan import inspect_path, scan_inbox
from .archive import finish_orphan
from .claim import claimer_alive, new_claimer
from .inboxes import InboxState
from .journal import Journal
from .pause import AuthGate
from .process import Context
from .work import Job, WorkQueue
from .workers import Worker

log = structlog.get_logger("inboxd.daemon")

EXIT_OK, EXIT_FAILED = 0, 1
TICK = 0.2


class Fatal(Exception):
    """The daemon cannot go on (a watch died): exit non-zero so systemd restarts it."""


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        key: SecretStr,
        *,
        once: bool = False,
        make_client: Callable[[Config, SecretStr], Any],
        resolve_key: Callable[[Config], tuple[SecretStr, str]] = lambda c: resolve_api_key(c.api),
        adjust_config: Callable[[Config], Config] = lambda c: c,
        service: Any = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.once = once
        self.make_client = make_client
        self.adjust_config = adjust_config
        self.resolve_key = resolve_key
        self.service = service
        self.claimer = new_claimer()
        self.paths = PathQueue()
        self.tracker = ReadinessTracker(config.daemon.settle_seconds)
        self.queue = WorkQueue()
        self.journal = Journal(config.daemon.state_dir)
        self.gate = AuthGate(self.queue)
        self.cancel = threading.Event()
        self.ctx = Context(
            config=config, client=make_client(config, key), journal=self.journal, queue=self.queue,
            cancel=self.cancel, on_auth_rejected=self.gate.rejected, observe=self._observe,
        )
        self.inboxes: dict[str, InboxState] = {}
        self.retired: list[InboxState] = []
        self.workers: list[Worker] = []
        self.capacity = max(16, 4 * config.daemon.workers)
        self._stop = False
        self._reload = False
        self._next_rescan = 0.0
        self._probe_now = False
        self._claims_paused_until = 0.0
        self.started = time.monotonic()

    # --- signals ---------------------------------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_term(self, signum: int, _frame: Any) -> None:
        self._stop = True

    def _on_hup(self, signum: int, _frame: Any) -> None:
        self._reload = True

    # --- start -----------------------------------------------------------------------------

    def start(self) -> None:
        hook_overflow(self.paths)
        for inbox in self.config.inboxes:
            self._add_inbox(inbox)
        self._recover_orphan_rows()
        for i in range(self.config.daemon.workers):
            w = Worker(self.ctx, i, on_done=self.paths.wake)
            w.start()
            self.workers.append(w)
        self._next_rescan = time.monotonic() + self.config.daemon.rescan_seconds
        log.info("daemon.started", claimer=self.claimer, inboxes=[str(i.path) for i in self.config.inboxes],
                 workers=self.config.daemon.workers, once=self.once, base_url=self.config.api.base_url)

    def _add_inbox(self, config: InboxConfig) -> None:
        state = InboxState(config, self.claimer)
        state.prepare()
        self.inboxes[state.key] = state
        state.start_watch(self.paths)  # schedule the watch first, then scan
        self._recover(state)
        self._scan(state)
        log.info("inbox.watching", inbox=state.key, purpose=config.purpose, observer=config.observer,
                 validate=config.validate_mode, on_success=config.on_success)

    def _recover(self, state: InboxState) -> None:
        """Take over the claimed files of daemons that are gone (ourselves before a restart)."""
        for t in state.area.take_over_stale():
            row = self.journal.get(str(t.old))
            if row is not None:
                self.journal.move(str(t.old), str(t.new))
                stage = row.stage
            else:
                self.journal.claimed(str(t.new), state.key, t.name)
                stage = "claimed"
            log.info("file.recovered", inbox=state.key, name=t.name, stage=stage, claim=str(t.new))
            self.queue.put(Job(state.config, t.new, t.name))

    def _recover_orphan_rows(self) -> None:
        """Rows whose claimed file is gone and whose claimer is gone: finish or forget them."""
        for row in self.journal.open_rows():
            claim = Path(row.claim)
            if os.path.lexists(claim) or claimer_alive(claim.parent):
                continue
            outcome = finish_orphan(self.journal, row)
            log.info("file.orphan", inbox=row.inbox, name=row.name, stage=row.stage, outcome=outcome)

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        self.start()
        if self.service is not None:
            self.service.ready(self)
        try:
            while not self._stop:
                try:
                    self._tick()
                except Fatal:
                    raise
                except Exception as exc:  # noqa: BLE001 - say it, wait, go on: never go deaf
                    log.exception("daemon.error", error=str(exc), retry_in=1.0)
                    time.sleep(1.0)
                if self.once and self._once_finished():
                    break
        except Fatal as exc:
            log.critical("daemon.fatal", error=str(exc))
            self._shutdown(grace=min(5.0, self.config.daemon.stop_grace_seconds))
            return EXIT_FAILED
        code = self._shutdown(grace=self.config.daemon.stop_grace_seconds)
        if self.once:
            return EXIT_FAILED if self.ctx.counters.get("failed", 0) or self.gate.paused else EXIT_OK
        return code

    def _tick(self) -> None:
        if self._reload:
            self._reload = False
            self.reload()
        timeout = TICK
        due = self.tracker.next_due()
        if due is not None:
            timeout = max(0.0, min(timeout, due - time.monotonic()))
        items, overflowed = self.paths.take_all(timeout)
        for key, path, moved in items:
            state = self.inboxes.get(key)
            if state is not None:
                self._look(state, path, moved)
        now = time.monotonic()
        if overflowed or now >= self._next_rescan:
            if overflowed:
                log.warning("watch.rescan", reason="events may have been lost")
            self._next_rescan = now + self.config.daemon.rescan_seconds
            self._rescan_all()
        for path in self.tracker.due():
            state = self._inbox_of(path)
            if state is None:
                self.tracker.forget(path)
            else:
                self._look(state, path, False)
        self._check_watches()
        self._claim_ready()
        self.gate.tick(self._probe_key, now_probe=self._probe_now)
        self._probe_now = False
        if self.service is not None:
            self.service.tick(self)

    def _inbox_of(self, path: str) -> InboxState | None:
        return self.inboxes.get(os.path.dirname(path))

    def _look(self, state: InboxState, path: str, moved_in: bool) -> None:
        entry = inspect_path(path, state.config.patterns, state.skip)
        if entry is None:
            self.tracker.forget(path)
            state.ready.pop(path, None)
            return
        if entry.kind != "regular":
            self.tracker.forget(path)
            state.ready[path] = None  # claimed and sent to failed/, never opened
            return
        if state.config.on_success == "keep" and self.journal.is_kept(path, entry.st.st_size, entry.st.st_mtime_ns):
            self.tracker.forget(path)
            return
        if self.tracker.observe(path, entry.st, moved_in=moved_in):
            self.tracker.forget(path)
            state.ready[path] = None

    def _scan(self, state: InboxState) -> None:
        try:
            entries = scan_inbox(state.config.path, state.config.patterns, state.skip)
        except OSError:
            return  # a missing folder is noticed by _check_watches
        for e in entries:
            self._look(state, e.path, False)
        state.scanned = True

    def _rescan_all(self) -> None:
        for state in list(self.inboxes.values()):
            if not state.missing:
                self._scan(state)
                self._recover(state)

    def _check_watches(self) -> None:
        for state in list(self.inboxes.values()):
            if state.missing:
                if state.folder_exists():
                    state.missing = False
                    state.prepare()
                    state.start_watch(self.paths)
                    self._scan(state)
                    log.warning("inbox.restored", inbox=state.key)
                continue
            if state.watch_ok():
                continue
            if not state.folder_exists() or (state.watch is not None and not state.watch.folder_present()):
                state.missing = True
                state.stop_watch()
                state.ready.clear()
                self.tracker.forget_under(state.key)
                log.error("inbox.missing", inbox=state.key,
                          hint="the inbox folder is gone; it is watched again once it is recreated")
                continue
            raise Fatal(f"the watch of {state.key} died; exiting so that the service manager restarts inboxd")

    def _claim_ready(self) -> None:
        if self.gate.paused or time.monotonic() < self._claims_paused_until:
            return
        while True:
            queued, busy = self.queue.counts()
            if queued + busy >= self.capacity:
                return
            claimed_any = False
            for state in list(self.inboxes.values()):
                if not state.ready:
                    continue
                path, _ = state.ready.popitem(last=False)
                self._claim(state, path)
                claimed_any = True
                queued, busy = self.queue.counts()
                if queued + busy >= self.capacity:
                    return
            if not claimed_any:
                return

    def _claim(self, state: InboxState, path: str) -> None:
        try:
            dst = state.area.claim(Path(path))
        except OSError as exc:
            log.error("file.claim_failed", inbox=state.key, name=os.path.basename(path), error=str(exc))
            return
        if dst is None:
            return  # another daemon won it, or it went away
        name = os.path.basename(path)
        try:
            self.journal.claimed(str(dst), state.key, name)
        except Exception as exc:  # noqa: BLE001 - the state disk is full or broken: give it back
            back = state.area.unclaim(dst, state.config.path, name)
            log.error("journal.unwritable", inbox=state.key, name=name, error=str(exc), given_back=back,
                      state_dir=str(self.config.daemon.state_dir), retry_in=2.0)
            self._claims_paused_until = time.monotonic() + 2.0
            if not back:
                self.queue.put(Job(state.config, dst, name), delay=2.0)
            return
        log.info("file.claimed", inbox=state.key, name=name, claim=str(dst))
        self.queue.put(Job(state.config, dst, name))

    def _probe_key(self) -> bool:
        result = self.ctx.client.check_key()
        return result is None or bool(result)

    def _observe(self, event: str, job: Job) -> None:
        if self.service is not None:
            self.service.observe(event, job)

    def _once_finished(self) -> bool:
        if self.gate.paused:
            log.error("daemon.once_paused", reason="the API rejects the key; nothing more can be done now")
            return True
        if not all(s.scanned or s.missing for s in self.inboxes.values()):
            return False
        queued, busy = self.queue.counts()
        waiting = any(s.ready for s in self.inboxes.values()) or self.tracker.pending()
        return not waiting and queued == 0 and busy == 0

    # --- reload ----------------------------------------------------------------------------

    def reload(self) -> None:
        if self.config_path is None:
            return
        if self.service is not None:
            self.service.reloading(self)
        try:
            self._reload_config()
        finally:
            if self.service is not None:
                self.service.ready(self)

    def _reload_config(self) -> None:
        try:
            new = self.adjust_config(load_config(self.config_path))
            key, source = self.resolve_key(new)
        except ConfigError as exc:
            log.error("config.rejected", error=str(exc), hint="the running configuration is kept")
            return
        register_secret(key.get_secret_value())
        old = self.config
        self.config = new
        self.ctx.config = new
        self.ctx.client = self.make_client(new, key)
        self.tracker.settle_seconds = new.daemon.settle_seconds
        old_paths = {str(i.path): i for i in old.inboxes}
        new_paths = {str(i.path): i for i in new.inboxes}
        for path in old_paths.keys() - new_paths.keys():
            state = self.inboxes.pop(path)
            state.stop_watch()
            self.tracker.forget_under(path)
            self.retired.append(state)
            log.info("inbox.removed", inbox=path)
        for path in new_paths.keys() & old_paths.keys():
            if new_paths[path] != old_paths[path]:
                state = self.inboxes[path]
                state.config = new_paths[path]
                state.start_watch(self.paths)
                self._scan(state)
                log.info("inbox.changed", inbox=path)
        for path in new_paths.keys() - old_paths.keys():
            try:
                self._add_inbox(new_paths[path])
            except OSError as exc:
                log.error("inbox.unusable", inbox=path, error=str(exc))
        restart = [k for k in ("workers", "state_dir") if getattr(old.daemon, k) != getattr(new.daemon, k)]
        log.info("config.reloaded", key_source=source, restart_needed_for=restart or None)
        self._probe_now = True

    # --- stop ------------------------------------------------------------------------------

    def _shutdown(self, grace: float) -> int:
        log.info("daemon.stopping", grace_seconds=grace)
        if self.service is not None:
            self.service.stopping(self)
        for state in self.inboxes.values():
            state.stop_watch()
        given_back = 0
        for job in self.queue.drain_unstarted():
            row = self.journal.get(str(job.claim))
            if row is not None and row.stage in ("claimed", "checked") and self._give_back(job):
                self.journal.forget(str(job.claim))
                given_back += 1
        drained = self.queue.wait_idle(grace)
        if not drained:
            self.cancel.set()
            self.queue.wait_idle(5.0)
        for w in self.workers:
            w.stopping.set()
        self.queue.close()
        queued, busy = self.queue.counts()
        for state in list(self.inboxes.values()) + self.retired:
            if not state.area.mine():
                state.area.remove()
            else:
                state.area.release()
        log.info("daemon.stopped", drained=drained, given_back=given_back, left_claimed=busy,
                 archived=self.ctx.counters.get("archived", 0), failed=self.ctx.counters.get("failed", 0))
        self.journal.close()
        return EXIT_OK

    def _give_back(self, job: Job) -> bool:
        state = self.inboxes.get(job.key)
        if state is None:
            return False
        try:
            return state.area.unclaim(job.claim, job.inbox.path, job.name)
        except OSError:
            return False

    # --- what the service layer reads ------------------------------------------------------

    def busy_by_inbox(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.workers:
            if w.heartbeat.busy and w.current is not None:
                out[w.current] = out.get(w.current, 0) + 1
        return out

    @property
    def wedge_seconds(self) -> float:
        """A busy worker without progress (bytes, a stage change) for this long is wedged."""
        return max(10.0, 2 * self.config.api.timeout_seconds)

    def alive(self) -> bool:
        """Every watch (of the inboxes that exist) and every worker alive: the watchdog may be fed."""
        watches = all(s.watch_ok() for s in self.inboxes.values() if not s.missing)
        workers = all(w.alive() and not w.heartbeat.wedged(self.wedge_seconds) for w in self.workers)
        return watches and workers

    def snapshot(self) -> dict[str, Any]:
        """Per-inbox counts and liveness, for metrics, health and the watchdog."""
        queued = self.queue.queued_by_inbox()
        busy = self.busy_by_inbox()
        limit = self.wedge_seconds
        return {
            "paused": self.gate.paused,
            "watches_alive": all(s.watch_ok() for s in self.inboxes.values() if not s.missing),
            "inboxes_missing": [s.key for s in self.inboxes.values() if s.missing],
            "workers_alive": all(w.alive() and not w.heartbeat.wedged(limit) for w in self.workers),
            "inboxes": {
                key: {
                    "purpose": s.config.purpose,
                    "waiting": len(s.ready) + self.tracker.pending_in(key),
                    "queued": queued.get(key, 0),
                    "in_flight": busy.get(key, 0),
                    "done": self.ctx.by_inbox.get(key, {}).get("archived", 0),
                    "failed": self.ctx.by_inbox.get(key, {}).get("failed", 0),
                    "retried": self.ctx.by_inbox.get(key, {}).get("retried", 0),
                    "watch_alive": s.watch_ok(),
                    "missing": s.missing,
                }
                for key, s in self.inboxes.items()
            },
            "busy": self.queue.counts()[1],
            "counters": dict(self.ctx.counters),
        }
