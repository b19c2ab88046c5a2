"""The daemon's side of a ledger (SPEC §10): an archived batch input followed to its outbox.

The input is archived into done/ before any job exists; its manifest names its ledger,
``done/<archived name>.ledger.json``. The host that follows it holds the follow lock
(``done/.<name>.batch.lock``, `orphans.Watchers`), and only that host writes the ledger: it
plans it when it is not there yet (the parts from the archived input; a single part's job is
the upload the manifest names), then each look is one `Rounds.step()` (upload the parts,
create each job once, poll, settle, resend), and once every job is settled `deliver_ledger`
writes the outbox. A host that dies lets go of the lock; another host's scan of done/ finds the
ledger and follows it on from what it says (`Poller._scan`).

The journal's `batches` row of the input (its `ledger` column) is this host's index of what
it follows: `inboxd batches`, the metrics and the `batch.delivered` event read it.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from ..api import Cancelled
from ..config import BatchConfig, InboxConfig
from ..state.sidecars import MANIFEST_SUFFIX
from .ledger import SUFFIX, Ledger, LedgerJob, Limits
from .manifest import update_from_ledger
from .orphans import Watchers, lock_path
from .outbox import deliver_ledger
from .rounds import Rounds, remove_work
from .split import plan_parts
from .store import BatchRecord, BatchStore

log = structlog.get_logger("inboxd.batch")

JITTER = 0.1
STEP_BUDGET = 2  # uploads, creates and settles per look at one input: then the others' turn
DELIVERY_LOOK = 0.5  # seconds between looks at a running merge
MERGES = 4  # merges into outboxes at once: a small input's is not queued behind one big one


class Delivery:
    """`deliver_ledger` on a daemon thread of its own; its result or its exception, once finished."""

    def __init__(self, rounds: Rounds, work: Callable[[], tuple[Path, dict[str, Any]]],
                 on_done: Callable[[], None] | None = None) -> None:
        self.rounds = rounds  # the ledger it delivers (its own copy: saved by the merge)
        self._work, self._on_done = work, on_done
        self._result: tuple[Path, dict[str, Any]] | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        threading.Thread(target=self._run, name="inboxd-batch-deliver", daemon=True).start()

    def _run(self) -> None:
        try:
            self._result = self._work()
        except BaseException as exc:  # noqa: BLE001 - handed to the poller, which knows what it means
            self._error = exc
        self._done.set()
        if self._on_done is not None:
            self._on_done()

    def finished(self) -> bool:
        return self._done.is_set()

    def result(self) -> tuple[Path, dict[str, Any]]:
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class LedgerFollower:
    def __init__(self, get_client: Callable[[], Any], store: BatchStore, followers: Watchers,
                 stop: threading.Event, work_root: Path, inboxes: Callable[[], Iterable[InboxConfig]] | None,
                 emit: Callable[..., None], me: str | None = None,
                 alive: Callable[[str, str], bool] | None = None,
                 wake: Callable[[str], None] | None = None) -> None:
        self.get_client = get_client
        self.store = store
        self.followers = followers
        self.stop = stop
        self.work_root = work_root
        self.inboxes = inboxes
        self.emit = emit
        self.me = me  # this daemon's claimer id
        self.alive = alive  # (inbox, claimer) -> whether that daemon's heartbeat is fresh
        self.wake = wake  # (claim) -> look at that input now: its merge is over
        self._open: dict[str, tuple[str, int]] = {}  # ledger file -> (inbox, jobs sent and not ended)
        self._counted: set[str] = set()  # inboxes whose followed ledgers are all in _open
        self._fleet: dict[str, dict[str, int]] = {}  # inbox -> {ledger file: jobs open}, all hosts', last scan
        self._deliveries: dict[str, Delivery] = {}  # ledger file -> its merge into the outbox, running
        self._statuses: dict[str, str | None] = {}  # ledger file#job -> the status last told (batch.status)

    # --- one look --------------------------------------------------------------------------

    def step(self, rec: BatchRecord) -> float | None:
        """One look at the input of `rec`; the time of the next, or None when it is delivered."""
        assert rec.ledger and rec.manifest
        lfile, manifest = Path(rec.ledger), Path(rec.manifest)
        if not self.followers.take(rec.claim, lock_path(manifest)):
            return self._elsewhere(rec, lfile)  # another host follows it: look now and then
        ledger = Ledger.load(lfile) if lfile.exists() else self._plan(rec, lfile, manifest)
        if not self._mine(rec, lfile, ledger):
            self.followers.release(rec.claim)
            return self._elsewhere(rec, lfile)
        if str(lfile) in self._deliveries:
            return self._delivering(rec, lfile)
        outbox = Path(ledger.outbox or rec.outbox or "")  # once a stem is chosen, the ledger's outbox
        sidecar = outbox / f"{ledger.stem}.batch.json" if ledger.stem else None
        if ledger.delivered_at is not None and sidecar is not None and sidecar.exists():
            self._delivered(rec, lfile, ledger, sidecar, json.loads(sidecar.read_text(encoding="utf-8")))
            return None
        rounds = Rounds(self.get_client(), ledger, lfile, self._work(lfile), self._config(rec, ledger),
                        named_elsewhere=lambda: self.named_elsewhere(lfile), may_start=self._admission(rec),
                        on_job=lambda led, job: self._moved(rec, lfile, manifest, led, job), cancel=self.stop,
                        on_download=lambda job, kind, n: self.emit(
                            "batch.download", claim=rec.claim, batch_id=job.id, kind=kind, outcome="ok", bytes=n))
        done = rounds.step(budget=STEP_BUDGET)
        self._open[str(lfile)] = (rec.inbox, ledger.in_flight())
        if not done:
            update_from_ledger(manifest, lfile, ledger)
            if rounds.cut:
                return time.time()  # more to do now: after the others due meanwhile
            return time.time() + rec.poll_seconds * random.uniform(1 - JITTER, 1 + JITTER)
        if rec.stage != "downloading":
            rec = self.store.update(rec.claim, stage="downloading", finished_at=ledger.finished_at)
        return self._deliver(rec, lfile, rounds, outbox)

    def _deliver(self, rec: BatchRecord, lfile: Path, rounds: Rounds, outbox: Path) -> float | None:
        """The merge into the outbox runs on a thread of its own (about 40 s for a million
        requests), up to MERGES at once, while the poller goes on with the other inputs."""
        if len(self._deliveries) >= MERGES:
            return time.time() + DELIVERY_LOOK  # as many merges run as may: after one of them
        wake = self.wake
        self._deliveries[str(lfile)] = Delivery(
            rounds, lambda: deliver_ledger(rounds, outbox, join=rec.join, cancel=self.stop),
            on_done=(lambda: wake(rec.claim)) if wake is not None else None)
        return time.time() + DELIVERY_LOOK

    def _delivering(self, rec: BatchRecord, lfile: Path) -> float | None:
        """A look at a running merge; once it is over, its failure is raised here, as if it had
        happened in the step (an OSError is the outbox's trouble: `Poller._guarded`)."""
        running = self._deliveries[str(lfile)]
        if not running.finished():
            return time.time() + DELIVERY_LOOK
        del self._deliveries[str(lfile)]
        try:
            sidecar, data = running.result()
        except Cancelled:
            if self.stop.is_set():
                raise
            return time.time()  # cut by a stop the poller has since come back from: again

        remove_work(running.rounds.work)
        self._delivered(rec, lfile, running.rounds.ledger, sidecar, data)
        return None

    def _mine(self, rec: BatchRecord, lfile: Path, ledger: Ledger) -> bool:
        """Whether this daemon follows the ledger: the lock is ours (on a local filesystem that
        alone says it), and the follower it names is us, or none, or a daemon whose heartbeat
        stopped (a network filesystem, where each host sees only its own locks). Taken over, it
        names us before anything else is done."""
        if self.me is None or ledger.follower == self.me:
            return True
        if ledger.follower is not None and self.alive is not None and self.alive(rec.inbox, ledger.follower):
            return False
        if ledger.follower is not None:
            log.info("batch.follower_gone", input=ledger.input.path, follower=ledger.follower, ledger=str(lfile))
        ledger.follower = self.me
        ledger.save(lfile)
        return True

    def _elsewhere(self, rec: BatchRecord, lfile: Path) -> float | None:
        try:
            ledger = Ledger.load(lfile)
        except (OSError, ValueError):
            ledger = None
        if ledger is not None and ledger.delivered_at is not None:  # the host that delivered it announces it
            self.store.update(rec.claim, announce=False, stage="delivered", delivered_at=ledger.delivered_at,
                              stem=ledger.stem)
            return None
        return time.time() + max(rec.poll_seconds, 5.0)

    def _delivered(self, rec: BatchRecord, lfile: Path, ledger: Ledger, sidecar: Path,
                   data: dict[str, Any]) -> None:
        counts = data.get("counts") or {}
        ids = ledger.job_ids()
        outputs = {k: v for k, v in (data.get("outputs") or {}).items() if v}
        outputs["results"] = {**outputs.get("results", {}), "counts": counts}  # what `batches` and status count
        rec = self.store.update(rec.claim, stage="delivered", stem=ledger.stem, outbox=ledger.outbox or rec.outbox,
                                delivered_at=ledger.delivered_at or time.time(), batch_id=ids[0] if ids else None,
                                status=_status(data), outputs=outputs, error=None)
        update_from_ledger(Path(rec.manifest or ""), lfile, ledger, delivered=str(sidecar))
        self._open.pop(str(lfile), None)
        for key in [k for k in self._statuses if k.startswith(f"{lfile}#")]:
            del self._statuses[key]
        self.followers.release(rec.claim, lock_path(Path(rec.manifest or "")))
        since = ledger.dropped_at or ledger.uploaded_at
        seconds = round(time.time() - since, 3) if since else None
        self.emit("batch.delivered", claim=rec.claim, inbox=rec.inbox, batch_id=rec.batch_id, status=rec.status,
                  seconds=seconds, path=str(sidecar), **counts)
        log.info("batch.delivered", input=ledger.input.path, inbox=rec.inbox, jobs=len(ids), rounds=ledger.rounds,
                 status=rec.status, seconds=seconds, sidecar=str(sidecar), **counts)

    # --- the ledger's making and its callbacks -----------------------------------------------

    def _plan(self, rec: BatchRecord, lfile: Path, manifest: Path) -> Ledger:
        """The ledger of an input archived without one yet: its parts by the inbox's limits; a
        single part's job is the file the manifest names (uploaded whole before the archive)."""
        data = json.loads(manifest.read_text(encoding="utf-8"))
        source = data.get("source") or {}
        input_path = Path(rec.input_path or source.get("path") or "")
        cfg = self._inbox_config(rec.inbox)
        limits = Limits(max_requests_per_job=cfg.max_requests_per_job, max_bytes_per_job=int(cfg.max_bytes_per_job),
                        resubmit_rounds=cfg.resubmit_rounds, resubmit_codes=list(cfg.resubmit_codes))
        parts = plan_parts(input_path, limits.max_requests_per_job, limits.max_bytes_per_job)
        ledger = Ledger.plan(input_path, parts, limits, sha256=source.get("sha256"), dropped_at=rec.dropped_at)
        ledger.manifest, ledger.uploaded_at, ledger.follower = str(manifest), rec.uploaded_at, self.me
        file_id = (data.get("file") or {}).get("id")
        if len(parts) == 1 and file_id:
            ledger.jobs[0].input_file_id, ledger.jobs[0].stage = str(file_id), "uploaded"
        ledger.save(lfile)
        log.info("batch.planned", input=str(input_path), parts=len(parts), requests=ledger.input.requests,
                 ledger=str(lfile))
        return ledger

    def _moved(self, rec: BatchRecord, lfile: Path, manifest: Path, ledger: Ledger, job: LedgerJob) -> None:
        """A job was created or its status moved: the manifest names it, the journal's row says it."""
        update_from_ledger(manifest, lfile, ledger)
        ids = ledger.job_ids()
        self.store.update(rec.claim, batch_id=ids[0] if ids else None, status=job.status, progress=job.progress)
        key = f"{lfile}#{job.name}"
        previous = self._statuses.get(key)
        if job.status == previous:
            return
        self._statuses[key] = job.status
        self.emit("batch.status", claim=rec.claim, inbox=rec.inbox, batch_id=job.id, status=job.status,
                  previous=previous, progress=job.progress)
        log.info("batch.status", input=ledger.input.path, inbox=rec.inbox, batch_id=job.id, part=job.part,
                 round=job.round, status=job.status, previous=previous, progress=job.progress)

    def _inbox_config(self, inbox: str) -> BatchConfig:
        for cfg in self.inboxes() if self.inboxes is not None else ():
            if str(cfg.path) == inbox and cfg.batch is not None:
                return cfg.batch
        return BatchConfig()  # the table was removed since: the defaults

    def _config(self, rec: BatchRecord, ledger: Ledger) -> BatchConfig:
        return rec.config().model_copy(update={
            "resubmit_rounds": ledger.limits.resubmit_rounds, "resubmit_codes": ledger.limits.resubmit_codes,
            "max_jobs_in_flight": self._inbox_config(rec.inbox).max_jobs_in_flight})

    def count_fleet(self, inboxes: Iterable[InboxConfig]) -> None:
        """The jobs open in every ledger of the inboxes that limit jobs in flight, whichever host
        follows it (read from their done/ at each scan: up to one scan interval old)."""
        for cfg in inboxes:
            if cfg.batch is None or not cfg.batch.max_jobs_in_flight or not cfg.done.is_dir():
                continue
            counts: dict[str, int] = {}
            for path in cfg.done.glob(f"*{SUFFIX}"):
                try:
                    ledger = Ledger.load(path)
                except (OSError, ValueError):
                    continue
                if ledger.delivered_at is None and ledger.in_flight():
                    counts[str(path)] = ledger.in_flight()
            self._fleet[str(cfg.path)] = counts

    def _admission(self, rec: BatchRecord) -> Callable[[Ledger], bool]:
        """max_jobs_in_flight of the inbox: the jobs open in every ledger of it, live for those
        this host follows (after a restart, those not looked at yet too), as of the last scan
        for those other hosts follow."""
        limit = self._inbox_config(rec.inbox).max_jobs_in_flight
        mine = rec.ledger or ""
        if limit and rec.inbox not in self._counted:
            self._counted.add(rec.inbox)
            for other in self.store.open_records():
                if other.inbox == rec.inbox and other.ledger and other.ledger not in self._open:
                    try:
                        self._open[other.ledger] = (rec.inbox, Ledger.load(Path(other.ledger)).in_flight())
                    except (OSError, ValueError):
                        continue

        def may_start(ledger: Ledger) -> bool:
            # live counts for the ledgers this host follows; the last scan's for the others
            # (other hosts' ledgers in the inbox's done/)
            others = {p: n for p, (inbox, n) in self._open.items() if inbox == rec.inbox and p != mine}
            others.update({p: n for p, n in self._fleet.get(rec.inbox, {}).items()
                           if p != mine and p not in self._open})
            return limit == 0 or sum(others.values()) + ledger.in_flight() < limit
        return may_start

    def _work(self, lfile: Path) -> Path:
        """Part inputs and downloaded answers: local to this host (a host that takes the ledger
        over downloads the answers again)."""
        return self.work_root / hashlib.sha256(str(lfile).encode()).hexdigest()[:24]

    def named_elsewhere(self, lfile: Path) -> set[str]:
        """Every job id another input names: the ledgers and the manifests in the batch inboxes'
        done/ folders (two drops of the same bytes share one input file id)."""
        out: set[str] = set()
        folders = {cfg.done for cfg in (self.inboxes() if self.inboxes is not None else ()) if cfg.batch}
        folders.add(lfile.parent)
        for folder in folders:
            if not folder.is_dir():
                continue
            for path in folder.glob(f"*{SUFFIX}"):
                if path != lfile:
                    try:
                        out.update(Ledger.load(path).job_ids())
                    except (OSError, ValueError):
                        continue
            own = lfile.with_name(lfile.name[: -len(SUFFIX)] + MANIFEST_SUFFIX)
            for path in folder.glob(f"*{MANIFEST_SUFFIX}"):
                if path == own:
                    continue
                out.update(_manifest_ids(path))
        return out

    def open_jobs(self) -> int:
        return sum(n for _, n in self._open.values())


def _manifest_ids(path: Path) -> set[str]:
    try:
        section = json.loads(path.read_text(encoding="utf-8")).get("batch")
    except (OSError, ValueError, AttributeError):
        return set()
    if not isinstance(section, dict):
        return set()
    ids = {section["id"]} if isinstance(section.get("id"), str) else set()
    jobs = section.get("jobs")
    return ids | {j for j in jobs if isinstance(j, str)} if isinstance(jobs, list) else ids


def _status(data: dict[str, Any]) -> str:
    """The input's status in batch.json terms: COMPLETED when no request is missing, else the
    last job's status."""
    counts, jobs = data.get("counts") or {}, data.get("jobs") or []
    if not counts.get("missing"):
        return "COMPLETED"
    return str(jobs[-1].get("status") or "FAILED") if jobs else "FAILED"
