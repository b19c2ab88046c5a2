"""Issue 15, an operator's first day: config check checks the machine, start-up refuses bad
resources by their key (exit 2, nothing created), `status` without a journal, `upload` that
checks like the daemon and always answers one JSON object. Real subprocesses, as a user runs them.
"""

from __future__ import annotations

import json
import os
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
