"""Recovery at start and at each rescan: what a daemon that is gone (ourselves before a
restart, or another host) left behind. Claim folders of dead owners are taken over; journal
rows whose file is gone are finished or forgotten; batch jobs not yet delivered are followed
again. Every decision asks the server or the filesystem, never the journal alone."""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from ..batch import BatchStore, Poller
from ..events import Events
from ..state.journal import Journal, Stage
from ..state.sidecars import MANIFEST_SUFFIX
from .archive import finish_orphan
from .claim import Liveness, Takeover, claimer_alive
from .inboxes import InboxState
from .upload import adoptable
from .work import Job, WorkQueue

log = structlog.get_logger("inboxd.daemon")


class Recovery:
    """Finishes what a daemon that is gone left: given the journal, the batch store and its
    poller, the work queue (taken-over files go there), the events (a sidecar published by a
    takeover is announced) and the claims' liveness rule."""

    def __init__(self, journal: Journal, batches: BatchStore | None, poller: Poller | None, queue: WorkQueue,
                 events: Events, liveness: Liveness) -> None:
        self.journal, self.batches, self.poller, self.queue = journal, batches, poller, queue
        self.events, self.liveness = events, liveness

    def claims(self, state: InboxState) -> None:
        """Take over the claimed files of daemons that are gone (ourselves before a restart, or
        another host): our journal knows our own; another host's leave their state in the folder."""
        for t in state.area.take_over_stale():
            if t.kind == "manifest":
                self.events.record_sidecar(state.key, t.new)  # published here, by us: its event is ours
                log.info("file.recovered", inbox=state.key, name=t.name, stage="archived", manifest=str(t.new),
                         how="the dead owner's manifest moved next to its data in done/")
            elif t.kind == "moved":
                row = self.journal.get(str(t.old))
                if row is not None:  # our own, before a restart: the row ends as the move did
                    finish_orphan(self.journal, row)
                else:
                    self.events.record_sidecar(state.key, t.new)  # a peer's, finished and published by us
                log.info("file.recovered", inbox=state.key, name=t.name, stage="archived", manifest=str(t.new),
                         taken_from=t.old.parent.name,
                         how="the dead owner's move into done/ was cut between link and unlink: finished")
            else:
                self._claimed(state, t)
        # the pending events of dead claimers of this inbox (events/fleet.py): sent once per fleet
        self.events.take_over(state.key, state.config.work, lambda folder: state.area.owner_dead(
            folder, missing_is_dead=True))

    def _claimed(self, state: InboxState, t: Takeover) -> None:
        """A claimed file taken over: its row moves with it (ours) or is made (a peer's), and
        it is queued as recovered; a file id the claim folder knows is asked about, not resent."""
        row = self.journal.get(str(t.old))
        if row is not None:
            self.journal.move(str(t.old), str(t.new))
            if self.batches is not None:
                self.batches.move(str(t.old), str(t.new))
            stage = row.stage
            if not row.file_id and row.stage not in (Stage.UPLOADED, Stage.ARCHIVED, Stage.FAILED) \
                    and t.state and t.state.get("file_id"):
                # a power cut rolled the journal back past the file id, the claim folder kept it
                self.journal.update(str(t.new), stage=Stage.UPLOADING, **adoptable(t.state))
                stage = "uploaded (the file id from the claim folder)"
        else:
            self.journal.claimed(str(t.new), state.key, t.name)
            stage = Stage.CLAIMED
            if t.state and t.state.get("file_id"):  # uploaded by the dead owner
                self.journal.update(str(t.new), stage=Stage.UPLOADING, **adoptable(t.state))
                stage = "uploaded elsewhere"
        log.info("file.recovered", inbox=state.key, name=t.name, stage=stage, claim=str(t.new),
                 taken_from=t.old.parent.name)
        self.queue.put(Job(state.config, t.new, t.name, recovered=True))

    def orphan_rows(self) -> None:
        """Rows whose claimed file is gone and whose claimer is gone: finish or forget them."""
        for row in self.journal.open_rows():
            claim = Path(row.claim)
            if os.path.lexists(claim) or claimer_alive(claim.parent, self.liveness):
                continue
            outcome = finish_orphan(self.journal, row)
            log.info("file.orphan", inbox=row.inbox, name=row.name, stage=row.stage, outcome=outcome)

    def batches_left(self) -> None:
        """Follow every batch job the journal knows and has not delivered; a job created for an
        input archived before a crash (not yet attached) is attached first."""
        store, poller = self.batches, self.poller
        if store is None or poller is None:
            return
        for rec in store.unfinished_creates():
            row = self.journal.get(rec.claim)
            if rec.batch_id and row is not None and row.stage == Stage.ARCHIVED and row.target:
                store.attach(rec.claim, manifest=row.target + MANIFEST_SUFFIX, input_path=row.target)
        poller.start()
        n = poller.resume()
        if n:
            log.info("batch.resumed", jobs=n)
