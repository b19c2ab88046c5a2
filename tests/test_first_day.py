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
from inboxd.pipeline.command import NETWORK_FILESYSTEMS, filesystem_type, machine_problems

REPO = Path(__file__).resolve().parents[1]
KEY = "test-key-first-day-0123456789"
pytestmark = pytest.mark.emulator(key=KEY, no_dedupe=False, processing_delay=0)  # a verdict in the preprocess answer


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


def test_a_healthy_setup_passes_config_check_and_says_the_machine_was_checked(tmp_path, setup):
    inbox, _ = setup
    cfg = write_config(tmp_path, [{"path": inbox}])
    out = inboxd(["config", "check", "--config", str(cfg)], env={"TOGETHER_API_KEY": KEY})
    assert out.returncode == 0, out.stderr
    assert "# machine checks: ok" in out.stdout
    data = json.loads(inboxd(["config", "check", "--config", str(cfg), "--json"]).stdout)
    assert data["checks"] == {"machine": "ok", "problems": []}
    assert data["inboxes"][0]["create"] is False


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


# --- 3. config check checks the machine ------------------------------------------------------


def test_config_check_fails_a_missing_inbox_or_state_dir_and_offline_skips_it(tmp_path, setup):
    inbox, state = setup
    typo = tmp_path / "inbxo"
    cfg = write_config(tmp_path, [{"path": typo}])
    out = inboxd(["config", "check", "--config", str(cfg)])
    assert out.returncode == 2, out
    assert f"inboxes[0].path: {typo} does not exist; create it or set create = true" in out.stderr
    out = inboxd(["config", "check", "--config", str(cfg), "--offline"])
    assert out.returncode == 0 and "# machine checks: skipped (--offline)" in out.stdout, out.stderr
    cfg = write_config(tmp_path, [{"path": typo, "create": True}])
    assert inboxd(["config", "check", "--config", str(cfg)]).returncode == 0
    assert not typo.exists()  # a check creates nothing
    state.rmdir()
    out = inboxd(["config", "check", "--config", str(cfg)])
    assert out.returncode == 2 and f"daemon.state_dir: {state} does not exist" in out.stderr, out.stderr
    assert inboxd(["config", "check", "--config", str(cfg)], env={"STATE_DIRECTORY": str(state)}).returncode == 0


def test_config_check_fails_done_and_failed_on_another_filesystem(tmp_path, setup, tmpfs):
    inbox, _ = setup
    other_fs = tmpfs("archive")
    (other_fs / "done").mkdir()
    # done/ exists on the tmpfs; failed/ does not exist yet: its nearest existing folder is compared
    cfg = write_config(tmp_path, [{"path": inbox, "done_dir": other_fs / "done", "failed_dir": other_fs / "f" / "x"}])
    out = inboxd(["config", "check", "--config", str(cfg)])
    assert out.returncode == 2, out
    assert "inboxes[0].done_dir" in out.stderr and "another filesystem" in out.stderr
    assert "inboxes[0].failed_dir" in out.stderr
    assert "# machine checks: 2 problem(s)" in out.stdout
    data = json.loads(inboxd(["config", "check", "--config", str(cfg), "--json"]).stdout)
    assert data["checks"]["machine"] == "failed"
    assert [p["key"] for p in data["checks"]["problems"]] == ["inboxes[0].done_dir", "inboxes[0].failed_dir"]
    assert inboxd(["config", "check", "--config", str(cfg), "--offline"]).returncode == 0
    # the default done/ inside the inbox, but a mount point: still another filesystem
    tmpfs("inbox/done")
    cfg = write_config(tmp_path, [{"path": inbox}])
    out = inboxd(["config", "check", "--config", str(cfg)])
    assert out.returncode == 2, out
    assert f"inboxes[0].done_dir: {inbox / 'done'} (the default) is on another filesystem" in out.stderr
    assert "failed_dir" not in out.stderr


def test_config_check_fails_folders_the_daemon_cannot_write(tmp_path, setup, tmpfs):
    _, state = setup
    ro = tmpfs("ro", "ro")
    cfg = write_config(tmp_path, [{"path": ro}])
    out = inboxd(["config", "check", "--config", str(cfg)])
    assert out.returncode == 2, out
    assert f"inboxes[0].path: {ro} is not writable by" in out.stderr
    cfg = write_config(tmp_path, [{"path": ro / "new", "create": True}])
    out = inboxd(["config", "check", "--config", str(cfg)])
    assert out.returncode == 2 and "inboxes[0].path" in out.stderr and "cannot be created" in out.stderr, out.stderr
    cfg = write_config(tmp_path, [{"path": tmp_path / "inbox"}], daemon={"state_dir": ro})
    out = inboxd(["config", "check", "--config", str(cfg)])
    assert out.returncode == 2 and f"daemon.state_dir: {ro} is not writable" in out.stderr, out.stderr


def test_config_check_fails_a_key_source_it_cannot_read(tmp_path, setup):
    inbox, _ = setup
    cfg = write_config(tmp_path, [{"path": inbox}], api={"api_key_file": tmp_path / "no-such-key"})
    out = inboxd(["config", "check", "--config", str(cfg)], env={"TOGETHER_API_KEY": KEY})
    assert out.returncode == 2, out
    assert "api.api_key_file" in out.stderr and "does not exist" in out.stderr
    (tmp_path / "keydir").mkdir()
    cfg = write_config(tmp_path, [{"path": inbox}], api={"api_key_file": tmp_path / "keydir"})
    out = inboxd(["config", "check", "--config", str(cfg)])
    assert out.returncode == 2 and "api.api_key_file" in out.stderr and "not a file" in out.stderr
    assert inboxd(["config", "check", "--config", str(cfg), "--offline"]).returncode == 0
    (tmp_path / "key").write_text(KEY + "\n")
    cfg = write_config(tmp_path, [{"path": inbox}], api={"api_key_file": tmp_path / "key"})
    out = inboxd(["config", "check", "--config", str(cfg)])
    assert out.returncode == 0 and KEY not in out.stdout + out.stderr, out.stderr


def test_state_dir_on_a_network_filesystem_is_a_problem(tmp_path, setup):
    inbox, state = setup
    assert {"nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "9p"} <= NETWORK_FILESYSTEMS
    mountinfo = "\n".join([
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
        f"90 27 0:50 / {tmp_path} rw,relatime - nfs4 server:/export rw",
        f"91 90 0:51 / {tmp_path}/with\\040space rw - tmpfs tmpfs rw",
    ])
    assert filesystem_type(state, mountinfo) == "nfs4"
    (tmp_path / "with space").mkdir()
    assert filesystem_type(tmp_path / "with space" / "x", mountinfo) == "tmpfs"
    assert filesystem_type(Path("/usr"), mountinfo) == "ext4"
    assert filesystem_type(state) not in NETWORK_FILESYSTEMS  # this machine's real answer: local

    import inboxd.pipeline.command as command

    config = load_config(write_config(tmp_path, [{"path": inbox}]))
    real = command.filesystem_type
    command.filesystem_type = lambda path, _m=None: real(path, mountinfo)
    try:
        problems = machine_problems(config, env={})
    finally:
        command.filesystem_type = real
    assert [str(p) for p in problems] == [
        f"daemon.state_dir: {state} is on a network filesystem (nfs4); the journal (SQLite, WAL) needs a local disk"]


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


# --- 6, 7. inboxd upload ---------------------------------------------------------------------


def batch(path: Path, bodies: list[dict] | None = None, raw: bytes = b"") -> Path:
    bodies = bodies if bodies is not None else [{"model": "m", "messages": [{"role": "user", "content": "hi"}]}]
    lines = [json.dumps({"custom_id": f"r{i}", "body": b}) for i, b in enumerate(bodies)]
    path.write_bytes(("\n".join(lines) + "\n").encode() + raw)
    return path


def upload(emu, path: Path, *args: str, base_url: str | None = None, key: str = KEY):
    return inboxd(["upload", str(path), "--purpose", "batch-api", *args],
                  env={"TOGETHER_API_KEY": key, "TOGETHER_BASE_URL": base_url or emu.base_url})


def one_json(out: subprocess.CompletedProcess[str]) -> dict:
    obj = json.loads(out.stdout)  # exactly one JSON document, nothing else on stdout
    assert isinstance(obj, dict)
    return obj


def test_upload_checks_the_file_as_the_daemon_does(tmp_path, emu):
    bad = batch(tmp_path / "bad.jsonl", raw=b"{not json\n")
    out = upload(emu, bad)
    assert out.returncode == 1, out
    assert "bad.jsonl:2:" in out.stderr and "--no-check" in out.stderr
    out = upload(emu, bad, "--json")
    assert out.returncode == 1
    err = one_json(out)["error"]
    assert err["stage"] == "validate" and err["line"] == 2 and err["validation"]["passed"] is False
    assert emu.stats()["creates"] == 0  # not a byte was sent

    # --mode: strict refuses what basic lets through, as the daemon's validate = "strict" would
    loose = batch(tmp_path / "loose.jsonl", bodies=[{"no": "model"}])
    out = upload(emu, loose, "--mode", "strict", "--json")
    assert out.returncode == 1 and one_json(out)["error"]["stage"] == "validate", out.stderr
    out = upload(emu, loose, "--json")
    assert out.returncode == 0, out.stderr
    assert one_json(out)["processing_status"] == "COMPLETED"


def test_upload_reports_a_failed_processing_status_without_wait(tmp_path, emu):
    bad = batch(tmp_path / "bad.jsonl", raw=b"{not json\n")
    out = upload(emu, bad, "--no-check")
    assert out.returncode == 1, out
    assert "INVALID_FORMAT" in out.stderr
    out = upload(emu, batch(tmp_path / "bad2.jsonl", raw=b"[1]\n"), "--no-check", "--json")
    assert out.returncode == 1, out
    body = one_json(out)
    assert body["error"]["stage"] == "processing" and "INVALID_FORMAT" in body["error"]["message"]
    assert body["file"]["processing_status"] == "INVALID_FORMAT"


def test_upload_json_is_always_one_object(tmp_path, emu):
    f = batch(tmp_path / "ok.jsonl")
    out = upload(emu, f, "--json", key="wrong-key-0123456789")
    assert out.returncode == 1, out
    err = one_json(out)["error"]
    assert err["kind"] == "auth" and err["stage"] == "upload"
    assert "wrong-key-0123456789" not in out.stdout + out.stderr
    out = inboxd(["upload", str(f), "--purpose", "batch-api", "--json"], env={"TOGETHER_BASE_URL": emu.base_url})
    assert out.returncode == 2 and one_json(out)["error"]["kind"] == "usage"
    out = upload(emu, tmp_path / "missing.jsonl", "--json")
    assert out.returncode == 1 and one_json(out)["error"]["kind"] == "unreadable"


def test_a_base_url_without_v1_is_named(tmp_path, emu):
    root = emu.base_url.removesuffix("/v1")
    assert root != emu.base_url
    out = upload(emu, batch(tmp_path / "ok.jsonl"), "--json", base_url=root)
    assert out.returncode == 1, out
    assert "probably lacks /v1" in out.stderr and f"{root}/v1" in out.stderr
    assert "probably lacks /v1" in one_json(out)["error"]["message"]
