"""Recovery at start and at each rescan: what a daemon that is gone (ourselves before a
restart, or another host) left behind. Claim folders of dead owners are taken over; journal
rows whose file is gone are finished or forgotten; batch jobs not yet delivered are followed
again. Every decision asks the server or the filesystem, never the journal alone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ..state.sidecars import MANIFEST_SUFFIX
from .archive import finish_orphan
from .claim import claimer_alive
from .inboxes import InboxState
from .upload import adoptable
from .work import Job

if TYPE_CHECKING:
    from .daemon import Daemon

log = structlog.get_logger("inboxd.daemon")


def recover_claims(daemon: Daemon, state: InboxState) -> None:
    """Take over the claimed files of daemons that are gone (ourselves before a restart, or
    another host): our journal knows our own; another host's leave their state in the folder."""
    for t in state.area.take_over_stale():
        if t.kind == "manifest":
            daemon.events.record_sidecar(state.key, t.new)  # published here, by us: its event is ours
            log.info("file.recovered", inbox=state.key, name=t.name, stage="archived", manifest=str(t.new),
                     how="the dead owner's manifest moved next to its data in done/")
            continue
        if t.kind == "moved":
            row = daemon.journal.get(str(t.old))
            if row is not None:  # our own, before a restart: the row ends as the move did
                finish_orphan(daemon.journal, row)
            else:
                daemon.events.record_sidecar(state.key, t.new)  # a peer's, finished and published by us
            log.info("file.recovered", inbox=state.key, name=t.name, stage="archived", manifest=str(t.new),
                     taken_from=t.old.parent.name,
                     how="the dead owner's move into done/ was cut between link and unlink: finished")
            continue
        row = daemon.journal.get(str(t.old))
        if row is not None:
            daemon.journal.move(str(t.old), str(t.new))
            if daemon.ctx.batches is not None:
                daemon.ctx.batches.move(str(t.old), str(t.new))
            stage = row.stage
            if not row.file_id and row.stage not in ("uploaded", "archived", "failed") \
                    and t.state and t.state.get("file_id"):
                # a power cut rolled the journal back past the file id, the claim folder kept it:
                # the worker asks the server about it before sending anything
                daemon.journal.update(str(t.new), stage="uploading", **adoptable(t.state))
                stage = "uploaded (the file id from the claim folder)"
        else:
            daemon.journal.claimed(str(t.new), state.key, t.name)
            stage = "claimed"
            if t.state and t.state.get("file_id"):
                # uploaded by the dead owner: the worker asks the server before sending anything
                daemon.journal.update(str(t.new), stage="uploading", **adoptable(t.state))
                stage = "uploaded elsewhere"
        log.info("file.recovered", inbox=state.key, name=t.name, stage=stage, claim=str(t.new),
                 taken_from=t.old.parent.name)
        daemon.queue.put(Job(state.config, t.new, t.name, recovered=True))

    # the pending events of dead claimers of this inbox (events/fleet.py): sent once per fleet
    daemon.events.take_over(state.key, state.config.work, lambda folder: state.area.owner_dead(
        folder, missing_is_dead=True))


def recover_orphan_rows(daemon: Daemon) -> None:
    """Rows whose claimed file is gone and whose claimer is gone: finish or forget them."""
    for row in daemon.journal.open_rows():
        claim = Path(row.claim)
        if os.path.lexists(claim) or claimer_alive(claim.parent, daemon.liveness):
            continue
        outcome = finish_orphan(daemon.journal, row)
        log.info("file.orphan", inbox=row.inbox, name=row.name, stage=row.stage, outcome=outcome)

def resume_batches(daemon: Daemon) -> None:
    """Follow every batch job the journal knows and has not delivered; a job created for an
    input archived before a crash (not yet attached) is attached first."""
    store, poller = daemon.ctx.batches, daemon.ctx.poller
    if store is None or poller is None:
        return
    for rec in store.unfinished_creates():
        row = daemon.journal.get(rec.claim)
        if rec.batch_id and row is not None and row.stage == "archived" and row.target:
            store.attach(rec.claim, manifest=row.target + MANIFEST_SUFFIX, input_path=row.target)
    poller.start()
    n = poller.resume()
    if n:
        log.info("batch.resumed", jobs=n)
