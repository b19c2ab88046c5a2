"""Two gates on the way out, in process: the pause while the API rejects the key
(`pipeline.pause.AuthGate`: uploads held back, none failed, the key probed in the background
until it is accepted) and the bandwidth caps (`api._bandwidth`: a token bucket on a clock the
test moves)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import structlog

from inboxd.api import Cancelled
from inboxd.api._bandwidth import Bandwidth, Metered, metered, slice_size
from inboxd.config import parse_config
from inboxd.pipeline.pause import AuthGate
from inboxd.pipeline.work import Job, WorkQueue


@pytest.fixture(autouse=True)
def _quiet() -> None:
    structlog.configure(processors=[structlog.processors.JSONRenderer()],
                        logger_factory=structlog.ReturnLoggerFactory())


def job(tmp: Path) -> Job:
    cfg = parse_config({"inboxes": [{"path": str(tmp), "purpose": "fine-tune"}]})
    return Job(inbox=cfg.inboxes[0], claim=tmp / "1.a.jsonl", name="a.jsonl")


def wait_until(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_a_rejected_key_holds_every_upload_back_until_a_probe_is_accepted(tmp_path: Path) -> None:
    queue = WorkQueue()
    gate = AuthGate(queue, probe_every=3600)
    queue.put(job(tmp_path))
    gate.rejected(RuntimeError("401"))
    assert gate.paused and queue.paused
    assert queue.get(timeout=0.01) is None  # held back, not failed
    probes: list[str] = []
    gate.tick(lambda: probes.append("probe") or False)  # not due yet: no probe
    assert probes == []
    gate.tick(lambda: probes.append("refused") or False, now_probe=True)  # a SIGHUP probes at once
    assert wait_until(lambda: probes == ["refused"] and not gate._probing)
    assert gate.paused  # a refused probe: still paused
    gate.tick(lambda: (_ for _ in ()).throw(RuntimeError("network down")), now_probe=True)
    assert wait_until(lambda: not gate._probing) and gate.paused  # a failing probe too
    gate.tick(lambda: True, now_probe=True)
    assert wait_until(lambda: not gate.paused)
    assert not queue.paused and queue.get(timeout=1) is not None  # the held file goes on


def test_a_second_rejection_keeps_the_first_time_and_resume_when_running_does_nothing(tmp_path: Path) -> None:
    queue = WorkQueue()
    gate = AuthGate(queue)
    gate.resume("nothing was paused")
    assert not gate.paused and not queue.paused
    gate.rejected(RuntimeError("401"))
    since = gate.paused_since
    gate.rejected(RuntimeError("403"))
    assert gate.paused_since == since


def test_the_probe_is_due_every_probe_seconds(tmp_path: Path) -> None:
    gate = AuthGate(WorkQueue(), probe_every=0.0, log_every=0.0)
    gate.rejected(RuntimeError("401"))
    seen = threading.Event()
    gate.tick(lambda: seen.set() or False)
    assert seen.wait(5)


# --- bandwidth --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_starts_empty_and_books_a_debt_that_later_takers_queue_behind() -> None:
    clock = Clock()
    b = Bandwidth(1000, clock=clock)
    assert b.burst == 1024  # a quarter second of 1000 B/s is below the 1 KiB floor
    assert b.reserve(500) == pytest.approx(0.5)  # no free burst at the start
    assert b.reserve(500) == pytest.approx(1.0)  # behind the first
    clock.now += 1.0
    assert b.reserve(0) == pytest.approx(0.0)  # the debt is paid
    clock.now += 60.0  # idle for a minute: at most `burst` saved
    assert b.reserve(1024) == 0.0 and b.reserve(1000) == pytest.approx(1.0)
    assert b.charged == 3024


def test_a_cancelled_wait_gives_the_bytes_back() -> None:
    clock = Clock()
    b = Bandwidth(100, burst=0, clock=clock)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        b.take(50, cancel)
    assert b.charged == 0 and b.reserve(0) == 0.0  # refunded: no debt left


def test_take_waits_for_what_it_booked() -> None:
    b = Bandwidth(10_000, burst=0)
    t0 = time.monotonic()
    b.take(300)  # 30 ms at 10 kB/s
    b.take(0, threading.Event())
    assert time.monotonic() - t0 >= 0.025


def test_a_cap_must_be_positive_and_zero_means_none() -> None:
    with pytest.raises(ValueError):
        Bandwidth(0)
    assert Bandwidth.of(0) is None and Bandwidth.of(None) is None
    assert Bandwidth.of(5).rate == 5.0 and "5 B/s" in repr(Bandwidth.of(5))


def test_slices_are_a_twentieth_of_a_second_of_the_slowest_cap() -> None:
    assert slice_size([], 1 << 20) == 1 << 20
    assert slice_size([Bandwidth(1_000_000), Bandwidth(200_000)], 1 << 20) == 10_000
    assert slice_size([Bandwidth(100)], 1 << 20) == 1024  # never below 1 KiB
    assert slice_size([Bandwidth(1e9)], 65536) == 65536  # never above the chunk


def test_metered_progress_carries_every_bucket_and_still_reports() -> None:
    seen: list[int] = []

    def progress(n: int) -> None:
        seen.append(n)

    a, b = Bandwidth(10), Bandwidth(20)
    assert metered(progress) is progress  # no cap: the callback itself
    one = metered(progress, a, None)
    assert isinstance(one, Metered) and one.limiters == (a,)
    both = metered(one, b)
    assert isinstance(both, Metered) and both.limiters == (a, b)
    both(7)
    assert seen == [7]
    Metered(None, (a,))(3)  # no callback: nothing to report
