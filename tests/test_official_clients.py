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
import requests

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
        for _ in range(12 * 1024):  # ~12 MiB: three 5 MiB parts, the last one short
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


# --- the Batch API (issue 12) --------------------------------------------------------------------

BATCH_SCRIPT_3X = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from together import Together
    client = Together()
    out = {}
    inp, dl, dl_err = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    f = client.files.upload(file=inp, purpose="batch-api", check=False)
    out["input"] = f.id
    created = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions")  # a 429 first
    job = created.job
    out["create"] = {"id": job.id, "status": job.status, "input_file_id": job.input_file_id,
                     "warning": created.warning, "deadline": type(job.job_deadline).__name__}
    statuses = []
    while True:
        j = client.batches.retrieve(job.id)
        statuses.append(j.status)
        if j.status in ("COMPLETED", "FAILED", "EXPIRED", "CANCELLED"):
            break
        time.sleep(0.05)
    out["statuses"] = statuses
    out["final"] = {"status": j.status, "progress": j.progress, "output_file_id": j.output_file_id,
                    "error_file_id": j.error_file_id, "completed_at": type(j.completed_at).__name__}
    out["listed"] = [b.id for b in client.batches.list()]
    client.files.content(j.output_file_id).write_to_file(dl)
    dl_err.write_bytes(client.files.content(j.error_file_id).read())
    other = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", model_id="m",
                                  completion_window="24h", priority=1).job
    out["cancel"] = str(client.batches.cancel(other.id).status)
    try:
        client.batches.cancel(job.id)
        out["cancel_terminal"] = None
    except Exception as e:
        out["cancel_terminal"] = [getattr(e, "status_code", None), type(e).__name__]
    print(json.dumps(out))
    """
)

BATCH_SCRIPT_1X = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from together import Together
    client = Together()
    out = {}
    inp, dl, dl_err = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    value = lambda s: getattr(s, "value", s)
    f = client.files.upload(file=inp, purpose="batch-api", check=False)
    out["input"] = f.id
    job = client.batches.create_batch(f.id, endpoint="/v1/chat/completions")  # a 429 first
    out["create"] = {"id": job.id, "status": value(job.status), "input_file_id": job.input_file_id,
                     "warning": None, "deadline": type(job.job_deadline).__name__}
    statuses = []
    while True:
        j = client.batches.get_batch(job.id)
        statuses.append(value(j.status))
        if statuses[-1] in ("COMPLETED", "FAILED", "EXPIRED", "CANCELLED"):
            break
        time.sleep(0.05)
    out["statuses"] = statuses
    out["final"] = {"status": value(j.status), "progress": j.progress, "output_file_id": j.output_file_id,
                    "error_file_id": j.error_file_id, "completed_at": type(j.completed_at).__name__}
    out["listed"] = [b.id for b in client.batches.list_batches()]
    client.files.retrieve_content(j.output_file_id, output=dl)
    client.files.retrieve_content(j.error_file_id, output=dl_err)
    other = client.batches.create_batch(f.id, endpoint="/v1/chat/completions")
    out["cancel"] = value(client.batches.cancel_batch(other.id).status)
    try:
        client.batches.cancel_batch(job.id)
        out["cancel_terminal"] = None
    except Exception as e:  # the 1.x client expects {"error": {...}}: a string error is not parsed
        out["cancel_terminal"] = [getattr(e, "http_status", None), type(e).__name__]
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("major", ["3", "1"])
def test_official_client_batch_calls_against_the_emulator(tmp_path: Path, major: str) -> None:
    python = official_python(major)
    lines = [{"custom_id": f"q{i}", "body": {"model": "unknown-model" if i == 4 else "m",
                                              "messages": [{"role": "user", "content": f"ask {i}"}]}}
             for i in range(12)]
    inp = tmp_path / "requests.jsonl"
    inp.write_bytes(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
    dl, dl_err = tmp_path / "output.jsonl", tmp_path / "errors.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOGETHER_", "VIRTUAL_ENV"))}
    with start_emulator(tmp_path / "emu", key=KEY, batch_seconds=1.0, processing_delay=0) as emu:
        emu.next_batch_create_status(429, retry_after=0.2)  # both clients retry it after Retry-After
        base_url = emu.base_url if major == "1" else emu.base_url.removesuffix("/v1")
        env.update(TOGETHER_API_KEY=emu.key, TOGETHER_BASE_URL=base_url, TOGETHER_DISABLE_TQDM="1",
                   PYTHONWARNINGS="ignore")
        script = BATCH_SCRIPT_1X if major == "1" else BATCH_SCRIPT_3X
        res = subprocess.run([str(python), "-c", script, str(inp), str(dl), str(dl_err)], capture_output=True,
                             text=True, timeout=300, env=env, cwd=tmp_path)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        out = json.loads(res.stdout.strip().splitlines()[-1])
        stats = emu.stats()
        served = {fid: requests.get(f"{emu.base_url}/files/{fid}/content", timeout=10,
                                    headers={"Authorization": f"Bearer {emu.key}"}).content
                  for fid in (out["final"]["output_file_id"], out["final"]["error_file_id"])}

    assert stats["statuses"]["batch_create 429"] == 1 and stats["batch_creates"] == 2
    assert stats["batch_creates_by_input"] == {out["input"]: 2}
    job_id = out["create"]["id"]
    assert out["create"]["status"] == "VALIDATING" and out["create"]["input_file_id"] == out["input"]
    assert out["create"]["deadline"] == "datetime"
    if major == "3":
        assert out["create"]["warning"]
    assert out["statuses"][-1] == "COMPLETED" and "IN_PROGRESS" in out["statuses"]
    assert out["final"]["progress"] == 100.0 and out["final"]["completed_at"] == "datetime"
    assert out["listed"] == [job_id]  # a plain array, parsed by both clients
    assert dl.read_bytes() == served[out["final"]["output_file_id"]]
    assert dl_err.read_bytes() == served[out["final"]["error_file_id"]]
    got = [json.loads(x)["custom_id"] for x in dl.read_bytes().splitlines()]
    assert sorted(got) == sorted(f"q{i}" for i in range(12) if i != 4)
    assert [json.loads(x)["custom_id"] for x in dl_err.read_bytes().splitlines()] == ["q4"]
    assert out["cancel"] == "CANCELING"
    assert out["cancel_terminal"] is not None  # 409: both clients raise
    if major == "3":
        assert out["cancel_terminal"][0] == 409
