"""The library half of the commands returns data (issue 11): what each gives the command line
to render, without a server, and nothing in the package imports `inboxd.cli`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import SecretStr

import inboxd
from inboxd import _constants
from inboxd.api.command import UploadFailure, upload_file
from inboxd.batch.command import NoJournal, list_batches
from inboxd.check import CheckIssue
from inboxd.check.command import validate_files
from inboxd.cli.render import elapsed, issue_lines
from inboxd.config import Config, parse_config
from inboxd.pipeline.command import StartRefused, effective_config, run_daemon
from inboxd.pipeline.status import StatusUnavailable, read_status

GOOD = b'{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}\n'
BAD = b'{"messages":[{"role":"user","content":"hi"}]}\nnot json\n'
PACKAGE = Path(inboxd.__file__).parent


def config(tmp_path: Path, **data: object) -> Config:
    """Metrics on port 0: the start-up check still binds the address, and a daemon (or anything else)
    listening on the default 127.0.0.1:9464 on this host changes nothing."""
    return parse_config({"api": {"base_url": "http://127.0.0.1:9/v1"},
                         "daemon": {"state_dir": str(tmp_path / "st"), "metrics_address": "127.0.0.1:0"}, **data})


def test_validate_files_yields_one_verdict_per_file_in_order(tmp_path: Path) -> None:
    (tmp_path / "good.jsonl").write_bytes(GOOD)
    (tmp_path / "bad.jsonl").write_bytes(BAD)
    files = [tmp_path / "good.jsonl", tmp_path / "bad.jsonl", tmp_path / "missing.jsonl"]
    good, bad, missing = validate_files(config(tmp_path), files, "fine-tune", "basic")
    assert (good.passed, bad.passed, missing.passed) == (True, False, False)
    assert good.to_json()["name"] == str(files[0]) and good.to_json()["records"] == 1
    assert [e["rule"] for e in bad.to_json()["errors"]] == ["json.invalid"]
    assert missing.report is None
    assert missing.to_json() == {"name": str(files[2]), "purpose": "fine-tune", "mode": "basic", "passed": False,
                                 "errors": [{"line": None, "rule": "file.unreadable",
                                             "message": "No such file or directory"}]}


def test_upload_file_that_fails_its_check_sends_nothing(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_bytes(BAD)
    out = upload_file(config(tmp_path), SecretStr("k"), tmp_path / "bad.jsonl", "fine-tune", wait=False)
    assert isinstance(out, UploadFailure)
    assert (out.kind, out.stage, out.details["line"]) == ("json.invalid", "validate", 2)
    assert out.message.startswith("not uploaded: the basic check failed (1 error(s))")
    assert [i.rule for i in out.issues] == ["json.invalid"]
    assert out.file is None


def test_upload_file_that_is_missing(tmp_path: Path) -> None:
    out = upload_file(config(tmp_path), SecretStr("k"), tmp_path / "none.jsonl", "fine-tune", wait=False)
    assert isinstance(out, UploadFailure)
    assert (out.kind, out.stage) == ("unreadable", "inspect")


def test_read_status_without_a_journal(tmp_path: Path) -> None:
    with pytest.raises(StatusUnavailable) as info:
        read_status(config(tmp_path))
    assert info.value.kind == "no_journal" and "no journal at" in info.value.message


def test_list_batches_without_a_journal(tmp_path: Path) -> None:
    with pytest.raises(NoJournal, match="no journal at"):
        list_batches(tmp_path)


def test_run_daemon_refuses_a_missing_inbox_before_creating_anything(tmp_path: Path) -> None:
    (tmp_path / "st").mkdir()
    c = config(tmp_path, inboxes=[{"path": str(tmp_path / "nope"), "purpose": "eval"}])
    with pytest.raises(StartRefused) as info:
        run_daemon(c, tmp_path / "inboxd.toml", emulator=False, once=True)
    assert info.value.reasons == [f"inboxes[0].path: {tmp_path / 'nope'} does not exist; create it or set "
                                  "create = true"]
    assert list((tmp_path / "st").iterdir()) == []


def test_effective_config_hides_the_key_and_the_proxy_password(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", "sekrit-key")
    c = parse_config({"api": {"proxy": "http://u:pw@proxy.example:3128"},
                      "upload": {"part_size": "10MiB", "max_bytes_per_second": "1MiB"}})
    data = effective_config(c)
    assert data["resolved"]["api_key"] == "<redacted>"
    assert data["resolved"]["api_key_source"] == "environment variable TOGETHER_API_KEY"
    assert data["api"]["proxy"] == "http://u:***@proxy.example:3128"
    assert (data["upload"]["part_size"], data["upload"]["max_bytes_per_second"]) == ("10MiB", "1MiB")
    assert "sekrit-key" not in repr(data) and "pw@" not in repr(data)


def test_issue_lines_and_elapsed() -> None:
    issues = [CheckIssue(3, "json.invalid", "not valid JSON"), CheckIssue(None, "file.empty", "no records")]
    assert issue_lines("f.jsonl", issues) == ["f.jsonl:3: json.invalid: not valid JSON",
                                              "f.jsonl: file.empty: no records"]
    assert [elapsed(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m05s"]


def test_constants_are_the_documented_values() -> None:
    assert (_constants.EXIT_OK, _constants.EXIT_FAILED, _constants.EXIT_USAGE) == (0, 1, 2)
    assert _constants.PURPOSES == ("fine-tune", "batch-api", "eval", "calibration")
    assert _constants.PROCESSING_TERMINAL == {"COMPLETED", "FAILED", "INVALID_FORMAT"}


def test_nothing_in_the_package_imports_the_cli() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "cli" or rel.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module or ''}.{a.name}" for a in node.names]
                level = node.level
            elif isinstance(node, ast.Import):
                names, level = [a.name for a in node.names], 0
            else:
                continue
            for name in names:
                parts = name.strip(".").split(".")
                absolute = parts[:2] == ["inboxd", "cli"]
                # relative: resolve against the module's package
                here = list(rel.parent.parts)
                base = here[: len(here) - (level - 1)] if level else []
                relative = level > 0 and (base + parts)[:1] == ["cli"]
                if absolute or relative:
                    offenders.append(f"{rel}: {name}")
    assert offenders == []
