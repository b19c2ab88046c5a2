"""`inboxd.watch.queue.PathQueue`: bounded, de-duplicated, never raising on put."""

from __future__ import annotations

import threading
import time

from inboxd.watch.queue import PathQueue


def test_take_all_returns_paths_in_order_and_empties_the_queue() -> None:
    q = PathQueue()
    q.put("a", "/a/1.jsonl")
    q.put("b", "/b/2.jsonl", moved_in=True)
    q.put("a", "/a/3.jsonl")
    assert len(q) == 3
    items, overflowed = q.take_all(timeout=0)
    assert items == [("a", "/a/1.jsonl", False), ("b", "/b/2.jsonl", True), ("a", "/a/3.jsonl", False)]
    assert overflowed is False
    assert len(q) == 0
    assert q.take_all(timeout=0) == ([], False)


def test_a_path_put_twice_is_one_item_and_moved_in_sticks() -> None:
    q = PathQueue()
    q.put("a", "/a/x.jsonl", moved_in=True)
    q.put("a", "/a/x.jsonl")  # a later plain event does not clear the rename-in mark
    q.put("a", "/a/y.jsonl")
    q.put("a", "/a/y.jsonl", moved_in=True)  # nor does an earlier one hide a later rename-in
    items, _ = q.take_all(timeout=0)
    assert items == [("a", "/a/x.jsonl", True), ("a", "/a/y.jsonl", True)]


def test_the_same_path_in_two_inboxes_is_two_items() -> None:
    q = PathQueue()
    q.put("a", "/p")
    q.put("b", "/p")
    assert len(q) == 2


def test_a_full_queue_drops_new_paths_and_reports_the_overflow_once() -> None:
    q = PathQueue(capacity=2)
    q.put("a", "/1")
    q.put("a", "/2")
    q.put("a", "/3")  # dropped
    assert len(q) == 2
    q.put("a", "/1", moved_in=True)  # already queued: updated, not an overflow by itself
    items, overflowed = q.take_all(timeout=0)
    assert items == [("a", "/1", True), ("a", "/2", False)]
    assert overflowed is True
    assert q.take_all(timeout=0) == ([], False)  # the flag is reset by the take


def test_updating_a_queued_path_at_capacity_is_not_an_overflow() -> None:
    q = PathQueue(capacity=1)
    q.put("a", "/1")
    q.put("a", "/1", moved_in=True)
    assert q.take_all(timeout=0) == ([("a", "/1", True)], False)


def test_mark_overflow_is_reported_without_paths() -> None:
    q = PathQueue()
    q.mark_overflow()
    t0 = time.monotonic()
    assert q.take_all(timeout=5) == ([], True)
    assert time.monotonic() - t0 < 1


def test_put_never_raises() -> None:
    q = PathQueue(capacity=object())  # type: ignore[arg-type]  # makes the capacity comparison raise
    q.put("a", "/1")
    assert q.take_all(timeout=0) == ([], True)  # the path is lost, so the daemon must rescan


def test_take_all_waits_at_most_the_timeout() -> None:
    q = PathQueue()
    t0 = time.monotonic()
    assert q.take_all(timeout=0.05) == ([], False)
    assert 0.04 <= time.monotonic() - t0 < 1


def test_wake_returns_a_waiting_take_at_once_and_only_once() -> None:
    q = PathQueue()
    q.wake()
    t0 = time.monotonic()
    assert q.take_all(timeout=5) == ([], False)
    assert time.monotonic() - t0 < 1
    t0 = time.monotonic()
    q.take_all(timeout=0.05)  # the wake was consumed: this one waits
    assert time.monotonic() - t0 >= 0.04


def test_put_from_another_thread_wakes_a_waiting_take() -> None:
    q = PathQueue()
    timer = threading.Timer(0.05, q.put, args=("a", "/1"))
    timer.start()
    t0 = time.monotonic()
    items, _ = q.take_all(timeout=5)
    timer.join()
    assert items == [("a", "/1", False)]
    assert time.monotonic() - t0 < 2
