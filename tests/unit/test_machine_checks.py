"""The machine checks of `inboxd config check` and `inboxd run` (`pipeline.command`), on real
folders under tmp_path: each problem names its config key, and what is fine says nothing."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inboxd.config import parse_config
from inboxd.pipeline.command import Problem, machine_problems, start_problems


def cfg(tmp: Path, inbox: dict[str, Any] | None = None, **sections: Any) -> Any:
    return parse_config({
        "api": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "UNIT_CHECK_KEY", **sections.pop("api", {})},
        "daemon": {"state_dir": str(tmp / "state"), "metrics_address": "", **sections.pop("daemon", {})},
        "inboxes": [{"path": str(tmp / "inbox"), "purpose": "fine-tune", **(inbox or {})}],
    })


def keys(problems: list[Problem]) -> list[str]:
    return [p.key for p in problems]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "state").mkdir()
    (tmp_path / "inbox").mkdir()
    return {"UNIT_CHECK_KEY": "k-1234"}


def test_a_usable_machine_has_no_problem(tmp_path: Path, env: dict[str, str]) -> None:
    assert machine_problems(cfg(tmp_path), env) == []
    assert start_problems(cfg(tmp_path), env) == []


def test_a_missing_state_dir_is_named_unless_systemd_makes_it(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "state").rmdir()
    [problem] = start_problems(cfg(tmp_path), env)
    assert problem.key == "daemon.state_dir" and "does not exist; create it" in problem.message
    assert str(problem) == f"daemon.state_dir: {problem.message}"
    assert problem.to_json() == {"key": "daemon.state_dir", "message": problem.message}
    assert start_problems(cfg(tmp_path), {**env, "STATE_DIRECTORY": str(tmp_path / "state")}) == []


def test_an_inbox_that_is_missing_or_not_a_folder(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "inbox").rmdir()
    [problem] = machine_problems(cfg(tmp_path), env)
    assert problem.key == "inboxes[0].path" and "create it or set create = true" in problem.message
    assert machine_problems(cfg(tmp_path, {"create": True}), env) == []  # it can be made
    (tmp_path / "inbox").write_text("a file")
    assert "is not a folder" in start_problems(cfg(tmp_path), env)[0].message
    blocked = cfg(tmp_path, {"path": str(tmp_path / "inbox" / "sub"), "create": True})
    [problem] = start_problems(blocked, env)
    assert problem.key == "inboxes[0].path" and problem.message.endswith("Not a directory")


def test_done_on_another_filesystem_is_named_with_its_key(tmp_path: Path, env: dict[str, str]) -> None:
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem at /dev/shm")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        problems = machine_problems(cfg(tmp_path, {"done_dir": other}), env)
    assert keys(problems) == ["inboxes[0].done_dir"]
    assert "is on another filesystem than the inbox" in problems[0].message


def test_the_key_file_is_checked(tmp_path: Path, env: dict[str, str]) -> None:
    missing = cfg(tmp_path, api={"api_key_file": str(tmp_path / "key")})
    assert [str(p) for p in machine_problems(missing, env)] == [f"api.api_key_file: {tmp_path / 'key'} does not exist"]
    (tmp_path / "key").mkdir()
    assert "is not a file" in machine_problems(missing, env)[0].message
    (tmp_path / "key").rmdir()
    (tmp_path / "key").write_text("")
    assert keys(machine_problems(missing, {})) == ["api.api_key_file"]  # empty, and no other source
    (tmp_path / "key").write_text("k-from-file\n")
    assert machine_problems(missing, env) == []
    assert machine_problems(cfg(tmp_path), {}) == []  # no key anywhere: not a problem for a check by hand


@pytest.fixture
def taken() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def test_a_metrics_address_in_use_refuses_the_start(tmp_path: Path, env: dict[str, str], taken: int) -> None:
    busy = cfg(tmp_path, daemon={"metrics_address": f"127.0.0.1:{taken}"})
    [problem] = start_problems(busy, env)
    assert problem.key == "daemon.metrics_address" and f"cannot listen on 127.0.0.1:{taken}" in problem.message
    assert machine_problems(busy, env) == []  # config check does not try it: a running daemon holds it
    assert start_problems(cfg(tmp_path, daemon={"metrics_address": "127.0.0.1:0"}), env) == []
