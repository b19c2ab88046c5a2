"""`inboxd.watch.observers.InotifyWatch`: watchdog's overflow hook reaches the PathQueue, moves are
not held back, and nothing in watchdog is changed for the rest of the process."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.observers.inotify import InotifyWatchGroup
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

from inboxd.watch.observers import InotifyWatch
from inboxd.watch.queue import PathQueue

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


def take_until(q: PathQueue, want: str, timeout: float = 3.0) -> tuple[set[str], bool, float]:
    """Paths taken until `want` is among them: (paths, overflowed seen, seconds waited)."""
    t0 = time.monotonic()
    seen: set[str] = set()
    overflowed = False
    while time.monotonic() - t0 < timeout:
        items, over = q.take_all(timeout=0.05)
        seen |= {p for _, p, _ in items}
        overflowed |= over
        if want in seen:
            break
    return seen, overflowed, time.monotonic() - t0


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[InotifyWatch, PathQueue, Path]]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    q = PathQueue()
    w = InotifyWatch("k", inbox, q)
    w.start()
    try:
        yield w, q, inbox
    finally:
        w.stop()


def test_a_new_file_is_queued(watched: tuple[InotifyWatch, PathQueue, Path]) -> None:
    w, q, inbox = watched
    assert w.alive() and w.folder_present()
    (inbox / "a.jsonl").write_text("{}\n")
    seen, _, _ = take_until(q, str(inbox / "a.jsonl"))
    assert str(inbox / "a.jsonl") in seen


def test_a_rename_out_does_not_hold_back_later_events(watched: tuple[InotifyWatch, PathQueue, Path],
                                                      tmp_path: Path) -> None:
    """watchdog holds an IN_MOVED_FROM 0.5 s to pair it, in a FIFO: not for inboxd's observers."""
    w, q, inbox = watched
    (inbox / "claimed.jsonl").write_text("{}\n")
    take_until(q, str(inbox / "claimed.jsonl"))
    os.rename(inbox / "claimed.jsonl", tmp_path / "claimed.jsonl")  # a claim: out of the watched folder
    (inbox / "next.jsonl").write_text("{}\n")
    seen, _, waited = take_until(q, str(inbox / "next.jsonl"))
    assert str(inbox / "next.jsonl") in seen
    assert waited < 0.4, f"the event behind a move waited {waited:.2f} s"


def test_a_rename_out_is_no_event(watched: tuple[InotifyWatch, PathQueue, Path], tmp_path: Path) -> None:
    """Every claim is a rename out of the inbox: its event would only wake the loop to find the
    path gone (issue 14). A rename within the inbox reports the new name, as a move in."""
    w, q, inbox = watched
    for name in ("claimed.jsonl", "first.jsonl"):
        (inbox / name).write_text("{}\n")
        take_until(q, str(inbox / name))
    while q.take_all(timeout=0.3)[0]:  # their close events too: nothing left before the renames
        pass
    os.rename(inbox / "claimed.jsonl", tmp_path / "claimed.jsonl")  # a claim
    os.rename(inbox / "first.jsonl", inbox / "second.jsonl")  # a rename within the inbox
    seen, _, _ = take_until(q, str(inbox / "second.jsonl"))
    time.sleep(0.2)
    seen |= {p for _, p, _ in q.take_all(timeout=0.05)[0]}
    assert str(inbox / "second.jsonl") in seen
    assert str(inbox / "claimed.jsonl") not in seen and str(inbox / "first.jsonl") not in seen, seen


def test_a_rename_in_is_a_move_in(watched: tuple[InotifyWatch, PathQueue, Path], tmp_path: Path) -> None:
    w, q, inbox = watched
    (tmp_path / "in.jsonl").write_text("{}\n")
    os.rename(tmp_path / "in.jsonl", inbox / "in.jsonl")
    t0 = time.monotonic()
    moved: list[bool] = []
    while time.monotonic() - t0 < 3 and not moved:
        items, _ = q.take_all(timeout=0.05)
        moved = [m for _, p, m in items if p == str(inbox / "in.jsonl")]
    assert moved == [True]


def test_a_kernel_queue_overflow_marks_the_queue(watched: tuple[InotifyWatch, PathQueue, Path]) -> None:
    """What the inotify reader does with IN_Q_OVERFLOW (wd -1): every watch group hears it."""
    w, q, inbox = watched
    assert q.take_all(timeout=0) == ([], False)
    observer = w._observer
    assert observer is not None
    overflow = InotifyEvent(-1, InotifyConstants.IN_Q_OVERFLOW, 0, b"")  # type: ignore[arg-type]
    observer._inotify_instance.handle_event(overflow)
    assert q.take_all(timeout=0) == ([], True)
    # and the watch goes on
    (inbox / "after.jsonl").write_text("{}\n")
    seen, _, _ = take_until(q, str(inbox / "after.jsonl"))
    assert str(inbox / "after.jsonl") in seen


def test_watchdog_itself_is_left_as_it_is(watched: tuple[InotifyWatch, PathQueue, Path]) -> None:
    assert InotifyMoveEventGrouper.delay == 0.5
    assert InotifyWatchGroup.on_queue_overflow.__module__ == "watchdog.observers.inotify"
    observer = watched[0]._observer
    assert observer is not None
    group = next(iter(observer.emitters))._inotify  # type: ignore[attr-defined]
    assert group is not None and group._move_event_grouper._queue.delay == 0.0  # ours only


def test_stop_ends_every_thread(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    w = InotifyWatch("k", tmp_path, PathQueue())
    w.start()
    assert w.alive()
    w.stop()
    assert not w.alive()
    deadline = time.monotonic() + 3
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not set(threading.enumerate()) - before


def test_a_missing_folder_raises_and_leaves_no_thread(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    w = InotifyWatch("k", tmp_path / "missing", PathQueue())
    with pytest.raises(OSError):
        w.start()
    assert not w.alive()
    deadline = time.monotonic() + 3
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not set(threading.enumerate()) - before
