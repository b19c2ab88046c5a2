"""`inboxd.watch.readiness.ReadinessTracker` (SPEC §2), on an explicit clock."""

from __future__ import annotations

import os

import pytest

from inboxd.watch.readiness import ReadinessTracker, signature


def st(size: int = 10, mtime_ns: int = 1_000, ino: int = 7) -> os.stat_result:
    return os.stat_result((0o100644, ino, 1, 1, 0, 0, size, 0, 0, 0), {"st_mtime_ns": mtime_ns})


def test_signature_is_inode_size_and_mtime_ns() -> None:
    assert signature(st(size=3, mtime_ns=4, ino=5)) == (5, 3, 4)


def test_a_file_is_ready_once_quiet_for_settle_seconds_and_not_before() -> None:
    r = ReadinessTracker(settle_seconds=1.0)
    assert r.observe("/i/a", st(), now=100.0) is False
    assert r.observe("/i/a", st(), now=100.999) is False
    assert r.observe("/i/a", st(), now=101.0) is True  # the boundary itself is ready
    assert r.observe("/i/a", st(), now=500.0) is True


@pytest.mark.parametrize("changed", [st(size=11), st(mtime_ns=2_000), st(ino=8)], ids=["size", "mtime", "inode"])
def test_a_change_restarts_the_clock(changed: os.stat_result) -> None:
    r = ReadinessTracker(settle_seconds=1.0)
    r.observe("/i/a", st(), now=100.0)
    assert r.observe("/i/a", changed, now=100.6) is False
    assert r.observe("/i/a", changed, now=101.0) is False  # would be ready without the change
    assert r.observe("/i/a", changed, now=101.599) is False
    assert r.observe("/i/a", changed, now=101.6) is True


def test_an_unchanged_look_does_not_restart_the_clock() -> None:
    r = ReadinessTracker(settle_seconds=1.0)
    r.observe("/i/a", st(), now=100.0)
    r.observe("/i/a", st(), now=100.9)
    assert r.observe("/i/a", st(), now=101.0) is True


def test_a_rename_in_is_ready_at_once_and_still_tracked() -> None:
    r = ReadinessTracker(settle_seconds=60.0)
    assert r.observe("/i/a", st(), moved_in=True, now=100.0) is True
    assert r.pending() == 1
    r2 = ReadinessTracker(settle_seconds=60.0)
    r2.observe("/i/a", st(), now=100.0)
    assert r2.observe("/i/a", st(size=99), moved_in=True, now=100.1) is True


def test_settle_zero_is_ready_on_first_sight() -> None:
    r = ReadinessTracker(settle_seconds=0)
    assert r.observe("/i/a", st(), now=5.0) is True


def test_due_lists_the_paths_whose_quiet_period_ran_out() -> None:
    r = ReadinessTracker(settle_seconds=2.0)
    assert r.due(now=0.0) == []
    r.observe("/i/a", st(), now=10.0)
    r.observe("/i/b", st(), now=11.0)
    assert r.due(now=11.999) == []
    assert r.due(now=12.0) == ["/i/a"]
    assert sorted(r.due(now=13.0)) == ["/i/a", "/i/b"]
    r.observe("/i/a", st(size=1), now=12.5)  # changed: due again two seconds later
    assert r.due(now=13.0) == ["/i/b"]
    assert sorted(r.due(now=14.5)) == ["/i/a", "/i/b"]


def test_next_due_is_the_earliest_last_change_plus_settle() -> None:
    r = ReadinessTracker(settle_seconds=2.0)
    assert r.next_due() is None
    r.observe("/i/a", st(), now=10.0)
    r.observe("/i/b", st(), now=11.0)
    assert r.next_due() == 12.0
    r.observe("/i/a", st(size=1), now=11.5)
    assert r.next_due() == 13.0
    r.forget("/i/b")
    assert r.next_due() == 13.5
    r.forget("/i/a")
    assert r.next_due() is None


def test_forget_starts_over() -> None:
    r = ReadinessTracker(settle_seconds=1.0)
    r.observe("/i/a", st(), now=0.0)
    r.forget("/i/a")
    r.forget("/i/never-seen")  # no error
    assert r.pending() == 0
    assert r.observe("/i/a", st(), now=5.0) is False  # first sight again: the clock starts now


def test_forget_under_and_pending_in_respect_folder_boundaries() -> None:
    r = ReadinessTracker(settle_seconds=1.0)
    for p in ("/i/a/1", "/i/a/sub/2", "/i/ab/3", "/i/b/4"):
        r.observe(p, st(), now=0.0)
    assert r.pending() == 4
    assert r.pending_in("/i/a") == 2
    assert r.pending_in("/i/a/") == 2
    assert r.pending_in("/i/ab") == 1
    r.forget_under("/i/a/")
    assert r.pending() == 2
    assert sorted(r.due(now=1.0)) == ["/i/ab/3", "/i/b/4"]
