"""`inboxd.pipeline.claimer`: what the loop says of files it has seen and not claimed."""

from __future__ import annotations

from inboxd.config import InboxConfig
from inboxd.pipeline.claim import new_claimer
from inboxd.pipeline.claimer import STUCK_SCANS, Claimer
from inboxd.pipeline.inboxes import InboxSet
from inboxd.pipeline.journal import Journal
from inboxd.pipeline.work import WorkQueue
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
