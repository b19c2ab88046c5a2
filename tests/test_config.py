"""The configuration file and `inboxd config check`, as a user runs them (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CANARY = "sk-canary-7f3a9c1e5b2d4f6a8c0e"


def run(args: list[str], env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    hidden = ("TOGETHER_API_KEY", "CREDENTIALS_DIRECTORY", "TOGETHER_BASE_URL")
    base = {k: v for k, v in os.environ.items() if k not in hidden}
    return subprocess.run(
        [sys.executable, "-m", "inboxd", *args],
        capture_output=True, text=True, timeout=60, env={**base, **(env or {})}, cwd=cwd,
    )


INBOX = '\n[[inboxes]]\npath = "/srv/inbox/a"\npurpose = "batch-api"\n'

# (name, TOML text, the key path the message must name, a fragment of what was expected)
BAD = [
    ("unknown top-level key", 'colour = "blue"\n' + INBOX, "colour", "unknown key"),
    ("unknown api key", '[api]\napi_key = "' + CANARY + '"\n' + INBOX, "api.api_key", "unknown key"),
    ("bad purpose", '[[inboxes]]\npath = "/srv/a"\npurpose = "batch"\n', "inboxes[0].purpose",
     "expected one of fine-tune, batch-api, eval, calibration; got 'batch'"),
    ("bad purpose in the second inbox", INBOX + '[[inboxes]]\npath = "/srv/b"\npurpose = "batch"\n',
     "inboxes[1].purpose", "expected one of"),
    ("relative inbox path", '[[inboxes]]\npath = "srv/a"\npurpose = "eval"\n', "inboxes[0].path", "absolute"),
    ("missing purpose", '[[inboxes]]\npath = "/srv/a"\n', "inboxes[0].purpose", "required"),
    ("duplicate inbox", INBOX + INBOX, "inboxes[1].path", "duplicate"),
    ("inbox inside another", INBOX + '[[inboxes]]\npath = "/srv/inbox/a/sub"\npurpose = "eval"\n',
     "inboxes[1].path", "inside another"),
    ("bad size", '[upload]\npart_size = "lots"\n' + INBOX, "upload.part_size", "size"),
    ("part too small", '[upload]\npart_size = "1MiB"\n' + INBOX, "upload.part_size", "5MiB"),
    ("http to a remote host", '[api]\nbase_url = "http://api.example.com/v1"\n' + INBOX, "api.base_url", "loopback"),
    ("not a url", '[api]\nbase_url = "ftp://x/v1"\n' + INBOX, "api.base_url", "http(s) url"),
    ("bad validate mode", '[[inboxes]]\npath = "/srv/a"\npurpose = "eval"\nvalidate = "paranoid"\n',
     "inboxes[0].validate", "off, basic, strict"),
    ("bad on_success", '[[inboxes]]\npath = "/srv/a"\npurpose = "eval"\non_success = "copy"\n',
     "inboxes[0].on_success", "move, delete, keep"),
    ("workers zero", '[daemon]\nworkers = 0\n' + INBOX, "daemon.workers", "greater than or equal to 1"),
    ("bad observer", '[[inboxes]]\npath = "/srv/a"\npurpose = "eval"\nobserver = "fanotify"\n',
     "inboxes[0].observer", "inotify, polling"),
    ("bad metrics address", '[daemon]\nmetrics_address = "9464"\n' + INBOX, "daemon.metrics_address", "host:port"),
    ("wrong type", '[daemon]\nrescan_seconds = "often"\n' + INBOX, "daemon.rescan_seconds", "number"),
    ("pattern with a slash", '[[inboxes]]\npath = "/srv/a"\npurpose = "eval"\npatterns = ["x/*.jsonl"]\n',
     "inboxes[0].patterns", "without '/'"),
    ("not TOML", '[api\nbase_url = 1\n', "not valid TOML", "line"),
    ("inboxes not a list", 'inboxes = "x"\n', "inboxes", "list"),
]


@pytest.mark.parametrize("name,text,key,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_the_key_and_exits_2(tmp_path: Path, name: str, text: str, key: str, expected: str) -> None:
    path = tmp_path / "inboxd.toml"
    path.write_text(text)
    result = run(["config", "check", "--offline", "--config", str(path)], env={"TOGETHER_API_KEY": CANARY})
    assert result.returncode == 2, result
    assert key in result.stderr, result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert CANARY not in result.stdout + result.stderr


def test_example_config_passes_and_hides_the_key(tmp_path: Path) -> None:
    result = run(["config", "check", "--offline", "--config", str(REPO / "config.example.toml")],
                 env={"TOGETHER_API_KEY": CANARY})
    assert result.returncode == 0, result.stderr
    assert CANARY not in result.stdout + result.stderr
    assert "<redacted>" in result.stdout
    assert "environment variable TOGETHER_API_KEY" in result.stdout


def test_json_output_and_size_units(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[upload]\nmultipart_threshold = 104857600\npart_size = "8MiB"\n' + INBOX)
    result = run(["config", "check", "--offline", "--config", str(path), "--json"])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["upload"]["multipart_threshold"] == "100MiB"
    assert data["upload"]["part_size"] == "8MiB"
    assert data["inboxes"][0]["validate"] == "basic"
    assert data["resolved"]["api_key"] is None  # no key anywhere: said, not fatal for a check


def test_key_precedence_credential_then_file_then_env(tmp_path: Path) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_text(CANARY + "-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "together-api-key").write_text(CANARY + "-cred")
    path = tmp_path / "c.toml"
    path.write_text(f'[api]\napi_key_file = "{keyfile}"\n' + INBOX)
    env = {"TOGETHER_API_KEY": CANARY + "-env"}

    def source(extra: dict[str, str]) -> str:
        result = run(["config", "check", "--offline", "--config", str(path), "--json"], env={**env, **extra})
        assert result.returncode == 0, result.stderr
        assert CANARY not in result.stdout + result.stderr
        return json.loads(result.stdout)["resolved"]["api_key_source"]

    assert source({"CREDENTIALS_DIRECTORY": str(creds)}) == "credential together-api-key"
    assert source({}) == f"file {keyfile}"
    path.write_text(INBOX)
    assert source({}) == "environment variable TOGETHER_API_KEY"


def test_loopback_http_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    for url in ("http://127.0.0.1:8080/v1", "http://localhost:1/v1", "http://[::1]:9/v1"):
        path.write_text(f'[api]\nbase_url = "{url}"\n' + INBOX)
        result = run(["config", "check", "--offline", "--config", str(path), "--json"])
        assert result.returncode == 0, (url, result.stderr)


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run(["config", "check", "--offline", "--config", str(tmp_path / "nope.toml")])
    assert result.returncode == 2
    assert "nope.toml" in result.stderr and "cannot read" in result.stderr
