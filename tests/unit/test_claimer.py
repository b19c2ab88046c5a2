"""`inboxd.pipeline.claimer`: claiming ready files, and what the loop says of files it has
seen and not claimed."""

from __future__ import annotations

from inboxd.config import InboxConfig
from inboxd.pipeline.claim import new_claimer
from inboxd.pipeline.claimer import CLAIM_ROUND, Claimer
from inboxd.pipeline.inboxes import InboxSet
from inboxd.pipeline.stuck import STUCK_SCANS
from inboxd.pipeline.work import WorkQueue
from inboxd.state.journal import Journal
from inboxd.watch.queue import PathQueue


def test_many_stuck_files_are_explained_with_one_walk_of_the_tracker(tmp_path):
    """The status line asks for the stuck files once a second; explaining each one by walking
    every path the tracker knows again made a 30,000-file burst crawl (the full R6)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(300):
        (inbox / f"f{i}.jsonl").write_bytes(b"{}\n")
    inboxes = InboxSet(new_claimer())
    state = inboxes.add(InboxConfig(path=inbox, purpose="eval"), PathQueue())
    try:
        claimer = Claimer(inboxes, Journal(tmp_path / "state"), WorkQueue(), settle_seconds=0.0,
                          held_open_warn_seconds=60.0, state_dir=tmp_path / "state")
        for _ in range(STUCK_SCANS + 1):
            claimer.scan(state)  # seen by every scan, never claimed (claim_ready is not called)
        walks: list[str | None] = []
        real = claimer.tracker.held_open
        claimer.tracker.held_open = lambda folder=None: walks.append(folder) or real(folder)  # type: ignore[method-assign]
        stuck = claimer.stuck(state.key)
    finally:
        state.stop_watch()
    assert len(stuck) == 300, stuck
    assert set(stuck.values()) == {"ready, waiting for a free worker (or paused: the API rejects the key)"}
    assert len(walks) == 1


def _ready_inbox(tmp_path, files: int):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(files):
        (inbox / f"f{i:03}.jsonl").write_bytes(b"{}\n")
    inboxes = InboxSet(new_claimer())
    state = inboxes.add(InboxConfig(path=inbox, purpose="eval"), PathQueue())
    journal = Journal(tmp_path / "state")
    commits: list[int] = []
    write = journal._write
    journal._write = lambda statements, atomic=False: commits.append(1) or write(statements, atomic)  # type: ignore[method-assign]
    queue = WorkQueue()
    claimer = Claimer(inboxes, journal, queue, settle_seconds=0.0, held_open_warn_seconds=60.0,
                      state_dir=tmp_path / "state")
    claimer.scan(state)
    return inbox, state, claimer, queue, journal, commits


def _finish(queue: WorkQueue, n: int) -> None:
    for _ in range(n):  # a worker takes a job and is done with it
        assert queue.get(timeout=1.0) is not None
        queue.done()


def test_with_work_queued_files_are_claimed_in_rounds_of_one_commit(tmp_path):
    """In a burst the loop claimed a file whenever one slot came free, each with its own
    commit of the journal; with enough queued, it now waits for a round of free slots."""
    inbox, state, claimer, queue, journal, commits = _ready_inbox(tmp_path, 40)
    try:
        claimer.claim_ready(16)
        assert queue.counts() == (16, 0) and len(commits) == 1
        _finish(queue, CLAIM_ROUND - 1)  # fewer slots free than a round, and enough jobs queued
        claimer.claim_ready(16)
        assert queue.counts() == (16 - CLAIM_ROUND + 1, 0) and len(commits) == 1
        _finish(queue, 1)
        claimer.claim_ready(16)
        assert queue.counts() == (16, 0) and len(commits) == 2
        claimed = sorted(p.name for p in (inbox / ".inboxd").rglob("*.jsonl"))
        assert len(claimed) == 20 and all(journal.get(str(p)) is not None for p in (inbox / ".inboxd").rglob("*.jsonl"))
    finally:
        state.stop_watch()


def test_a_file_is_claimed_at_once_while_few_jobs_wait(tmp_path):
    """Rounds must not hold back a trickle: with fewer than a round queued, a ready file is
    claimed at the next look, however few slots are free (busy workers hold the others)."""
    inbox, state, claimer, queue, journal, commits = _ready_inbox(tmp_path, 3)
    capacity = CLAIM_ROUND + 1
    try:
        claimer.claim_ready(capacity)
        assert queue.counts() == (3, 0)
        assert queue.get(timeout=1.0) is not None and queue.get(timeout=1.0) is not None  # two workers busy
        (inbox / "late.jsonl").write_bytes(b"{}\n")
        claimer.scan(state)
        claimer.claim_ready(capacity)  # 2 slots free, fewer than a round, and 1 job queued
        assert queue.counts() == (2, 2)
    finally:
        state.stop_watch()
