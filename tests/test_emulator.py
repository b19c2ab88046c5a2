"""The emulator as a strict stand-in (issue 2): a real subprocess, plain `requests` and raw
sockets, no inboxd client code (so one cannot hide the other's bugs)."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

KEY = "emulator-test-key-31337"
pytestmark = pytest.mark.emulator(key=KEY, no_dedupe=False, processing_delay=0.3)


def api(emu, method: str, path: str, **kw) -> requests.Response:
    headers = {"Authorization": f"Bearer {emu.key}", **kw.pop("headers", {})}
    return requests.request(method, emu.base_url + path, headers=headers, allow_redirects=False, timeout=10, **kw)


def create(emu, name="x.jsonl", purpose="batch-api", checksum=None) -> requests.Response:
    form = {"purpose": purpose, "file_name": name, "file_type": "jsonl"}
    if checksum:
        form["checksum"] = checksum
    return api(emu, "POST", "/files", files={k: (None, v) for k, v in form.items()})


def single_upload(emu, data: bytes, purpose="batch-api", name="x.jsonl") -> str:
    r = create(emu, name, purpose, hashlib.sha256(data).hexdigest())
    assert r.status_code == 302, r.text
    put = requests.put(r.headers["Location"], data=data, timeout=10)
    assert put.status_code == 200, put.text
    fid = r.headers["X-Together-File-Id"]
    assert api(emu, "POST", f"/files/{fid}/preprocess").status_code == 200
    return fid


def batch(*ids: str) -> bytes:
    return b"".join(json.dumps({"custom_id": i, "body": {"model": "m"}}).encode() + b"\n" for i in ids)


def wait_status(emu, fid: str, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        obj = api(emu, "GET", f"/files/{fid}").json()
        if obj.get("processing_status") in ("COMPLETED", "INVALID_FORMAT", "FAILED") or time.monotonic() > deadline:
            return obj
        time.sleep(0.05)


# --- auth and presigned urls -----------------------------------------------------------------


def test_wrong_key_is_401_everywhere(emu):
    for method, path in [("POST", "/files"), ("GET", "/files"), ("GET", "/files/file-x"), ("DELETE", "/files/file-x"),
                         ("POST", "/files/multipart/initiate"), ("GET", "/_emulator/stats")]:
        r = requests.request(method, emu.base_url + path, headers={"Authorization": "Bearer nope"}, timeout=5)
        assert r.status_code == 401, (method, path, r.status_code)
        assert "nope" not in r.text


@pytest.mark.emulator(url_ttl=1, processing_delay=None)
def test_presigned_url_signature_expiry_and_auth_header(emu):
    r = create(emu)
    url = r.headers["Location"]
    assert urlsplit(url).path.startswith("/_storage/")
    tampered = url.replace("signature=", "signature=0")
    assert requests.put(tampered, data=b"{}\n", timeout=5).status_code == 403
    refused = requests.put(url, data=b"{}\n", headers={"Authorization": f"Bearer {emu.key}"}, timeout=5)
    assert refused.status_code == 400
    assert emu.stats()["storage_auth_headers"] == 1
    expires = int(dict(parse_qsl(urlsplit(url).query))["expires"])
    while time.time() <= expires:  # until the url's own expiry has passed (at most ~2 s)
        time.sleep(0.05)
    expired = requests.put(url, data=b"{}\n", timeout=5)
    assert expired.status_code == 403 and "expired" in expired.text


def test_put_needs_an_exact_content_length(emu):
    url = create(emu).headers["Location"]
    chunked = requests.put(url, data=iter([b'{"a": 1}\n']), timeout=5)  # a generator: chunked encoding
    assert chunked.status_code == 411
    # a body shorter than its Content-Length: the client gives up, nothing is stored. The
    # server closes the connection once it has seen the body end short: that is when to look
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as s:
        s.sendall(f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort".encode())
        s.shutdown(socket.SHUT_WR)
        assert s.recv(4096) == b""  # closed without an answer
    assert emu.stats()["files"] == []
    assert not list((emu.data_dir / "files").iterdir())  # and no partial content left behind


# --- single, 409, processing -----------------------------------------------------------------------


def test_single_upload_409_and_processing(emu):
    data = batch("a", "b")
    fid = single_upload(emu, data)
    (entry,) = emu.stats()["files"]
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["method"] == "single"
    assert api(emu, "GET", f"/files/{fid}").json()["processing_status"] in ("PENDING", "RUNNING")
    obj = wait_status(emu, fid)
    assert obj["processing_status"] == "COMPLETED" and obj["Processed"] is True
    assert obj["type"] == obj["FileType"] == "jsonl" and obj["LineCount"] == 2
    again = create(emu, checksum=hashlib.sha256(data).hexdigest())
    assert again.status_code == 409 and again.json()["file_id"] == fid
    other_purpose = create(emu, purpose="eval", checksum=hashlib.sha256(data).hexdigest())
    assert other_purpose.status_code == 302
    bad = create(emu, checksum="0" * 64)
    assert requests.put(bad.headers["Location"], data=data, timeout=5).status_code == 400  # BadDigest


@pytest.mark.parametrize("content,why", [
    (batch("a", "a"), "duplicate"),
    (batch("x" * 65), "custom_id"),
    (b'{"custom_id": "a", "body": "text"}\n', "body"),
    (b"not json\n", "JSON"),
])
def test_batch_rules_give_invalid_format(emu, content, why):
    fid = single_upload(emu, content)
    obj = wait_status(emu, fid)
    assert obj["processing_status"] == "INVALID_FORMAT"
    assert obj["validation_report"]["valid"] is False and why in obj["validation_report"]["error"]


def test_list_content_range_delete(emu):
    data = batch(*[f"r{i}" for i in range(50)])
    fid = single_upload(emu, data)
    assert [f["id"] for f in api(emu, "GET", "/files").json()["data"]] == [fid]
    assert api(emu, "GET", f"/files/{fid}/content").content == data
    part = api(emu, "GET", f"/files/{fid}/content", headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == data[:10]
    assert part.headers["Content-Range"] == f"bytes 0-9/{len(data)}"
    assert api(emu, "DELETE", f"/files/{fid}").json()["deleted"] is True
    assert api(emu, "GET", f"/files/{fid}").status_code == 404
    assert api(emu, "GET", "/files").json()["data"] == []


# --- dedupe, latency, delete (issues 10 and 14) ---------------------------------------------------


@pytest.mark.emulator(processing_delay=0.1, no_dedupe=True)
def test_no_dedupe_the_same_bytes_twice_make_two_files(emu):
    data = batch("a", "b")
    sha = hashlib.sha256(data).hexdigest()
    first, second = single_upload(emu, data), single_upload(emu, data)
    assert first != second
    assert sorted(f["id"] for f in emu.files_by_sha256()[sha]) == sorted([first, second])
    assert emu.conflicts() == 0
    assert emu.creates_by_sha256() == {sha: 2} and emu.stats()["creates"] == 2


def test_dedupe_answers_409_and_counts_it(emu):
    data = batch("a", "b")
    sha = hashlib.sha256(data).hexdigest()
    fid = single_upload(emu, data)
    again = create(emu, checksum=sha)
    assert again.status_code == 409 and again.json()["file_id"] == fid
    assert emu.conflicts() == 1
    assert emu.creates_by_sha256() == {sha: 1} and emu.stats()["creates"] == 1
    assert len(emu.files_by_sha256()[sha]) == 1
    # a create without a checksum (the 1.x client) is counted by the content's sha256 once it arrives
    other = batch("c")
    r = create(emu, name="y.jsonl")
    assert r.status_code == 302 and emu.creates_by_sha256() == {sha: 1}
    assert requests.put(r.headers["Location"], data=other, timeout=5).status_code == 200
    assert emu.creates_by_sha256() == {sha: 1, hashlib.sha256(other).hexdigest(): 1}


@pytest.mark.emulator(latency_ms=50, processing_delay=None)
def test_latency_delays_every_answer(emu):
    s = requests.Session()
    t0 = time.monotonic()
    urls = []
    for i in range(10):  # 10 API answers ...
        r = s.post(emu.base_url + "/files", headers={"Authorization": f"Bearer {emu.key}"}, allow_redirects=False,
                   files={"purpose": (None, "batch-api"), "file_name": (None, f"{i}.jsonl")}, timeout=5)
        assert r.status_code == 302
        urls.append(r.headers["Location"])
    t1 = time.monotonic()
    for url in urls:  # ... and 10 storage answers
        assert s.put(url, data=b"{}\n", timeout=5).status_code == 200
    t2 = time.monotonic()
    assert t1 - t0 >= 0.5 and t2 - t1 >= 0.5 and t2 - t0 >= 1.0


def test_delete_then_get_is_404(emu):
    data = batch("a")
    sha = hashlib.sha256(data).hexdigest()
    fid = single_upload(emu, data)
    assert api(emu, "DELETE", f"/files/{fid}").json() == {"id": fid, "object": "file", "deleted": True}
    assert api(emu, "GET", f"/files/{fid}").status_code == 404
    assert api(emu, "GET", f"/files/{fid}/content").status_code == 404
    assert api(emu, "DELETE", f"/files/{fid}").status_code == 404
    assert emu.stats()["deletes"] == 1
    # once deleted, the same bytes are no conflict: they upload again as a new file
    assert single_upload(emu, data) != fid
    assert emu.conflicts() == 0
    # an orphan (created, never uploaded), as the daemon deletes them: gone, and its url with it
    orphan = create(emu, checksum=hashlib.sha256(b"{}\n").hexdigest())
    oid = orphan.headers["X-Together-File-Id"]
    assert api(emu, "DELETE", f"/files/{oid}").status_code == 200
    assert api(emu, "GET", f"/files/{oid}").status_code == 404
    assert requests.put(orphan.headers["Location"], data=b"{}\n", timeout=5).status_code == 404
    assert emu.stats()["deletes"] == 2 and [f["sha256"] for f in emu.stats()["files"]] == [sha]


# --- multipart -------------------------------------------------------------------------------------

MIB = 2**20


def initiate(emu, size: int, parts: int, checksum: str | None = None) -> dict:
    body = {"file_name": "big.jsonl", "file_size": size, "num_parts": parts, "purpose": "fine-tune",
            "file_type": "jsonl", "checksum": checksum}
    r = api(emu, "POST", "/files/multipart/initiate", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def put_parts(info: dict, chunks: list[bytes]) -> list[dict]:
    out = []
    for p, chunk in zip(info["parts"], chunks, strict=True):
        r = requests.put(p["URL"], data=chunk, headers=p["Headers"], timeout=10)
        assert r.status_code == 200, r.text
        out.append({"part_number": p["PartNumber"], "etag": r.headers["ETag"].strip('"')})
    return out


def complete(emu, info: dict, parts: list[dict]) -> requests.Response:
    return api(emu, "POST", "/files/multipart/complete",
               json={"upload_id": info["upload_id"], "file_id": info["file_id"], "parts": parts})


def test_multipart_rules(emu):
    a, b = b"a" * (5 * MIB), b"b" * 1000
    info = initiate(emu, len(a) + len(b), 2)
    parts = put_parts(info, [a, b])
    assert parts[0]["etag"] == hashlib.md5(a).hexdigest()
    wrong = [parts[0], {"part_number": 2, "etag": "0" * 32}]
    assert "InvalidPart" in complete(emu, info, wrong).text
    assert "InvalidPartOrder" in complete(emu, info, list(reversed(parts))).text
    assert "InvalidPart" in complete(emu, info, parts[:1]).text
    r = complete(emu, info, parts)
    assert r.status_code == 200 and r.json()["file"]["bytes"] == len(a) + len(b)
    assert emu.files_by_sha256()[hashlib.sha256(a + b).hexdigest()][0]["method"] == "multipart"

    small = initiate(emu, 2000, 2)
    assert "EntityTooSmall" in complete(emu, small, put_parts(small, [b"x" * 1000, b"y" * 1000])).text
    size = initiate(emu, 5 * MIB + 10, 2)
    assert "declared" in complete(emu, size, put_parts(size, [a, b"z"])).text
    gone = initiate(emu, 10, 1)
    assert api(emu, "POST", "/files/multipart/abort",
               json={"upload_id": gone["upload_id"], "file_id": gone["file_id"]}).json()["status"] == "aborted"
    assert requests.put(gone["parts"][0]["URL"], data=b"x" * 10, timeout=5).status_code == 404
    stats = emu.stats()
    assert stats["aborts"] == 1 and stats["creates"] == 4 and stats["conflicts"] == 0


# --- faults ----------------------------------------------------------------------------------------


def test_random_faults_each_observed(emu):
    emu.set_faults(error_rate=1.0)
    assert api(emu, "GET", "/files").status_code == 500
    emu.set_faults(error_rate=0.0, rate_limit_rate=1.0, retry_after_seconds=2.5)
    r = api(emu, "GET", "/files")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2.5" and r.headers["retry-after-ms"] == "2500"
    emu.set_faults(rate_limit_rate=0.0, part_error_rate=1.0)
    url = create(emu).headers["Location"]
    assert requests.put(url, data=b"{}\n", timeout=5).status_code == 503
    emu.set_faults(part_error_rate=0.0, drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        requests.put(url, data=b"x" * (4 * MIB), timeout=5)
    emu.set_faults(drop_rate=0.0, slow_seconds=0.5)
    t0 = time.monotonic()
    api(emu, "GET", "/files")
    assert time.monotonic() - t0 >= 0.5
    injected = emu.stats()["faults_injected"]
    assert {"error", "rate_limit", "storage_503", "drop"} <= set(injected)
    assert emu.stats()["files"] == []  # the dropped PUT stored nothing
    emu.reset()
    assert emu.stats()["faults_injected"] == {}


def test_scripted_statuses_are_one_shot(emu):
    emu.script([{"route": "list", "status": 503, "times": 2}, {"route": "list", "status": 429, "retry_after": 1}])
    assert [api(emu, "GET", "/files").status_code for _ in range(4)] == [503, 503, 429, 200]


@pytest.mark.parametrize("mode", ["no_location", "file_location", "other_host_location", "bad_file_id",
                                  "garbage_json", "huge_content_length", "redirect_loop", "hang"])
def test_hostile_answers_on_create(emu, mode):
    emu.script([{"route": "create", "hostile": mode, "seconds": 2}])
    if mode == "hang":
        with pytest.raises(requests.ReadTimeout):
            requests.post(emu.base_url + "/files", headers={"Authorization": f"Bearer {emu.key}"},
                          files={"purpose": (None, "batch-api"), "file_name": (None, "x.jsonl")}, timeout=(5, 0.5))
        return
    if mode == "huge_content_length":
        r = requests.post(emu.base_url + "/files", headers={"Authorization": f"Bearer {emu.key}"},
                          files={"purpose": (None, "batch-api"), "file_name": (None, "x.jsonl")}, stream=True,
                          timeout=5)
        assert r.headers["Content-Length"] == str(5 * 10**9)
        with pytest.raises(requests.RequestException):
            r.content  # noqa: B018 - the body breaks off
        return
    r = create(emu)
    if mode == "no_location":
        assert r.status_code == 302 and "Location" not in r.headers
    elif mode == "file_location":
        assert r.headers["Location"] == "file:///etc/passwd"
    elif mode == "bad_file_id":
        assert "../" in r.headers["X-Together-File-Id"]
    elif mode == "garbage_json":
        assert r.status_code == 200
        with pytest.raises(ValueError):
            r.json()
    elif mode == "redirect_loop":
        assert r.status_code == 307 and r.headers["Location"].endswith("/v1/files")
    elif mode == "other_host_location":
        other = r.headers["Location"]
        assert urlsplit(other).netloc != urlsplit(emu.base_url).netloc
        requests.put(other, data=b"x", headers={"Authorization": "Bearer sent-by-mistake"}, timeout=5)
        assert emu.stats()["other_host"] == {"requests": 1, "auth_headers": 1}


def test_no_etag_on_a_part(emu):
    info = initiate(emu, 10, 1)
    emu.script([{"route": "part_put", "hostile": "no_etag"}])
    r = requests.put(info["parts"][0]["URL"], data=b"x" * 10, timeout=5)
    assert r.status_code == 200 and "ETag" not in r.headers


def test_small_answers_do_not_wait_on_nagle(emu):
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {emu.key}"
    s.get(emu.base_url + "/files", timeout=5)
    t0 = time.monotonic()
    for _ in range(50):
        assert s.get(emu.base_url + "/files", timeout=5).status_code == 200
    assert time.monotonic() - t0 < 1.0  # 40 ms of delayed ACK each would be 2 s
