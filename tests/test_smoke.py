"""A one-file `inboxd upload` from a terminal against the emulator subprocess: what a new user
does first. `make test-lowest` runs it again in a venv with the lowest versions pyproject.toml
allows, so it also checks that every dependency at its floor works end to end: the request
path (requests, urllib3), the models (pydantic), the check (msgspec), the log (structlog) and
the progress bar (tqdm), and that none of them prints a warning of its own."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tests.helpers.daemon import REPO
from tests.helpers.emulator import EmulatorProc, start_emulator

KEY = "smoke-key-5e4d3c2b1a"


def test_one_file_upload_from_a_terminal(tmp_path: Path) -> None:
    emu: EmulatorProc = start_emulator(tmp_path / "emu", key=KEY, processing_delay=0.05)
    try:
        src = tmp_path / "first.jsonl"
        src.write_text("".join(json.dumps({"custom_id": f"r{i}", "body": {"model": "m", "prompt": "x" * 200}}) + "\n"
                               for i in range(200)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOGETHER_")}
        env.update(TOGETHER_API_KEY=KEY, TOGETHER_BASE_URL=emu.base_url)
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 wide
        try:
            p = subprocess.Popen([sys.executable, "-m", "inboxd", "upload", str(src), "--purpose", "batch-api",
                                  "--json", "--wait"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=slave)
            os.close(slave)
            seen = b""
            while True:  # the terminal's side until the child closes it
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child exited
                    break
                if not chunk:
                    break
                seen += chunk
            out, _ = p.communicate(timeout=60)
        finally:
            os.close(master)
        stderr = seen.decode(errors="replace")
        assert p.returncode == 0, stderr
        answer = json.loads(out)
        assert answer["processing_status"] == "COMPLETED", answer
        assert answer["bytes"] == src.stat().st_size
        assert emu.files_by_sha256().keys() == {answer["inboxd"]["sha256"]}
        # the progress bar was drawn to the end, and stderr holds nothing else: no dependency's
        # warning (an old pydantic warns about the model_id field), no traceback
        assert "100%" in stderr and "first.jsonl" in stderr, stderr
        lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
        assert all("first.jsonl" in line for line in lines), stderr
        assert KEY not in stderr
    finally:
        emu.stop()
