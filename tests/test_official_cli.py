"""The 3.x client's own command line, `tg` (package `together`, in the venv of
`tests/helpers/venvs.py`), unchanged, against `inboxd emulator`: what a user types to try
the service offline. `tg` asks GET /v3/whoami (the key's project) before any command; then
`tg files upload`, `tg files list`, `tg batches submit` and `tg batches list` talk to the
Files and Batch APIs.

The CLI's environment: the emulator's key and origin, HOME a fresh folder (no stored login),
no version check against the package index and no telemetry (the tests run offline).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers.emulator import EmulatorProc, start_emulator
from tests.helpers.venvs import official_python

KEY = "official-cli-key-5151"


def tg(emu: EmulatorProc, tmp_path: Path, *args: str) -> Any:
    """`tg ARGS --json`: its exit code 0 and its stdout parsed."""
    cli = official_python("3").parent / "tg"
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "VIRTUAL_ENV"))}
    env.update(TOGETHER_API_KEY=emu.key, TOGETHER_BASE_URL=emu.base_url.removesuffix("/v1"), HOME=str(home),
               XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               TOGETHER_DISABLE_VERSION_CHECK="1", TOGETHER_TELEMETRY_DISABLED="1", PYTHONWARNINGS="ignore")
    res = subprocess.run([str(cli), *args, "--json", "--non-interactive"], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path)
    assert res.returncode == 0, f"tg {' '.join(args)}: {res.stdout[-3000:]}{res.stderr[-3000:]}"
    assert emu.key not in res.stdout + res.stderr
    return json.loads(res.stdout)


def test_tg_files_and_batches_against_the_emulator(tmp_path: Path) -> None:
    src = tmp_path / "requests.jsonl"
    src.write_bytes(b"".join(
        json.dumps({"custom_id": f"r{i}", "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}})
        .encode() + b"\n" for i in range(20)))
    with start_emulator(tmp_path / "emu", key=KEY, processing_delay=0, batch_seconds=0.5) as emu:
        uploaded = tg(emu, tmp_path, "files", "upload", str(src), "--purpose", "batch-api")
        file_id = uploaded["id"]
        assert uploaded["filename"] == src.name and uploaded["bytes"] == src.stat().st_size
        assert emu.files_by_sha256()[_sha(src)][0]["id"] == file_id

        listed = tg(emu, tmp_path, "files", "list")
        assert file_id in {f["id"] for f in _items(listed)}

        submitted = tg(emu, tmp_path, "batches", "submit", file_id, "chat.completions")
        job = submitted.get("job", submitted)
        assert job["input_file_id"] == file_id and job["endpoint"] == "/v1/chat/completions"
        batches = _items(tg(emu, tmp_path, "batches", "list"))
        assert [(b["id"], b["input_file_id"]) for b in batches] == [(job["id"], file_id)]
        assert emu.batch_creates() == 1

        stats = emu.stats()
    # every call a command made was answered by a route (no 404 for a path the emulator lacks)
    assert stats["requests"]["whoami"] == 4  # once before each of the four commands
    assert not [k for k in stats["statuses"] if k.startswith("unknown ")], stats["statuses"]


def _items(answer: Any) -> list[dict[str, Any]]:
    """A list command's JSON: a plain array, or an object with the array under "data"."""
    return answer["data"] if isinstance(answer, dict) else answer


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
