"""Ids that go into a url path (file ids, batch ids) are checked before anything is sent, and a
refused id is named for what it is: a batch id the user typed is a batch id, not a file id the
server returned."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from inboxd.api import ApiError
from inboxd.api._batches import job_of
from inboxd.batch.command import cancel_batch
from inboxd.cli import main
from inboxd.config import parse_config

UNREACHABLE = "http://127.0.0.1:9/v1"  # never contacted: the id is refused first


def test_cancel_of_an_unsafe_batch_id_names_a_batch_id(tmp_path: Path) -> None:
    config = parse_config({"api": {"base_url": UNREACHABLE, "max_retries": 0},
                           "daemon": {"state_dir": str(tmp_path)}})
    with pytest.raises(ApiError) as info:
        cancel_batch(config, SecretStr("k"), "../../x")
    message = str(info.value)
    assert "batch id" in message and "file id" not in message, message
    assert "server" not in message, message  # the caller gave it; no server was asked
    assert "'../../x'" in message


def test_batch_cancel_command_says_batch_id(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", "k")
    cfg = tmp_path / "inboxd.toml"
    cfg.write_text(f'[api]\nbase_url = "{UNREACHABLE}"\nmax_retries = 0\n[daemon]\nstate_dir = "{tmp_path}"\n')
    assert main(["batch", "cancel", "../../x", "--config", str(cfg)]) == 2  # a usage error: nothing sent
    err = capsys.readouterr().err
    assert "batch id" in err and "file id" not in err, err


def test_a_job_with_an_unsafe_id_in_an_answer_names_a_batch_id() -> None:
    with pytest.raises(ApiError, match="the server returned an unsafe batch id '../x'"):
        job_of({"id": "../x", "status": "IN_PROGRESS"}, "batch_get")
    with pytest.raises(ApiError, match="the server returned an unsafe file id '../out'"):
        job_of({"id": "b-1", "status": "COMPLETED", "output_file_id": "../out"}, "batch_get")
