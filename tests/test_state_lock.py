"""One daemon per state_dir: a second daemon on the same state_dir is refused with exit 2,
naming the state_dir and the pid that holds it, even with the metrics endpoint off (which
used to be the only thing that stopped it). The lock goes with its holder, kill -9 included."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.daemon import DaemonProc, start_daemon, write_config

NO_API = "http://127.0.0.1:9/v1"  # no file is dropped: nothing is sent


def test_a_second_daemon_on_one_state_dir_is_refused(tmp_path: Path) -> None:
    inbox_a, inbox_b = tmp_path / "a", tmp_path / "b"
    inbox_a.mkdir()
    inbox_b.mkdir()
    # two configs, two inboxes, one state_dir, no metrics: nothing else stands in the way
    first = write_config(tmp_path, base_url=NO_API, name="a.toml", inboxes=[{"path": inbox_a, "purpose": "eval"}])
    second = write_config(tmp_path, base_url=NO_API, name="b.toml", inboxes=[{"path": inbox_b, "purpose": "eval"}])
    state_dir = tmp_path / "state"
    with start_daemon(first, key="k") as d1:
        with DaemonProc(second, key="k") as d2:
            assert d2.wait_exit() == 2, d2.tail()
            said = "\n".join(d2.stderr)
            assert "daemon.state_dir" in said and str(state_dir) in said, said
            assert f"pid {d1.pid}" in said, said
            assert not d2.events("daemon.started")
            assert not (inbox_b / ".inboxd").exists()  # refused before anything was created
        d1.kill9()
    # the kernel dropped the lock with its holder: the next daemon starts
    with start_daemon(second, key="k") as d3:
        d3.wait_event("inbox.watching")
        assert d3.stop() == 0
