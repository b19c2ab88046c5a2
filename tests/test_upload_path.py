"""The upload path (issue 3): `inboxd.api.FilesClient` and `inboxd upload` against the
emulator subprocess on loopback. No mocks: every byte crosses a real socket."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from inboxd.api import FilesClient, ProtocolError, RejectedError, TransientError
from inboxd.config import parse_config
from tests.helpers.daemon import REPO

KEY = "upload-path-key-8c7b6a5d4e"
pytestmark = pytest.mark.emulator(key=KEY, no_dedupe=False)
MIB = 2**20


def client(emu, **api) -> FilesClient:
    cfg = parse_config({"api": {"base_url": emu.base_url, "timeout_seconds": 10, "max_retries": 3, **api},
                        "upload": {"multipart_threshold": "6MiB", "part_size": "5MiB", "part_concurrency": 3}})
    return FilesClient(cfg.api, cfg.upload, KEY)


def batch_file(path: Path, n: int = 50, pad: int = 0) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"custom_id": f"{path.stem}-{i}", "body": {"model": "m", "prompt": "x" * pad}}) + "\n")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def content(emu, file_id: str) -> bytes:
    return requests.get(f"{emu.base_url}/files/{file_id}/content", headers={"Authorization": f"Bearer {KEY}"},
                        timeout=30).content


def test_single_and_multipart_arrive_byte_identical_and_the_key_stays_home(tmp_path, emu):
    c = client(emu)
    small = batch_file(tmp_path / "small.jsonl")
    big = batch_file(tmp_path / "big.jsonl", n=1700, pad=8000)  # ~13 MiB: 3 parts
    r1 = c.upload(small, "batch-api")
    r2 = c.upload(big, "batch-api")
    assert (r1.method, r1.parts, r1.attempts) == ("single", 1, 1)
    assert (r2.method, r2.parts) == ("multipart", 3)
    on_server = emu.files_by_sha256()
    assert [f["id"] for f in on_server[sha(small)]] == [r1.file.id]
    assert [f["id"] for f in on_server[sha(big)]] == [r2.file.id]
    assert content(emu, r2.file.id) == big.read_bytes()
    stats = emu.stats()
    assert stats["storage_auth_headers"] == 0
    assert r1.sha256 == sha(small) and r2.bytes == big.stat().st_size


def test_a_part_that_fails_twice_is_retried_alone(tmp_path, emu):
    big = batch_file(tmp_path / "big.jsonl", n=1700, pad=8000)
    emu.script([{"route": "part_put", "part_number": 2, "status": 503, "times": 2}])
    r = client(emu).upload(big, "fine-tune")
    stats = emu.stats()
    assert r.method == "multipart" and r.attempts == 3  # two retries of part 2
    assert stats["requests"]["initiate"] == 1 and stats["requests"]["part_put"] == 5
    assert stats["statuses"]["part_put 503"] == 2
    assert content(emu, r.file.id) == big.read_bytes()


def test_retry_after_is_waited(tmp_path, emu):
    emu.script([{"route": "create", "status": 429, "retry_after": 1.2}])
    t0 = time.monotonic()
    r = client(emu).upload(batch_file(tmp_path / "a.jsonl"), "batch-api")
    assert time.monotonic() - t0 >= 1.2 and r.attempts == 2


def test_409_reuses_the_existing_file(tmp_path, emu):
    f = batch_file(tmp_path / "a.jsonl")
    c = client(emu)
    first = c.upload(f, "batch-api")
    again = c.upload(f, "batch-api")
    assert again.method == "existing" and again.file.id == first.file.id
    assert emu.stats()["requests"]["put"] == 1


def test_an_expired_presigned_url_restarts_cleanly(tmp_path, emu):
    emu.script([{"route": "put", "status": 403}])  # storage's answer to an expired url
    r = client(emu).upload(batch_file(tmp_path / "a.jsonl"), "batch-api")
    stats = emu.stats()
    assert r.method == "single" and stats["requests"]["create"] == 2 and stats["requests"]["put"] == 2
    big = batch_file(tmp_path / "big.jsonl", n=1700, pad=8000)
    emu.script([{"route": "part_put", "part_number": 3, "status": 403}])
    r = client(emu).upload(big, "fine-tune")
    stats = emu.stats()
    assert r.method == "multipart" and stats["requests"]["initiate"] == 2 and stats["requests"]["abort"] == 1
    assert content(emu, r.file.id) == big.read_bytes()


@pytest.mark.parametrize("route,mode,error", [
    ("create", "no_location", ProtocolError),
    ("create", "file_location", ProtocolError),
    ("create", "bad_file_id", ProtocolError),
    ("create", "garbage_json", ProtocolError),
    ("create", "redirect_loop", ProtocolError),
    ("create", "huge_content_length", ProtocolError),
    ("create", "hang", TransientError),
    ("put", "redirect_loop", ProtocolError),
    ("preprocess", "garbage_json", ProtocolError),
    ("initiate", "bad_file_id", ProtocolError),
    ("initiate", "file_location", ProtocolError),
    ("part_put", "no_etag", ProtocolError),
    ("complete", "garbage_json", ProtocolError),
])
def test_hostile_answers_are_typed_errors_in_bounded_time(tmp_path, emu, route, mode, error):
    big = route in ("initiate", "part_put", "complete")
    f = batch_file(tmp_path / "h.jsonl", n=900 if big else 5, pad=8000 if big else 0)
    emu.script([{"route": route, "hostile": mode, "seconds": 30}])
    c = client(emu, timeout_seconds=1, max_retries=0)
    t0 = time.monotonic()
    with pytest.raises(error) as info:
        c.upload(f, "batch-api")
    assert time.monotonic() - t0 < 10
    assert KEY not in str(info.value) and "signature=" not in str(info.value)


def test_the_other_host_never_sees_the_key(tmp_path, emu):
    emu.script([{"route": "create", "hostile": "other_host_location"}])
    with pytest.raises(RejectedError):  # the other host took the bytes; the API has none: preprocess refuses
        client(emu).upload(batch_file(tmp_path / "a.jsonl"), "batch-api")
    assert emu.stats()["other_host"] == {"requests": 1, "auth_headers": 0}


def test_wait_for_processing_reports_a_rejection(tmp_path, emu):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "a", "body": {}}\n{"custom_id": "a", "body": {}}\n')
    c = client(emu)
    r = c.upload(bad, "batch-api")
    with pytest.raises(RejectedError) as info:
        c.wait_for_processing(r.file.id, timeout=10)
    assert info.value.report["valid"] is False and "duplicate" in info.value.report["error"]


def test_multipart_memory_does_not_grow_with_part_size(tmp_path, emu):
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        for _ in range(96):
            f.write(os.urandom(MIB))
    script = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from inboxd.api import FilesClient
from inboxd.config import parse_config
cfg = parse_config({{"api": {{"base_url": {emu.base_url!r}}},
                    "upload": {{"multipart_threshold": "8MiB", "part_size": "48MiB"}}}})
r = FilesClient(cfg.api, cfg.upload, {KEY!r}).upload({str(big)!r}, "fine-tune")
# VmHWM, not ru_maxrss: ru_maxrss survives exec and so can be the forking pytest's
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0].split()[1]
print(r.parts, hwm)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    parts, rss_kib = map(int, out.stdout.split())
    assert parts == 2
    assert rss_kib < 80 * 1024, f"peak RSS {rss_kib / 1024:.0f} MiB with 48 MiB parts"


def test_upload_command(tmp_path, emu):
    f = batch_file(tmp_path / "cli.jsonl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOGETHER_")}
    ok = subprocess.run([sys.executable, "-m", "inboxd", "upload", str(f), "--purpose", "batch-api", "--json",
                         "--wait"],
                        capture_output=True, text=True, timeout=60, cwd=REPO,
                        env={**env, "TOGETHER_API_KEY": KEY, "TOGETHER_BASE_URL": emu.base_url})
    assert ok.returncode == 0, ok.stderr
    obj = json.loads(ok.stdout)
    assert obj["processing_status"] == "COMPLETED" and obj["inboxd"]["sha256"] == sha(f)
    assert KEY not in ok.stdout + ok.stderr and "\r" not in ok.stderr  # no progress bar when not a tty
    bad = subprocess.run([sys.executable, "-m", "inboxd", "upload", str(f), "--purpose", "batch-api"],
                         capture_output=True, text=True, timeout=60, cwd=REPO,
                         env={**env, "TOGETHER_API_KEY": "wrong-key-123", "TOGETHER_BASE_URL": emu.base_url})
    assert bad.returncode == 1 and "auth" in bad.stderr and "Traceback" not in bad.stderr
    assert "wrong-key-123" not in bad.stderr
    nokey = subprocess.run([sys.executable, "-m", "inboxd", "upload", str(f), "--purpose", "batch-api"],
                           capture_output=True, text=True, timeout=60, cwd=REPO,
                           env={**env, "TOGETHER_BASE_URL": emu.base_url})
    assert nokey.returncode == 2 and "TOGETHER_API_KEY" in nokey.stderr
    usage = subprocess.run([sys.executable, "-m", "inboxd", "upload", str(f), "--purpose", "nope"],
                           capture_output=True, text=True, timeout=60, cwd=REPO)
    assert usage.returncode == 2
