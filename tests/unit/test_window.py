"""The claimer's window: however many files wait in an inbox, at most `window` of them are
held in memory (settling or ready); the rest are found again by later scans, and every file
is claimed in the end."""

from __future__ import annotations

import pytest

from inboxd.config import InboxConfig
from inboxd.pipeline import claimer as claimer_module
from inboxd.pipeline.claim import new_claimer
from inboxd.pipeline.claimer import Claimer
from inboxd.pipeline.inboxes import InboxSet
from inboxd.pipeline.work import WorkQueue
from inboxd.state.journal import Journal
from inboxd.watch.queue import PathQueue

WINDOW = 8
FILES = 60


@pytest.fixture
def backlog(tmp_path, monkeypatch):
    monkeypatch.setattr(claimer_module, "REFILL_GAP", 0.0)  # refill at every call, not once a second
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(FILES):
        (inbox / f"f{i:03}.jsonl").write_bytes(b"{}\n")
    inboxes = InboxSet(new_claimer())
    state = inboxes.add(InboxConfig(path=inbox, purpose="eval"), PathQueue())
    queue = WorkQueue()
    claimer = Claimer(inboxes, Journal(tmp_path / "state"), queue, settle_seconds=0.0, held_open_warn_seconds=60.0,
                      state_dir=tmp_path / "state", window=WINDOW)
    yield inbox, state, claimer, queue
    state.stop_watch()


def _held(claimer: Claimer, state) -> int:
    return claimer.tracker.pending() + len(state.ready)


def test_a_scan_holds_no_more_than_the_window_and_counts_the_rest(backlog):
    inbox, state, claimer, queue = backlog
    claimer.scan(state)
    assert _held(claimer, state) == WINDOW
    assert claimer.beyond[state.key] == FILES - WINDOW
    assert claimer.waiting(state.key) == FILES
    # an event for a file beyond the window keeps nothing of it
    claimer.look(state, str(inbox / "f059.jsonl"), moved_in=True)
    claimer.look(state, str(inbox / "new.jsonl"), moved_in=True)
    assert _held(claimer, state) == WINDOW
    assert claimer.pending()


def test_every_file_is_claimed_a_window_at_a_time(backlog):
    inbox, state, claimer, queue = backlog
    claimer.scan(state)
    claimed: list[str] = []
    most = 0
    for _ in range(10 * FILES):
        claimer.refill()
        claimer.look_again_due()
        most = max(most, _held(claimer, state))
        claimer.claim_ready(4)
        while (job := queue.get(timeout=0.01)) is not None:  # a worker finishes each at once
            claimed.append(job.name)
            queue.done()
        if len(claimed) == FILES:
            break
    assert most <= WINDOW
    assert sorted(claimed) == sorted(f"f{i:03}.jsonl" for i in range(FILES))
    assert not claimer.pending()


def test_a_refill_reads_the_folder_only_until_the_window_is_full(backlog, monkeypatch):
    inbox, state, claimer, queue = backlog
    claimer.scan(state)  # the full scan counts the backlog
    claimer.claim_ready(WINDOW)
    while queue.get(timeout=0.01) is not None:
        queue.done()
    assert claimer.held(state) == 0
    read: list[str] = []
    real = claimer_module.candidate_names

    def counting(*args, **kwargs):
        for path, name in real(*args, **kwargs):
            read.append(name)
            yield path, name

    monkeypatch.setattr(claimer_module, "candidate_names", counting)
    claimer.refill()
    assert claimer.held(state) == WINDOW
    assert len(read) <= 2 * WINDOW + 1, f"a refill read {len(read)} of {FILES - WINDOW} names"
    assert claimer.beyond[state.key] > 0 and claimer.pending()  # the rest is still known to wait
