"""The official `together` clients, unchanged, against `inboxd emulator` (issue 2).

Each client runs in its own venv (`tests/helpers/venvs.py`, built from the package index the
first time) as a small script pointed at the emulator through TOGETHER_API_KEY and
TOGETHER_BASE_URL, the way a user points it anywhere. Multipart is reached the way a user
can: by lowering the module constants of the threshold and the part size.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.helpers.emulator import start_emulator
from tests.helpers.venvs import official_python

KEY = "official-client-key-4242"

SCRIPT_3X = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import together.lib.resources.files as lf
    lf.MULTIPART_THRESHOLD_GB = 8 / 1024     # 8 MiB
    lf.TARGET_PART_SIZE_MB = 5               # 5 MiB parts
    from together import Together
    client = Together()
    out = {}
    small, big, dl = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    a = client.files.upload(file=small, purpose="batch-api", check=False)
    out["single"] = a.id
    b = client.files.upload(file=big, purpose="fine-tune", check=False)
    out["multipart"] = b.id
    again = client.files.upload(file=small, purpose="batch-api", check=False)
    out["again"] = again.id
    r = client.files.retrieve(a.id)
    out["retrieved"] = {"id": r.id, "bytes": r.bytes, "filename": r.filename, "type": str(r.file_type)}
    out["listed"] = sorted(f.id for f in client.files.list().data)
    client.files.content(b.id).write_to_file(dl)
    d = client.files.delete(a.id)
    out["deleted"] = bool(d.deleted)
    out["listed_after"] = sorted(f.id for f in client.files.list().data)
    print(json.dumps(out))
    """
)

SCRIPT_1X = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import together.resources.files as rf
    import together.filemanager as fm
    rf.MULTIPART_THRESHOLD_GB = 8 / 1024     # 8 MiB
    fm.TARGET_PART_SIZE_MB = 5               # 5 MiB parts
    from together import Together
    client = Together()
    out = {}
    small, big, dl = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    a = client.files.upload(file=small, purpose="batch-api", check=False)
    out["single"] = a.id
    b = client.files.upload(file=big, purpose="fine-tune", check=False)
    out["multipart"] = b.id
    r = client.files.retrieve(a.id)
    out["retrieved"] = {"id": r.id, "bytes": r.bytes, "filename": r.filename, "type": str(r.type)}
    out["listed"] = sorted(f.id for f in client.files.list().data)
    client.files.retrieve_content(b.id, output=dl)
    d = client.files.delete(a.id)
    out["deleted"] = bool(d.deleted)
    out["listed_after"] = sorted(f.id for f in client.files.list().data)
    print(json.dumps(out))
    """
)


def _data(tmp_path: Path) -> tuple[Path, Path]:
    small = tmp_path / "batch_small.jsonl"
    small.write_bytes(b"".join(
        json.dumps({"custom_id": f"r{i}", "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}})
        .encode() + b"\n" for i in range(100)))
    big = tmp_path / "fine_tune_big.jsonl"
    line = json.dumps({"text": "x" * 1000}).encode() + b"\n"
    with open(big, "wb") as f:
        for i in range(12 * 1024):  # ~12 MiB: three 5 MiB parts, the last one short
            f.write(line)
    return small, big


def _run(python: Path, major: str, emu, tmp_path: Path, small: Path, big: Path, dl: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "VIRTUAL_ENV"))}
    # the 1.x client's base url ends in /v1; the 3.x client's is the origin and its paths carry /v1
    base_url = emu.base_url if major == "1" else emu.base_url.removesuffix("/v1")
    script = SCRIPT_1X if major == "1" else SCRIPT_3X
    env.update(TOGETHER_API_KEY=emu.key, TOGETHER_BASE_URL=base_url, TOGETHER_DISABLE_TQDM="1",
               PYTHONWARNINGS="ignore")
    res = subprocess.run([str(python), "-c", script, str(small), str(big), str(dl)], capture_output=True,
                         text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert emu.key not in res.stdout
    return json.loads(res.stdout.strip().splitlines()[-1])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("major", ["3", "1"])
def test_official_client_against_the_emulator(tmp_path: Path, major: str) -> None:
    python = official_python(major)
    small, big = _data(tmp_path)
    dl = tmp_path / "downloaded.jsonl"
    with start_emulator(tmp_path / "emu", key=KEY) as emu:
        out = _run(python, major, emu, tmp_path, small, big, dl)
        stats = emu.stats()
        by_sha = emu.files_by_sha256()

    # single and multipart arrived byte-identical
    assert {f["id"] for f in by_sha[_sha(big)]} == {out["multipart"]}
    assert by_sha[_sha(big)][0]["method"] == "multipart"
    assert stats["requests"]["initiate"] == 1 and stats["requests"]["part_put"] == 3
    assert stats["requests"]["complete"] == 1
    assert stats["storage_auth_headers"] == 0
    assert dl.read_bytes() == big.read_bytes()
    assert out["retrieved"]["type"].endswith("jsonl")  # an enum in one client, a string in the other
    assert {**out["retrieved"], "type": "jsonl"} == {"id": out["single"], "bytes": small.stat().st_size,
                                                     "filename": small.name, "type": "jsonl"}
    assert set(out["listed"]) == {out["single"], out["multipart"]}
    assert out["deleted"] and out["listed_after"] == [out["multipart"]]
    if major == "3":
        # the second upload of the same content got the existing id through 409
        assert out["again"] == out["single"]
        assert stats["statuses"].get("create 409", 0) >= 1  # (the 3.x client retries a 409 twice first)
        assert stats["requests"]["put"] == 1
