"""An outbox that is an inbox, as a user meets it: `inboxd config check` and `inboxd run`
both refuse it with exit 2 and name `inboxes[N].batch.outbox`, before anything is created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOGETHER_")}
    env["TOGETHER_API_KEY"] = "sk-test-outbox"
    return subprocess.run([sys.executable, "-m", "inboxd", *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=REPO)


def _config(tmp_path: Path) -> Path:
    eval_inbox, batch_inbox, state = tmp_path / "eval", tmp_path / "batch", tmp_path / "state"
    for folder in (eval_inbox, batch_inbox, state):
        folder.mkdir()
    path = tmp_path / "inboxd.toml"
    path.write_text(f"""
[api]
base_url = "http://127.0.0.1:9/v1"
[daemon]
state_dir = "{state}"
metrics_address = ""
log_format = "json"
[[inboxes]]
path = "{eval_inbox}"
purpose = "eval"
[[inboxes]]
path = "{batch_inbox}"
purpose = "batch-api"
[inboxes.batch]
endpoint = "/v1/chat/completions"
outbox = "{eval_inbox}"
""")
    return path


def test_config_check_refuses_an_outbox_that_is_another_inbox(tmp_path: Path) -> None:
    result = _run(["config", "check", "--config", str(_config(tmp_path))])
    assert result.returncode == 2, result
    assert "inboxes[1].batch.outbox" in result.stderr and "is inboxes[0].path" in result.stderr, result.stderr
    assert "machine checks: ok" not in result.stdout
    assert "Traceback" not in result.stderr


def test_run_refuses_an_outbox_that_is_another_inbox_before_creating_anything(tmp_path: Path) -> None:
    result = _run(["run", "--config", str(_config(tmp_path))])
    assert result.returncode == 2, result
    assert "inboxes[1].batch.outbox" in result.stderr, result.stderr
    assert not (tmp_path / "batch" / ".inboxd").exists() and not (tmp_path / "eval" / "done").exists()
    assert list((tmp_path / "state").iterdir()) == []
