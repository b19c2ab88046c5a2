"""`inboxd upload link.jsonl` follows a symlink the user named on the command line (issue 10);
the file is uploaded under the link's name. The daemon never follows one (tests/test_daemon.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers.daemon import REPO


def test_upload_follows_a_link_named_on_the_command_line(tmp_path, emu):
    real = tmp_path / "data" / "real.jsonl"
    real.parent.mkdir()
    real.write_text(json.dumps({"custom_id": "a", "body": {"model": "m", "messages": [
        {"role": "user", "content": "hi"}]}}) + "\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOGETHER_")}
    out = subprocess.run([sys.executable, "-m", "inboxd", "upload", str(link), "--purpose", "batch-api", "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=60,
                         env={**env, "TOGETHER_API_KEY": emu.key, "TOGETHER_BASE_URL": emu.base_url})
    assert out.returncode == 0, (out.stdout, out.stderr)
    answer = json.loads(out.stdout)
    assert answer["filename"] == "link.jsonl"
    assert emu.content(answer["id"]) == real.read_bytes()
