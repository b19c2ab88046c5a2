"""Command output that tells the truth and cannot be forged: names a producer chose are escaped
in `status` and `batches` (no escape sequence reaches the terminal, a newline does not start a
line), `--json` answers one JSON object even for a usage error, a reader that goes away ends
the command quietly, and the one-shot commands show their retries on stderr. Real files with
hostile names in real folders, the real commands as subprocesses, the emulator for the API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import EMU_KEY
from tests.helpers.daemon import REPO, write_config

ESC_NAME = "\x1b[2J\x1b[31mPWNED\x1b]0;title\x07"
# a name that would forge a line of its own in the "failed" list
FORGED = ESC_NAME + "x\n  failed 2026-01-01T00:00:00Z  forged.jsonl: ok.jsonl"
BATCH_LINE = b'{"custom_id": "r1", "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}\n'


def inboxd(args: list[str], *, env: dict[str, str] | None = None, stdout: int | None = subprocess.PIPE,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "NOTIFY_SOCKET"))}
    return subprocess.run([sys.executable, "-m", "inboxd", *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, cwd=REPO, env={**base, **(env or {})})


def assert_clean(text: str, lines: int | None = None) -> None:
    """No control character but the line ends; the hostile bytes shown as their escapes."""
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text, text
    if lines is not None:
        assert len(text.splitlines()) == lines, text


def test_status_escapes_names(tmp_path, emu):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / (FORGED + ".jsonl")).write_bytes(b"{not json\n")  # fails its check: recent_failures
    (inbox / (ESC_NAME + "ignored.txt")).write_text("x")  # matches no pattern: ignored
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": inbox, "purpose": "batch-api"}],
                       daemon={"settle_seconds": 0.1})
    run = inboxd(["run", "--config", str(cfg), "--once"], env={"TOGETHER_API_KEY": EMU_KEY})
    assert run.returncode == 1, run.stderr  # --once: 1, a file failed
    assert list((inbox / "failed").glob("*ok.jsonl.jsonl"))  # the real file, with its real name

    out = inboxd(["status", "--config", str(cfg)])
    assert out.returncode == 0, out.stderr
    assert_clean(out.stdout)
    failed = [line for line in out.stdout.splitlines() if line.lstrip().startswith("failed ")]
    assert len(failed) == 1, out.stdout  # the newline in the name did not start a second one
    assert "\\x1b[2J\\x1b[31mPWNED\\x1b]0;title\\x07x\\n  failed 2026-01-01T00:00:00Z  forged.jsonl" in failed[0]
    ignored = [line for line in out.stdout.splitlines() if "ignored" in line]
    assert ignored and "\\x1b[2J" in ignored[0] and "ignored.txt" in ignored[0]

    data = json.loads(inboxd(["status", "--config", str(cfg), "--json"]).stdout)  # JSON keeps the real name
    assert data["inboxes"][0]["recent_failures"][0]["name"] == FORGED + ".jsonl"


def test_batches_escapes_names(tmp_path, emu):
    src = tmp_path / "in"
    src.mkdir()
    hostile = src / (FORGED + ".jsonl")
    hostile.write_bytes(BATCH_LINE)
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[])
    env = {"TOGETHER_API_KEY": EMU_KEY}
    made = inboxd(["batch", str(hostile), "--endpoint", "/v1/chat/completions", "--model-id", "m", "--no-wait",
                   "--config", str(cfg)], env=env)
    assert made.returncode == 0, made.stderr
    assert_clean(made.stdout, lines=1)
    assert "\\x1b[2J" in made.stdout and "\\n" in made.stdout

    out = inboxd(["batches", "--config", str(cfg)])
    assert out.returncode == 0, out.stderr
    assert_clean(out.stdout, lines=2)  # the header and the job's one line
    assert "\\x1b[2J\\x1b[31mPWNED" in out.stdout.splitlines()[1]
    rows = json.loads(inboxd(["batches", "--config", str(cfg), "--json"]).stdout)["batches"]
    assert any(FORGED in (r["input_path"] or r["claim"] or "") for r in rows)


def test_json_answers_a_usage_error_with_one_object(tmp_path):
    for args in (["upload", str(tmp_path / "x.jsonl"), "--json", "--purpose", "batch"],  # argparse: bad choice
                 ["status", "--json"],  # argparse: --config missing
                 ["batches", "--json", "--config", str(tmp_path / "missing.toml")],  # the command: no config
                 ["batch", str(tmp_path / "x.jsonl"), "--json"]):  # the command: no --endpoint
        out = inboxd(args)
        assert out.returncode == 2, (args, out)
        body = json.loads(out.stdout)  # exactly one JSON document on stdout
        assert body["error"]["kind"] == "usage" and body["error"]["message"], body
        assert out.stderr.strip(), args  # the human message still on stderr
    out = inboxd(["upload", str(tmp_path / "x.jsonl"), "--purpose", "batch"])  # without --json: stdout empty
    assert out.returncode == 2 and out.stdout == "" and "invalid choice" in out.stderr


def test_a_closed_pipe_ends_quietly(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(50):
        (inbox / f"f{i}.txt").write_text("x")  # ignored names: lines for status to print
    cfg = write_config(tmp_path, base_url="http://127.0.0.1:9/v1", inboxes=[{"path": inbox, "purpose": "batch-api"}])
    (tmp_path / "state" / "journal.sqlite3").touch()  # `status` reads the folders; an empty journal file is one
    for args in (["status", "--config", str(cfg)], ["batches", "--config", str(cfg)]):
        read, write = os.pipe()
        os.close(read)  # the reader went away before the first line (`| head -0`)
        try:
            out = inboxd(args, stdout=write)
        finally:
            os.close(write)
        assert out.returncode == 141, (args, out.stderr)
        assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
        assert out.stderr == "", out.stderr


def test_head_1_ends_a_long_output_quietly(tmp_path):
    """`inboxd validate ... | head -1`: head leaves while the command still writes."""
    files = []
    for i in range(1500):
        f = tmp_path / f"f{i:04d}.jsonl"
        f.write_bytes(BATCH_LINE)
        files.append(str(f))
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOGETHER_")}
    cmd = subprocess.Popen([sys.executable, "-m", "inboxd", "validate", "--purpose", "batch-api", *files],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=base)
    head = subprocess.run(["head", "-1"], stdin=cmd.stdout, capture_output=True, timeout=60)
    assert cmd.stdout is not None and cmd.stderr is not None
    cmd.stdout.close()
    stderr = cmd.stderr.read().decode()
    assert cmd.wait(timeout=60) == 141, stderr
    assert head.stdout.decode().startswith(files[0]) and stderr == "", stderr


def test_upload_shows_each_retry_on_stderr(tmp_path, emu):
    f = tmp_path / "ok.jsonl"
    f.write_bytes(BATCH_LINE)
    env = {"TOGETHER_API_KEY": EMU_KEY, "TOGETHER_BASE_URL": emu.base_url}
    emu.script([{"route": "create", "status": 500, "times": 1}])
    out = inboxd(["upload", str(f), "--purpose", "batch-api"], env=env)
    assert out.returncode == 0, out.stderr
    retries = [line for line in out.stderr.splitlines() if "api.retry" in line]
    assert len(retries) == 1, out.stderr
    assert "status=500" in retries[0] and "attempt=" in retries[0]
    assert len(out.stdout.splitlines()) == 1  # the answer alone on stdout

    emu.script([{"route": "create", "status": 500, "times": 1}])
    out = inboxd(["upload", str(f), "--purpose", "batch-api", "-q"], env=env)
    assert out.returncode == 0 and "api.retry" not in out.stderr, out.stderr
    emu.script([{"route": "create", "status": 500, "times": 1}])
    out = inboxd(["upload", str(f), "--purpose", "batch-api", "-vv"], env=env)  # -vv: debug, the retry too
    assert out.returncode == 0 and "api.retry" in out.stderr, out.stderr


def test_batch_shows_each_retry_on_stderr(tmp_path, emu):
    f = tmp_path / "in.jsonl"
    f.write_bytes(BATCH_LINE)
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[])
    emu.script([{"route": "create", "status": 500, "times": 1}])
    out = inboxd(["batch", str(f), "--endpoint", "/v1/chat/completions", "--model-id", "m", "--no-wait",
                  "--config", str(cfg)], env={"TOGETHER_API_KEY": EMU_KEY})
    assert out.returncode == 0, out.stderr
    assert len([line for line in out.stderr.splitlines() if "api.retry" in line and "status=500" in line]) == 1, \
        out.stderr


def test_escape_is_the_one_the_console_log_uses():
    from inboxd.log import escape

    assert escape("plain name.jsonl") == "plain name.jsonl"
    assert escape("a\x1b[2Jb\nc\td\\e\u2028f\u202eg\x9bh") == "a\\x1b[2Jb\\nc\\td\\\\e\\u2028f\\u202eg\\x9bh"
    assert escape("ünïcode ✓.jsonl") == "ünïcode ✓.jsonl"


def test_the_console_log_escapes_every_value(tmp_path):
    import io

    import structlog

    from inboxd.log import configure

    stream = io.StringIO()
    try:
        configure("info", "console", stream=stream)
        structlog.get_logger().info("file.failed", name=ESC_NAME + "\nx", path=Path("/in") / ESC_NAME,
                                    names=[ESC_NAME])
    finally:
        configure("warning", "console", stream=sys.stderr)
    text = stream.getvalue()
    assert_clean(text, lines=1)
    assert text.count("\\x1b[2J") == 3, text
