"""The daemon loop: watch -> ready -> claim, then hand jobs to the workers.

The loop owns the watches (`InboxSet`) and the `Claimer` (readiness and claiming); workers
own the jobs. One pass of the loop: take the paths the observers reported and look at each
again, rescan when due or when events may have been lost, look again at files whose settle
time ran out, check that every watch is alive, claim ready files while fewer than
`capacity` are in flight, and tick the pause gate and the service hooks. Signals only set
flags; the loop acts on them. Stopping lives in `shutdown.py`, the snapshot for metrics and
health beside the hooks in `hooks.py`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr

from .._constants import EXIT_FAILED, EXIT_OK
from ..api import FilesClient
from ..batch import BatchStore, Poller
from ..check import return_large_buffers
from ..config import Config, ConfigError, InboxConfig, load_config, resolve_api_key
from ..events import Events
from ..log import register_secret
from ..state.journal import Journal
from ..watch.lease import ignore_lease_breaks
from ..watch.queue import PathQueue
from .claim import Liveness, claimer_alive, new_claimer
from .claimer import Claimer
from .context import Context
from .fingerprint import SettingsGate
from .hooks import Hooks, NoService
from .inboxes import Fatal, InboxSet
from .pause import AuthGate
from .recovery import Recovery
from .shutdown import shutdown
from .work import WorkQueue
from .workers import Worker

log = structlog.get_logger("inboxd.daemon")

TICK = 0.2
# threads of the archive lane (`WorkQueue.get_archive`): the move to done/ and the manifest are
# disk work (three fsyncs a file) that would otherwise hold an upload slot; two keep up with
# the uploads of 32 workers on the benchmark machine (docs/benchmarks.md)
ARCHIVERS = 2
PRUNE_EVERY = 86400.0


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        key: SecretStr,
        *,
        once: bool = False,
        make_client: Callable[[Config, SecretStr], FilesClient],
        resolve_key: Callable[[Config], tuple[SecretStr, str]] = lambda c: resolve_api_key(c.api),
        adjust_config: Callable[[Config], Config] = lambda c: c,
        service: Hooks | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.once = once
        self.make_client = make_client
        self.adjust_config = adjust_config
        self.resolve_key = resolve_key
        self.service: Hooks = service if service is not None else NoService()
        self.paths = PathQueue()
        self.queue = WorkQueue()
        self.journal = Journal(config.daemon.state_dir)
        self.liveness = Liveness(config.daemon.claim_liveness, config.daemon.claim_timeout_seconds)
        self.inboxes = InboxSet(new_claimer(), self.liveness)
        self.claimer = Claimer(self.inboxes, self.journal, self.queue, settle_seconds=config.daemon.settle_seconds,
                               held_open_warn_seconds=config.daemon.held_open_warn_seconds,
                               state_dir=config.daemon.state_dir, window=config.daemon.candidate_window)
        self.gate = AuthGate(self.queue)
        # daemons sharing an inbox agree on its settings, or do not claim there (fingerprint.py)
        self.settings = SettingsGate(self.liveness.heartbeat_every())
        self.cancel = threading.Event()
        self.ctx = Context(
            config=config, client=make_client(config, key), journal=self.journal, queue=self.queue,
            cancel=self.cancel, on_auth_rejected=self.gate.rejected, observe=self.service.observe,
            inject_bug=os.environ.get("INBOXD_INJECT_BUG", ""),
        )
        # the batch round trip: one poller follows every job, whichever inbox made it
        self.ctx.batches = BatchStore(self.journal)
        self.ctx.poller = Poller(lambda: self.ctx.client, self.ctx.batches, self._batch_event,
                                 inboxes=lambda: self.config.inboxes,  # done/: jobs whose follower died
                                 work_root=config.daemon.state_dir / "batch-work", me=self.inboxes.claimer,
                                 alive=lambda inbox, claimer: claimer_alive(Path(inbox) / ".inboxd" / claimer,
                                                                            self.liveness))
        self.events = Events.attach(config, self.journal, self.ctx.batches, self.inboxes.claimer)  # SPEC §11
        self.recovery = Recovery(self.journal, self.ctx.batches, self.ctx.poller, self.queue, self.events,
                                 self.liveness)
        self.workers: list[Worker] = []
        self.capacity = max(16, 4 * config.daemon.workers)
        self._stop = False
        self._reload = False
        self._next_rescan = 0.0
        self._watches_checked = 0.0
        self._probe_now = False
        self._next_prune = 0.0
        self.started = time.monotonic()

    # --- signals ---------------------------------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        ignore_lease_breaks()

    def _on_term(self, signum: int, _frame: Any) -> None:
        # stopping starts here: nothing new is claimed from now on, not even by the rest of
        # the pass the signal interrupted (the handler runs on the loop's own thread)
        self._stop = True
        self.claimer.stopping = True

    def _on_hup(self, signum: int, _frame: Any) -> None:
        self._reload = True

    # --- start -----------------------------------------------------------------------------

    def start(self) -> None:
        return_large_buffers()  # a long line's memory goes back to the system once checked
        for inbox in self.config.inboxes:
            self._add_inbox(inbox)
        self.recovery.orphan_rows()
        self.recovery.batches_left()
        self.events.start()  # the senders: one thread per event sink
        for i in range(self.config.daemon.workers):
            self.workers.append(Worker(self.ctx, i, on_done=self.paths.wake))
        for i in range(min(ARCHIVERS, self.config.daemon.workers)):
            self.workers.append(Worker(self.ctx, i, on_done=self.paths.wake, archiver=True))
        self.ctx.syncer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fsync")
        for w in self.workers:
            w.start()
        self._next_rescan = time.monotonic() + self.config.daemon.rescan_seconds
        log.info("daemon.started", claimer=self.inboxes.claimer, inboxes=[str(i.path) for i in self.config.inboxes],
                 workers=self.config.daemon.workers, once=self.once, base_url=self.config.api.base_url)

    def _add_inbox(self, config: InboxConfig) -> None:
        state = self.inboxes.add(config, self.paths)  # the watch first, then the scan
        self.settings.check(state)
        if state.held is None:  # a daemon whose settings differ takes no dead daemon's claims over
            self.recovery.claims(state)
        self.claimer.scan(state)
        log.info("inbox.watching", inbox=state.key, purpose=config.purpose, observer=config.observer,
                 validate=config.validate_mode, on_success=config.on_success)

    def _batch_event(self, name: str, **fields: Any) -> None:
        self.service.batch_event(name, fields)

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        self.start()
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
            self._withdraw_settings()
            shutdown(self, self.service, grace=min(5.0, self.config.daemon.stop_grace_seconds))
            return EXIT_FAILED
        self._withdraw_settings()
        shutdown(self, self.service, grace=self.config.daemon.stop_grace_seconds)
        if self.once:
            held = any(s.held is not None for s in self.inboxes)
            return EXIT_FAILED if self.ctx.counters.get("failed", 0) or self.gate.paused or held else EXIT_OK
        return EXIT_OK

    def _tick(self) -> None:
        if self._reload:
            self._reload = False
            self.reload()
        timeout = TICK
        due = self.claimer.tracker.next_due()
        if due is not None:
            timeout = max(0.0, min(timeout, due - time.monotonic()))
        items, overflowed = self.paths.take_all(timeout)
        events = self.paths.take_events()
        if self._stop:
            return  # stopping: no look, no scan, no takeover, no claim (`shutdown` follows)
        for key, path, moved in items:
            state = self.inboxes.get(key)
            if state is not None:
                self.claimer.look(state, path, moved, events.get(path, ()))
        now = time.monotonic()
        if overflowed:  # every inbox is scanned again as soon as its window has room (`refill`)
            log.warning("watch.rescan", reason="events may have been lost")
            self.claimer.lost_events()
        if now >= self._next_rescan:
            self._next_rescan = now + self.config.daemon.rescan_seconds
            self._rescan_all()
        self.claimer.look_again_due()
        self.claimer.refill()
        if now - self._watches_checked >= TICK:  # at most every tick, not at every burst of events
            self._watches_checked = now
            self._check_watches()
        if not self.gate.paused:
            self.claimer.claim_ready(self.capacity)
        self.gate.tick(self._probe_key, now_probe=self._probe_now)
        self._probe_now = False
        if now >= self._next_prune:
            self._prune(now)
        self.journal.flush()  # archived stages no other write carried (in a burst, the claims' commits do)
        for state in self.inboxes:
            state.area.beat(now)
        for state in self.settings.tick(self.inboxes, now):  # claimed from again: look at it all now
            self.claimer.scan(state)
            self.recovery.claims(state)
        self.service.tick(self)

    def _withdraw_settings(self) -> None:
        """Stopping: our settings no longer hold any inbox (peers need not wait for our death)."""
        for state in self.inboxes:
            self.settings.withdraw(state)

    def _prune(self, now: float) -> None:
        self._next_prune = now + PRUNE_EVERY
        prune_journal(self.journal, self.config.daemon.journal_retention_days)

    def _rescan_all(self) -> None:
        for state in self.inboxes:
            if not state.missing and not self._stop:
                self.claimer.scan(state)
                if state.held is None:
                    self.recovery.claims(state)

    def _check_watches(self) -> None:
        self.inboxes.check_watches(self.paths, scan=self.claimer.scan, forget=self.claimer.tracker.forget_under)

    def _probe_key(self) -> bool:
        self.ctx.client.check_key()  # AuthError when the key is still refused
        return True

    def _once_finished(self) -> bool:
        if self.gate.paused:
            log.error("daemon.once_paused", reason="the API rejects the key; nothing more can be done now")
            return True
        held = [s.key for s in self.inboxes if s.held is not None]
        if held:  # its files would wait for ever: a conflict of configuration this run cannot resolve
            log.error("daemon.once_held", inboxes=held,
                      reason="this daemon's settings for these inboxes differ from those their live daemons run with "
                             "(inbox.settings_differ)")
            return True
        if not all(s.scanned or s.missing for s in self.inboxes):
            return False
        queued, busy = self.queue.counts()
        batches = self.ctx.batches.open_records() if self.ctx.batches is not None else []
        return not self.claimer.pending() and queued == 0 and busy == 0 and not batches

    # --- reload ----------------------------------------------------------------------------

    def reload(self) -> None:
        if self.config_path is None:
            return
        self.service.reloading(self)
        try:
            self._reload_config(self.config_path)
        finally:
            self.service.ready(self)

    def _reload_config(self, config_path: Path) -> None:
        try:
            new = self.adjust_config(load_config(config_path))
            key, source = self.resolve_key(new)
        except ConfigError as exc:
            log.error("config.rejected", error=str(exc), hint="the running configuration is kept")
            return
        register_secret(key.get_secret_value())
        if not self.events.reload(new):
            return  # a sink's secret cannot be read: said, and the running configuration is kept
        old = self.config
        self.config = new
        self.ctx.config = new
        self.ctx.client = self.make_client(new, key)
        self.claimer.tracker.settle_seconds = new.daemon.settle_seconds
        self.claimer.held_open_warn_seconds = new.daemon.held_open_warn_seconds
        _apply_inboxes(self, old, new)
        restart = [k for k in ("workers", "state_dir") if getattr(old.daemon, k) != getattr(new.daemon, k)]
        log.info("config.reloaded", key_source=source, restart_needed_for=restart or None)
        self._probe_now = True


def prune_journal(journal: Journal, days: float) -> None:
    """Journal retention, at start and then daily: rows of finished files older than `days`
    go; their counts stay (status) and so does the dedupe map."""
    try:
        removed = journal.prune(days)
    except Exception as exc:  # noqa: BLE001 - housekeeping must not stop the loop
        log.warning("journal.prune_failed", error=str(exc))
        return
    if removed:
        log.info("journal.pruned", rows=removed, older_than_days=days)


def _apply_inboxes(d: Daemon, old: Config, new: Config) -> None:
    """A reload's inboxes: the removed retired, the changed watched and scanned again under
    their new settings, the added started."""
    removed, changed, added = InboxSet.diff(old.inboxes, new.inboxes)
    for key in removed:
        d.settings.withdraw(d.inboxes.retire(key))
        d.claimer.tracker.forget_under(key)
        log.info("inbox.removed", inbox=key)
    for inbox in changed:
        state = d.inboxes.states[str(inbox.path)]
        state.config = inbox
        d.settings.check(state)
        state.start_watch(d.paths)
        d.claimer.scan(state)
        log.info("inbox.changed", inbox=state.key)
    for inbox in added:
        try:
            d._add_inbox(inbox)
        except OSError as exc:
            log.error("inbox.unusable", inbox=str(inbox.path), error=str(exc))
