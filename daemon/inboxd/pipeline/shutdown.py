"""Stopping: give back what was not started, let in-flight work finish within the grace period,
then cancel what is left (it stays claimed, journaled, and is finished by the next start)."""

from __future__ import annotations

import structlog

from .hooks import Hooks
from .running import Running
from .work import Job

log = structlog.get_logger("inboxd.daemon")

CANCEL_WAIT = 5.0  # after the grace period: how long cancelled workers get to notice


def shutdown(daemon: Running, service: Hooks, grace: float) -> None:
    log.info("daemon.stopping", grace_seconds=grace)
    service.stopping(daemon)
    for state in daemon.inboxes:
        state.stop_watch()
    given_back = 0
    for job in daemon.queue.drain_unstarted():
        row = daemon.journal.get(str(job.claim))
        if row is not None and row.stage in ("claimed", "checked") and _give_back(daemon, job):
            daemon.journal.forget(str(job.claim))
            given_back += 1
    drained = daemon.queue.wait_idle(grace)
    if not drained:
        daemon.cancel.set()
        daemon.queue.wait_idle(CANCEL_WAIT)
    for w in daemon.workers:
        w.stopping.set()
    if daemon.ctx.syncer is not None:
        daemon.ctx.syncer.shutdown(wait=True)  # an fsync under way ends (none is waited for after this)
    if daemon.ctx.poller is not None:
        daemon.ctx.poller.stop(timeout=CANCEL_WAIT)  # a delivery in progress resumes at the next start
    daemon.queue.close()
    daemon.events.stop()  # a delivery under way ends (its event stays pending, sent at the next start)
    left = 0
    for state in daemon.inboxes.all_areas():
        mine = state.area.mine()
        left += len(mine)
        if not mine:
            state.area.remove()
        else:
            state.area.release()
    counters = daemon.ctx.counters
    log.info("daemon.stopped", drained=drained, given_back=given_back, left_claimed=left,
             archived=counters.get("archived", 0), failed=counters.get("failed", 0))
    daemon.journal.close()


def _give_back(daemon: Running, job: Job) -> bool:
    state = daemon.inboxes.get(job.key)
    if state is None:
        return False
    try:
        return state.area.unclaim(job.claim, job.inbox.path, job.name)
    except OSError:
        return False
