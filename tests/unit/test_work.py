"""`inboxd.pipeline.work`: the WorkQueue between the daemon loop and the workers, and Heartbeat."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from inboxd.config import InboxConfig
from inboxd.pipeline import work
from inboxd.pipeline.work import Heartbeat, Job, WorkQueue

INBOXES = {k: InboxConfig(path=Path(f"/srv/{k}"), purpose="eval") for k in "abc"}


def job(inbox: str, name: str) -> Job:
    return Job(inbox=INBOXES[inbox], claim=Path(f"/srv/{inbox}/.inboxd/{name}"), name=name)


class Clock:
    """A fake `time` for the module: monotonic() only moves when told to."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def monotonic(self) -> float:
        return self.t

    def time(self) -> float:
        return time.time()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(work, "time", SimpleNamespace(monotonic=c.monotonic, time=c.time))
    return c


def names(q: WorkQueue, n: int) -> list[str | None]:
    out: list[str | None] = []
    for _ in range(n):
        j = q.get(timeout=0)
        out.append(j.name if j is not None else None)
    return out


def test_job_key_is_the_inbox_path() -> None:
    assert job("a", "x").key == "/srv/a"


def test_round_robin_across_inboxes() -> None:
    q = WorkQueue()
    for n in ("a1", "a2", "a3"):
        q.put(job("a", n))
    q.put(job("b", "b1"))
    q.put(job("c", "c1"))
    q.put(job("c", "c2"))
    assert names(q, 7) == ["a1", "b1", "c1", "a2", "c2", "a3", None]


def test_a_burst_in_one_inbox_does_not_starve_another() -> None:
    q = WorkQueue()
    for i in range(100):
        q.put(job("a", f"a{i}"))
    assert names(q, 1) == ["a0"]
    q.put(job("b", "b0"))
    assert names(q, 3) == ["a1", "b0", "a2"]  # b waits one turn, not for a's backlog
    assert q.counts() == (97, 4)


def test_get_on_an_empty_queue_returns_none_after_the_timeout() -> None:
    q = WorkQueue()
    t0 = time.monotonic()
    assert q.get(timeout=0.05) is None
    assert 0.04 <= time.monotonic() - t0 < 1


def test_delayed_jobs_wait_until_due(clock: Clock) -> None:
    q = WorkQueue()
    q.put(job("a", "late"), delay=5)
    q.put(job("a", "later"), delay=10)
    assert q.counts() == (2, 0)
    assert q.queued_by_inbox() == {"/srv/a": 2}
    assert q.get(timeout=0) is None
    clock.t += 4.999
    assert q.get(timeout=0) is None
    clock.t += 0.001
    got = q.get(timeout=0)
    assert got is not None and got.name == "late" and got.not_before == 1005.0
    assert q.get(timeout=0) is None
    clock.t += 5
    assert names(q, 2) == ["later", None]


def test_delayed_jobs_come_out_in_due_order(clock: Clock) -> None:
    q = WorkQueue()
    q.put(job("a", "third"), delay=3)
    q.put(job("a", "first"), delay=1)
    q.put(job("a", "second-a"), delay=2)
    q.put(job("a", "second-b"), delay=2)  # a tie keeps the order of put
    clock.t += 10
    assert names(q, 5) == ["first", "second-a", "second-b", "third", None]


def test_a_waiting_get_wakes_when_a_delayed_job_falls_due() -> None:
    q = WorkQueue()
    q.put(job("a", "x"), delay=0.05)
    t0 = time.monotonic()
    got = q.get(timeout=3)
    assert got is not None and got.name == "x"
    assert 0.04 <= time.monotonic() - t0 < 1.5


def test_pause_holds_every_job_back_and_resume_releases_them(clock: Clock) -> None:
    q = WorkQueue()
    q.put(job("a", "x"))
    q.put(job("b", "y"), delay=1)
    q.pause()
    assert q.paused is True
    clock.t += 2
    assert q.get(timeout=0) is None
    assert q.counts() == (2, 0)  # held, not dropped
    q.resume()
    assert q.paused is False
    assert sorted(n for n in names(q, 2) if n) == ["x", "y"]


def test_resume_wakes_a_waiting_worker() -> None:
    q = WorkQueue()
    q.pause()
    q.put(job("a", "x"))
    got: list[Job | None] = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    t.start()
    time.sleep(0.05)
    assert t.is_alive() and got == []
    t0 = time.monotonic()
    q.resume()
    t.join(3)
    assert got and got[0] is not None and got[0].name == "x"
    assert time.monotonic() - t0 < 1


def test_close_makes_get_return_none_even_with_jobs_queued() -> None:
    q = WorkQueue()
    q.put(job("a", "x"))
    q.close()
    assert q.get(timeout=1) is None
    q2 = WorkQueue()
    got: list[Job | None] = [job("a", "sentinel")]
    t = threading.Thread(target=lambda: got.__setitem__(0, q2.get(timeout=5)))
    t.start()
    time.sleep(0.02)
    q2.close()
    t.join(2)
    assert not t.is_alive() and got == [None]


def test_counts_track_queued_and_busy_jobs(clock: Clock) -> None:
    q = WorkQueue()
    assert q.counts() == (0, 0)
    q.put(job("a", "x"))
    q.put(job("b", "y"))
    q.put(job("b", "z"), delay=3)
    assert q.counts() == (3, 0)
    assert q.queued_by_inbox() == {"/srv/a": 1, "/srv/b": 2}
    q.get(timeout=0)
    assert q.counts() == (2, 1)
    q.get(timeout=0)
    assert q.counts() == (1, 2)
    q.done()
    q.done()
    assert q.counts() == (1, 0)


def test_drain_unstarted_takes_queued_and_delayed_but_not_busy_jobs() -> None:
    q = WorkQueue()
    q.put(job("a", "running"))
    assert q.get(timeout=0) is not None
    q.put(job("a", "queued"))
    q.put(job("b", "retry"), delay=60)
    drained = q.drain_unstarted()
    assert sorted(j.name for j in drained) == ["queued", "retry"]
    assert q.counts() == (0, 1)
    assert q.queued_by_inbox() == {}
    assert q.get(timeout=0) is None
    assert q.drain_unstarted() == []


def test_wait_idle() -> None:
    q = WorkQueue()
    assert q.wait_idle(0) is True
    q.put(job("a", "x"))
    assert q.get(timeout=0) is not None
    t0 = time.monotonic()
    assert q.wait_idle(0.05) is False
    assert 0.04 <= time.monotonic() - t0 < 1
    timer = threading.Timer(0.05, q.done)
    timer.start()
    t0 = time.monotonic()
    assert q.wait_idle(5) is True
    assert time.monotonic() - t0 < 2
    timer.join()


def test_heartbeat(clock: Clock) -> None:
    hb = Heartbeat()
    assert (hb.busy, hb.what) == (False, "idle")
    clock.t += 1000
    assert hb.wedged(1) is False  # an idle worker is never wedged
    hb.start("upload")
    assert (hb.busy, hb.what, hb.last) == (True, "upload", clock.t)
    clock.t += 10
    assert hb.wedged(10) is False  # the limit itself is not yet wedged
    clock.t += 0.5
    assert hb.wedged(10) is True
    hb.beat()  # progress without a new stage
    assert (hb.what, hb.last) == ("upload", clock.t)
    assert hb.wedged(10) is False
    hb.beat("preprocess")
    assert hb.what == "preprocess"
    hb.stop()
    clock.t += 1000
    assert (hb.busy, hb.what, hb.wedged(1)) == (False, "idle", False)


# --- the archive lane ----------------------------------------------------------------------


def test_the_archive_lane_is_served_apart_and_never_paused():
    q = WorkQueue()
    up, done = job("a", "up"), job("a", "done")
    done.archive = True
    q.put(up)
    q.put(done)
    q.pause()  # a rejected key holds uploads back; a file already uploaded still gets archived
    assert q.get(timeout=0.01) is None
    assert q.get_archive(timeout=0.01) is done
    assert q.get_archive(timeout=0.01) is None
    q.resume()
    assert q.get(timeout=0.01) is up


def test_a_file_waiting_in_the_archive_lane_counts_as_queued_and_keeps_the_queue_busy():
    q = WorkQueue()
    j = job("b", "x")
    assert q.get(timeout=0.01) is None
    q.put(j)
    taken = q.get(timeout=0.01)
    assert taken is j
    taken.archive = True
    q.put(taken)  # the worker hands it to the archivers
    q.done()
    assert q.counts() == (1, 0)
    assert q.queued_by_inbox() == {str(INBOXES["b"].path): 1}
    assert not q.wait_idle(0.05)  # not idle while it waits to be archived (shutdown waits for it)
    assert q.get_archive(timeout=0.01) is j
    assert q.counts() == (0, 1)
    q.done()
    assert q.wait_idle(0.05)


def test_a_retried_archive_goes_back_to_the_upload_lane():
    q = WorkQueue()
    j = job("c", "y")
    j.archive = True
    q.put(j, delay=0.01)  # `_retry`: with a delay, it starts again from the journal's stage
    assert not j.archive
    time.sleep(0.02)
    assert q.get_archive(timeout=0.01) is None
    assert q.get(timeout=0.05) is j


def test_close_wakes_an_archiver_waiting():
    q = WorkQueue()
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(q.get_archive(timeout=5)))
    t.start()
    time.sleep(0.05)
    q.close()
    t.join(2)
    assert not t.is_alive() and got == [None]
