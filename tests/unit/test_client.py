"""The Files and Batch API client against the emulator started in this process (a real HTTP
server on loopback, no subprocess): single and multipart uploads, retries through faults,
lookups, deletes, aborts, the batch calls and content downloads."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from inboxd.api import AuthError, FilesClient, RejectedError, _transport
from inboxd.config import parse_config
from inboxd.emulator import Emulator
from inboxd.retry import Backoff

KEY = "unit-key"
LINE = b'{"custom_id": "%d", "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}\n'


@pytest.fixture
def emulator(server: Emulator) -> Iterator[Emulator]:
    """The module's in-process emulator (not the shared `emu`, a subprocess), its random
    faults put back after each test."""
    yield server
    server.faults.error_rate = server.faults.part_error_rate = 0.0


def client(emulator: Emulator, key: str = KEY, **upload: object) -> FilesClient:
    cfg = parse_config({"api": {"base_url": emulator.base_url, "max_retries": 3},
                        "upload": {"multipart_threshold": "1MiB", "part_size": "5MiB", **upload},
                        "inboxes": []})
    return FilesClient(cfg.api, cfg.upload, key)


def jsonl(tmp: Path, n: int, name: str = "in.jsonl") -> Path:
    p = tmp / name
    p.write_bytes(b"".join(LINE % i for i in range(n)))
    return p


def test_a_single_upload_is_named_then_whole_and_processed(emulator: Emulator, tmp_path: Path) -> None:
    c = client(emulator)
    src = jsonl(tmp_path, 10)
    named: list[str] = []
    result = c.upload(src, "batch-api", on_created=lambda fid, uid: named.append(fid))
    assert result.method == "single" and named == [result.file.id]
    assert result.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    done = c.wait_for_processing(result.file.id, timeout=10)
    assert done.processing_status == "COMPLETED" and done.bytes == src.stat().st_size
    assert c.lookup(result.file.id) is not None
    assert c.delete(result.file.id) and c.lookup(result.file.id) is None
    c.close()


def test_a_large_file_goes_up_in_parts(emulator: Emulator, tmp_path: Path) -> None:
    c = client(emulator)
    src = tmp_path / "big.jsonl"
    with src.open("wb") as f:
        for i in range(120_000):  # ~11 MB: three parts of 5 MiB
            f.write(LINE % i)
    progress: list[int] = []
    result = c.upload(src, "batch-api", progress=progress.append)
    assert result.method == "multipart" and result.parts >= 2
    assert sum(progress) >= src.stat().st_size
    c.close()


def test_server_errors_are_retried(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_transport, "API_RETRY", Backoff(base=0.01, cap=0.01))
    emulator.faults.error_rate = 0.3
    emulator.faults.part_error_rate = 0.3
    c = client(emulator)
    ok = 0
    for i in range(6):
        try:
            c.upload(jsonl(tmp_path, 3, f"{i}.jsonl"), "batch-api")
            ok += 1
        except Exception:  # noqa: BLE001 - three retries may not be enough at 30 %: counted, not raised
            pass
    assert ok >= 3
    c.close()


def test_a_wrong_key_is_an_auth_error(emulator: Emulator, tmp_path: Path) -> None:
    c = client(emulator, key="wrong")
    with pytest.raises(AuthError):
        c.check_key()
    with pytest.raises(AuthError):
        c.upload(jsonl(tmp_path, 1), "batch-api")
    c.close()


def test_a_purpose_the_server_refuses_is_a_rejection(emulator: Emulator, tmp_path: Path) -> None:
    c = client(emulator)
    with pytest.raises(RejectedError):
        c.upload(jsonl(tmp_path, 1), "no-such-purpose")
    c.close()


def test_cancel_stops_an_upload(emulator: Emulator, tmp_path: Path) -> None:
    from inboxd.api import Cancelled
    cancel = threading.Event()
    cancel.set()
    c = client(emulator)
    with pytest.raises(Cancelled):
        c.upload(jsonl(tmp_path, 5), "batch-api", cancel=cancel)
    c.close()


def test_the_batch_calls_and_the_results_download(emulator: Emulator, tmp_path: Path) -> None:
    c = client(emulator)
    up = c.upload(jsonl(tmp_path, 5), "batch-api")
    c.wait_for_processing(up.file.id, timeout=10)
    job, _warning = c.create_batch(up.file.id, "/v1/chat/completions")
    assert job.input_file_id == up.file.id
    assert any(j.id == job.id for j in c.list_batches())
    for _ in range(100):
        job = c.get_batch(job.id)
        if job.status == "COMPLETED":
            break
        threading.Event().wait(0.05)
    assert job.status == "COMPLETED" and job.output_file_id
    body = c.file_content(job.output_file_id)
    lines = body.content.splitlines()
    body.close()
    assert len(lines) == 5
    tail = c.file_content(job.output_file_id, offset=10)
    assert tail.content == b"\n".join(lines)[10:] + b"\n"
    tail.close()
    again = c.cancel_batch(job.id) if job.status not in ("COMPLETED",) else job
    assert again.id == job.id
    c.close()
