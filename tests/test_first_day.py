"""Issue 15, an operator's first day: config check checks the machine, start-up refuses bad
resources by their key (exit 2, nothing created), `status` without a journal, `upload` that
checks like the daemon and always answers one JSON object. Real subprocesses, as a user runs them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from inboxd.config import load_config

REPO = Path(__file__).resolve().parents[1]
KEY = "test-key-first-day-0123456789"


def inboxd(args: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("TOGETHER_") and k not in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "NOTIFY_SOCKET")}
    return subprocess.run([sys.executable, "-m", "inboxd", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**base, **(env or {})})


def toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value if isinstance(value, (int, float)) else str(value))


def write_config(tmp_path: Path, inboxes: list[dict], daemon: dict | None = None, api: dict | None = None,
                 name: str = "inboxd.toml") -> Path:
    daemon = {"state_dir": tmp_path / "state", "metrics_address": "", "log_format": "json", "settle_seconds": 0.1,
              **(daemon or {})}
    lines = ["[api]", *(f"{k} = {toml(v)}" for k, v in (api or {}).items()), "", "[daemon]"]
    lines += [f"{k} = {toml(v)}" for k, v in daemon.items()]
    for inbox in inboxes:
        lines += ["", "[[inboxes]]", *(f"{k} = {toml(v)}" for k, v in {"purpose": "batch-api", **inbox}.items())]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """A healthy machine: an inbox and a state_dir that exist."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tmp_path / "state").mkdir()
    return inbox, tmp_path / "state"


@pytest.fixture
def tmpfs(tmp_path: Path):
    """Mount a fresh tmpfs (another filesystem than tmp_path's); unmounted after the test."""
    mounts: list[Path] = []

    def mount(name: str, *options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        opts = ",".join(("size=4m", *options))
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"mount -t tmpfs is not permitted here ({out.stderr.strip()}); the cross-filesystem "
                        "and read-only cases need a second filesystem")
        mounts.append(point)
        return point

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


# --- 1. inbox paths resolved at load: a symlink is no second name ----------------------------


def test_a_symlinked_inbox_is_resolved_and_listing_it_twice_is_an_error(tmp_path, setup):
    inbox, _ = setup
    link = tmp_path / "link"
    link.symlink_to(inbox)
    cfg = write_config(tmp_path, [{"path": link}])
    assert load_config(cfg).inboxes[0].path == inbox  # watched at the real folder: inotify sees it
    data = json.loads(inboxd(["config", "check", "--config", str(cfg), "--json"]).stdout)
    assert data["inboxes"][0]["path"] == str(inbox)

    cfg = write_config(tmp_path, [{"path": inbox, "purpose": "batch-api"}, {"path": link, "purpose": "eval"}])
    out = inboxd(["config", "check", "--config", str(cfg)])
    assert out.returncode == 2, out
    assert "inboxes[1].path: duplicate of inboxes[0].path" in out.stderr and str(inbox) in out.stderr

    (inbox / "sub").mkdir()
    (tmp_path / "sublink").symlink_to(inbox / "sub")
    cfg = write_config(tmp_path, [{"path": inbox}, {"path": tmp_path / "sublink", "purpose": "eval"}])
    out = inboxd(["config", "check", "--config", str(cfg)])
    assert out.returncode == 2 and "inboxes[1].path" in out.stderr and "inside another" in out.stderr, out.stderr


def test_archiving_into_another_inbox_through_a_symlink_is_an_error(tmp_path, setup):
    inbox, _ = setup
    other = tmp_path / "other"
    other.mkdir()
    (tmp_path / "archive").symlink_to(other)
    cfg = write_config(tmp_path, [{"path": inbox, "done_dir": tmp_path / "archive"}, {"path": other}])
    out = inboxd(["config", "check", "--config", str(cfg)])
    assert out.returncode == 2, out
    assert "inboxes[0].done_dir" in out.stderr and "uploaded again" in out.stderr


# --- 2. a missing inbox (or state_dir) is an error, unless create = true (or systemd) --------


def test_run_refuses_a_missing_inbox_unless_create_is_true(tmp_path, setup):
    _, state = setup
    typo = tmp_path / "inbxo"
    cfg = write_config(tmp_path, [{"path": typo}])
    out = inboxd(["run", "--config", str(cfg), "--emulator", "--once"])
    assert out.returncode == 2, out
    assert f"inboxes[0].path: {typo} does not exist; create it or set create = true" in out.stderr
    assert not typo.exists() and not (state / "journal.sqlite3").exists()  # nothing was created

    cfg = write_config(tmp_path, [{"path": typo, "create": True}])
    out = inboxd(["run", "--config", str(cfg), "--emulator", "--once"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert typo.is_dir()


def test_run_refuses_a_missing_state_dir_except_under_systemd(tmp_path, setup):
    inbox, state = setup
    state.rmdir()
    cfg = write_config(tmp_path, [{"path": inbox}])
    out = inboxd(["run", "--config", str(cfg), "--emulator", "--once"])
    assert out.returncode == 2, out
    assert f"daemon.state_dir: {state} does not exist" in out.stderr
    assert not state.exists() and not (inbox / ".inboxd").exists()
    # systemd's StateDirectory= makes the folder and says so in STATE_DIRECTORY
    out = inboxd(["run", "--config", str(cfg), "--emulator", "--once"], env={"STATE_DIRECTORY": str(state)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert (state / "journal.sqlite3").exists()


# --- 4. bad start-up resources: the key named, exit 2, nothing left behind -------------------


def test_run_names_an_unusable_state_dir(tmp_path, setup):
    inbox, state = setup
    state.rmdir()
    state.write_text("not a folder")
    cfg = write_config(tmp_path, [{"path": inbox}])
    out = inboxd(["run", "--config", str(cfg), "--emulator", "--once"])
    assert out.returncode == 2, out
    assert f"daemon.state_dir: {state} is not a folder" in out.stderr and "Traceback" not in out.stderr
    state.unlink()
    state.mkdir()
    (state / "journal.sqlite3").write_bytes(b"this is not an SQLite database, not even close" * 100)
    out = inboxd(["run", "--config", str(cfg), "--emulator", "--once"])
    assert out.returncode == 2, out
    assert "daemon.state_dir: cannot open the journal" in out.stderr and "Traceback" not in out.stderr
    assert not (inbox / ".inboxd").exists() or not os.listdir(inbox / ".inboxd")


def test_run_names_a_state_dir_it_cannot_write(tmp_path, setup, tmpfs):
    inbox, _ = setup
    ro = tmpfs("ro-state", "ro")
    cfg = write_config(tmp_path, [{"path": inbox}], daemon={"state_dir": ro})
    out = inboxd(["run", "--config", str(cfg), "--emulator", "--once"])
    assert out.returncode == 2, out
    assert f"daemon.state_dir: {ro} is not writable by" in out.stderr
    assert not (inbox / ".inboxd").exists()


def test_run_names_a_metrics_address_in_use_and_leaves_no_claim_folder(tmp_path, setup):
    inbox, _ = setup
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        cfg = write_config(tmp_path, [{"path": inbox}], daemon={"metrics_address": address})
        out = inboxd(["run", "--config", str(cfg), "--emulator", "--once"])
    finally:
        busy.close()
    assert out.returncode == 2, out
    assert f"daemon.metrics_address: cannot listen on {address}" in out.stderr and "Traceback" not in out.stderr
    assert not (inbox / ".inboxd").exists()  # checked before anything was created


# --- 5. status without a journal -------------------------------------------------------------


def test_status_without_a_journal_says_so_and_exits_2(tmp_path, setup):
    inbox, state = setup
    cfg = write_config(tmp_path, [{"path": inbox}])
    out = inboxd(["status", "--config", str(cfg)])
    assert out.returncode == 2, out
    assert f"no journal at {state / 'journal.sqlite3'}" in out.stderr
    out = inboxd(["status", "--config", str(cfg), "--json"])
    assert out.returncode == 2 and json.loads(out.stdout)["error"]["kind"] == "no_journal"
    assert inboxd(["run", "--config", str(cfg), "--emulator", "--once"]).returncode == 0
    out = inboxd(["status", "--config", str(cfg), "--json"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["inboxes"][0]["inbox"] == str(inbox)
