"""The emulator's Batch API (issue 12, SPEC §9): a real `inboxd emulator` subprocess, plain
`requests` and `http.client`, no inboxd client code."""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from urllib.parse import urlsplit

import pytest
import requests

from tests.helpers.emulator import EmulatorProc

KEY = "emulator-batch-key-2718"
pytestmark = pytest.mark.emulator(key=KEY, no_dedupe=False, batch_seconds=0.5, processing_delay=0.05)
CHAT = "/v1/chat/completions"
JOB_FIELDS = {"id", "user_id", "input_file_id", "file_size_bytes", "status", "job_deadline", "created_at",
              "endpoint", "progress", "model_id", "error", "completed_at"}
TERMINAL = {"COMPLETED", "FAILED", "EXPIRED", "CANCELLED"}


def api(emu: EmulatorProc, method: str, path: str, **kw) -> requests.Response:
    headers = {"Authorization": f"Bearer {emu.key}", **kw.pop("headers", {})}
    return requests.request(method, emu.base_url + path, headers=headers, allow_redirects=False, timeout=10, **kw)


def request_line(i: int, model: str = "m", messages: bool = True) -> dict:
    body: dict = {"model": model, "max_tokens": 10}
    if messages:
        body["messages"] = [{"role": "system", "content": "be brief"},
                            {"role": "user", "content": f"question number {i}"}]
    return {"custom_id": f"req-{i}", "body": body}


def upload(emu: EmulatorProc, lines: list[dict], purpose: str = "batch-api", wait: bool = True) -> str:
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    form = {"purpose": purpose, "file_name": "in.jsonl", "file_type": "jsonl"}
    r = api(emu, "POST", "/files", files={k: (None, v) for k, v in form.items()})
    assert r.status_code == 302, r.text
    assert requests.put(r.headers["Location"], data=data, timeout=10).status_code == 200
    fid = r.headers["X-Together-File-Id"]
    assert api(emu, "POST", f"/files/{fid}/preprocess").status_code == 200
    deadline = time.monotonic() + 5
    while wait and api(emu, "GET", f"/files/{fid}").json().get("processing_status") != "COMPLETED":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return fid


def create_job(emu: EmulatorProc, fid: str, **extra) -> dict:
    r = api(emu, "POST", "/batches", json={"input_file_id": fid, "endpoint": CHAT, **extra})
    assert r.status_code == 201, r.text
    return r.json()["job"]


def wait_terminal(emu: EmulatorProc, job_id: str, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = api(emu, "GET", f"/batches/{job_id}").json()
        if job["status"] in TERMINAL:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.03)


def content(emu: EmulatorProc, fid: str) -> bytes:
    r = api(emu, "GET", f"/files/{fid}/content")
    assert r.status_code == 200
    return r.content


def jsonl(data: bytes) -> list[dict]:
    return [json.loads(x) for x in data.splitlines() if x.strip()]


# --- shapes --------------------------------------------------------------------------------------


def test_create_get_list_cancel_shapes(emu):
    fid = upload(emu, [request_line(i) for i in range(5)])
    r = api(emu, "POST", "/batches", json={"input_file_id": fid, "endpoint": CHAT, "completion_window": "24h",
                                            "priority": 1, "model_id": "m"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"job", "warning"} and isinstance(body["warning"], str)
    job = body["job"]
    assert JOB_FIELDS <= set(job)
    assert "output_file_id" not in job and "error_file_id" not in job  # only once that file exists
    assert job["status"] == "VALIDATING" and job["progress"] == 0.0 and job["completed_at"] is None
    assert job["input_file_id"] == fid and job["endpoint"] == CHAT and job["model_id"] == "m"
    assert job["file_size_bytes"] == api(emu, "GET", f"/files/{fid}").json()["bytes"]
    assert job["id"].startswith("batch-") and isinstance(job["user_id"], str)
    created = time.strptime(job["created_at"][:19], "%Y-%m-%dT%H:%M:%S")
    deadline = time.strptime(job["job_deadline"][:19], "%Y-%m-%dT%H:%M:%S")
    assert time.mktime(deadline) - time.mktime(created) == 24 * 3600

    got = api(emu, "GET", f"/batches/{job['id']}")
    assert got.status_code == 200 and got.json()["id"] == job["id"]  # the job itself, no wrapper
    listed = api(emu, "GET", "/batches").json()
    assert isinstance(listed, list) and [j["id"] for j in listed] == [job["id"]]

    cancelled = api(emu, "POST", f"/batches/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELING"
    assert api(emu, "POST", f"/batches/{job['id']}/cancel").json()["status"] == "CANCELING"  # again: no change
    end = wait_terminal(emu, job["id"], timeout=2)
    assert end["status"] == "CANCELLED" and end["completed_at"]
    again = api(emu, "POST", f"/batches/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.json() == {"error": "Cannot cancel job - already in terminal state: CANCELLED"}


def test_unknown_ids_are_404_and_errors_are_strings(emu):
    for method, path in [("GET", "/batches/batch-nope"), ("POST", "/batches/batch-nope/cancel")]:
        r = api(emu, method, path)
        assert r.status_code == 404, (method, path)
        assert isinstance(r.json()["error"], str)


def test_create_400s(emu):
    good = upload(emu, [request_line(0)])
    tuning = upload(emu, [{"text": "hello"}], purpose="fine-tune")
    cases = [
        {"input_file_id": good, "endpoint": "/v1/embeddings"},  # unknown endpoint
        {"input_file_id": good},  # no endpoint
        {"endpoint": CHAT},  # no input file
        {"input_file_id": "file-does-not-exist", "endpoint": CHAT},
        {"input_file_id": tuning, "endpoint": CHAT},  # not batch-api
        {"input_file_id": good, "endpoint": CHAT, "completion_window": "soon"},
        {"input_file_id": good, "endpoint": CHAT, "priority": "high"},
    ]
    emu.set_faults(processing_delay_seconds=60)
    cases.append({"input_file_id": upload(emu, [request_line(1)], wait=False), "endpoint": CHAT})  # not processed
    for payload in cases:
        r = api(emu, "POST", "/batches", json=payload)
        assert r.status_code == 400, (payload, r.status_code, r.text)
        assert isinstance(r.json()["error"], str)
    assert emu.batch_creates() == 0
    assert api(emu, "GET", "/batches").json() == []


def test_every_endpoint_needs_the_key(emu):
    for method, path in [("POST", "/batches"), ("GET", "/batches"), ("GET", "/batches/b"),
                         ("POST", "/batches/b/cancel")]:
        r = requests.request(method, emu.base_url + path, headers={"Authorization": "Bearer nope"}, timeout=5)
        assert r.status_code == 401, (method, path)


# --- time ----------------------------------------------------------------------------------------


def test_status_progression_on_the_batch_seconds_clock(emu):
    fid = upload(emu, [request_line(i) for i in range(8)])
    t0 = time.monotonic()
    job = create_job(emu, fid)
    seen: list[tuple[str, float]] = []
    while True:
        j = api(emu, "GET", f"/batches/{job['id']}").json()
        seen.append((j["status"], j["progress"]))
        if j["status"] in TERMINAL:
            break
        assert time.monotonic() - t0 < 3, seen
        time.sleep(0.02)
    took = time.monotonic() - t0
    assert 0.45 <= took < 1.5, took  # --batch-seconds 0.5
    statuses = [s for s, _ in seen]
    order = ["VALIDATING", "IN_PROGRESS", "COMPLETED"]
    assert statuses == sorted(statuses, key=order.index), statuses
    assert statuses[-1] == "COMPLETED" and "IN_PROGRESS" in statuses
    progress = [p for _, p in seen]
    assert progress == sorted(progress) and progress[-1] == 100.0
    assert any(0 < p < 100 for s, p in seen if s == "IN_PROGRESS"), seen
    assert j["completed_at"] and j["error"] is None
    assert "output_file_id" in j and "error_file_id" not in j  # no failed line: no error file


def test_batch_seconds_zero_is_done_at_the_first_look(emu):
    emu.set_faults(batch_seconds=0)
    job = create_job(emu, upload(emu, [request_line(0)]))
    assert job["status"] == "VALIDATING"
    assert api(emu, "GET", f"/batches/{job['id']}").json()["status"] == "COMPLETED"


# --- the fake model ------------------------------------------------------------------------------


def test_outputs_come_in_another_order_with_every_custom_id_and_errors_in_the_error_file(emu):
    lines = [request_line(i) for i in range(23)]
    lines[5] = request_line(5, model="unknown-model")
    lines[17] = request_line(17, messages=False)
    fid = upload(emu, lines)
    job = wait_terminal(emu, create_job(emu, fid)["id"])
    assert job["status"] == "COMPLETED" and job["progress"] == 100.0

    out = jsonl(content(emu, job["output_file_id"]))
    errors = jsonl(content(emu, job["error_file_id"]))
    expected = [x["custom_id"] for x in lines if x["custom_id"] not in ("req-5", "req-17")]
    got = [x["custom_id"] for x in out]
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))
    assert got != expected  # the server's order, not the input's
    for line in out:
        assert line["error"] is None and line["id"]
        assert line["response"]["status_code"] == 200
        body = line["response"]["body"]
        i = int(line["custom_id"].split("-")[1])
        assert body["object"] == "chat.completion" and body["model"] == "m"
        assert body["choices"][0]["message"] == {"role": "assistant", "content": f"question number {i}"[::-1]}
        usage = body["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert sorted(e["custom_id"] for e in errors) == ["req-17", "req-5"]
    for e in errors:
        assert set(e) == {"custom_id", "error"} and e["error"]["message"] and e["error"]["code"]
    by_id = {e["custom_id"]: e["error"]["code"] for e in errors}
    assert by_id == {"req-5": "model_not_available", "req-17": "invalid_request"}

    # the outputs are Files, processed, listed; a second job over the same input gives the same answers
    for fid_out, n in [(job["output_file_id"], 21), (job["error_file_id"], 2)]:
        obj = api(emu, "GET", f"/files/{fid_out}").json()
        assert obj["purpose"] == "batch-output" and obj["Processed"] and obj["LineCount"] == n
        assert obj["processing_status"] == "COMPLETED"
    listed = {f["id"] for f in api(emu, "GET", "/files").json()["data"]}
    assert {job["output_file_id"], job["error_file_id"]} <= listed
    again = wait_terminal(emu, create_job(emu, fid)["id"])
    again_out = jsonl(content(emu, again["output_file_id"]))
    assert [x["custom_id"] for x in again_out] == got  # deterministic order
    assert [x["response"]["body"]["choices"] for x in again_out] == [x["response"]["body"]["choices"] for x in out]


# --- scripted outcomes ---------------------------------------------------------------------------


def test_scripted_failed_has_no_files_only_an_error(emu):
    emu.next_batch_outcome("FAILED")
    fid = upload(emu, [request_line(i) for i in range(6)])
    job = wait_terminal(emu, create_job(emu, fid)["id"])
    assert job["status"] == "FAILED" and isinstance(job["error"], str) and job["error"]
    assert "output_file_id" not in job and "error_file_id" not in job
    # one-shot: the next job completes
    assert wait_terminal(emu, create_job(emu, fid)["id"])["status"] == "COMPLETED"


def test_scripted_expired_keeps_half_the_lines(emu):
    emu.next_batch_outcome("EXPIRED")
    lines = [request_line(i) for i in range(10)]
    job = wait_terminal(emu, create_job(emu, upload(emu, lines))["id"])
    assert job["status"] == "EXPIRED" and job["error"] and job["progress"] == 50.0
    out = jsonl(content(emu, job["output_file_id"]))
    assert sorted(x["custom_id"] for x in out) == sorted(f"req-{i}" for i in range(5))  # the rest missing
    assert "error_file_id" not in job


def test_scripted_cancelled_shows_canceling_then_ends_with_partial_output(emu):
    emu.next_batch_outcome("CANCELLED", fraction=0.5)
    job = create_job(emu, upload(emu, [request_line(i) for i in range(8)]))
    statuses = []
    while True:
        j = api(emu, "GET", f"/batches/{job['id']}").json()
        statuses.append(j["status"])
        if j["status"] in TERMINAL:
            break
        time.sleep(0.02)
    assert "CANCELING" in statuses and statuses[-1] == "CANCELLED"
    assert j["error"] is None
    assert sorted(x["custom_id"] for x in jsonl(content(emu, j["output_file_id"]))) == [f"req-{i}" for i in range(4)]


def test_a_user_cancel_during_progress_keeps_what_was_done(emu):
    emu.set_faults(batch_seconds=3)
    lines = [request_line(i) for i in range(40)]
    job = create_job(emu, upload(emu, lines))
    while api(emu, "GET", f"/batches/{job['id']}").json()["progress"] < 20:
        time.sleep(0.05)
    c = api(emu, "POST", f"/batches/{job['id']}/cancel").json()
    assert c["status"] == "CANCELING"
    end = wait_terminal(emu, job["id"])
    assert end["status"] == "CANCELLED" and 20 <= end["progress"] < 100
    done = round(40 * end["progress"] / 100)
    out = jsonl(content(emu, end["output_file_id"]))
    assert sorted(x["custom_id"] for x in out) == sorted(f"req-{i}" for i in range(done))


def test_scripted_429_on_the_next_create(emu):
    fid = upload(emu, [request_line(0)])
    emu.next_batch_create_status(429, retry_after=2)
    r = api(emu, "POST", "/batches", json={"input_file_id": fid, "endpoint": CHAT})
    assert r.status_code == 429 and r.headers["Retry-After"] == "2" and r.headers["retry-after-ms"] == "2000"
    assert isinstance(r.json()["error"], str) and r.json()["error_type"] == "dynamic_request_limited"
    assert emu.batch_creates() == 0 and api(emu, "GET", "/batches").json() == []
    create_job(emu, fid)
    assert emu.batch_creates() == 1


def test_bad_batch_script_entries_are_refused(emu):
    for entry in [{"outcome": "EXPLODED"}, {"cut_download": 2}, {"create_status": 200}, {"nothing": 1},
                  {"outcome": "FAILED", "cut_download": 0.5}]:
        r = requests.post(f"{emu.base_url}/_emulator/batches", json=[entry],
                          headers={"Authorization": f"Bearer {emu.key}"}, timeout=5)
        assert r.status_code == 400, entry


# --- downloads -----------------------------------------------------------------------------------


def _finished_output(emu: EmulatorProc) -> tuple[str, bytes]:
    emu.set_faults(batch_seconds=0)
    job = create_job(emu, upload(emu, [request_line(i) for i in range(60)]))
    job = wait_terminal(emu, job["id"])
    return job["output_file_id"], content(emu, job["output_file_id"])


def test_range_download(emu):
    fid, full = _finished_output(emu)
    n = len(full) // 3
    r = api(emu, "GET", f"/files/{fid}/content", headers={"Range": f"bytes={n}-"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes {n}-{len(full) - 1}/{len(full)}"
    assert r.content == full[n:] and int(r.headers["Content-Length"]) == len(full) - n
    past = api(emu, "GET", f"/files/{fid}/content", headers={"Range": f"bytes={len(full)}-"})
    assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{len(full)}"


def test_a_cut_download_resumes_with_range(emu):
    fid, full = _finished_output(emu)
    emu.cut_next_download(0.5)
    u = urlsplit(emu.base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", f"{u.path}/files/{fid}/content", headers={"Authorization": f"Bearer {emu.key}"})
    resp = conn.getresponse()
    assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(full)
    with pytest.raises(http.client.IncompleteRead) as cut:
        resp.read()
    conn.close()
    got = cut.value.partial
    assert len(got) == len(full) // 2 and full.startswith(got)
    rest = api(emu, "GET", f"/files/{fid}/content", headers={"Range": f"bytes={len(got)}-"})
    assert rest.status_code == 206
    assert hashlib.sha256(got + rest.content).hexdigest() == hashlib.sha256(full).hexdigest()
    assert emu.stats()["faults_injected"]["cut_download"] == 1
    assert content(emu, fid) == full  # one-shot


# --- counting ------------------------------------------------------------------------------------


def test_batch_creates_are_counted_by_input_and_reset_keeps_the_jobs(emu):
    a, b = upload(emu, [request_line(0)]), upload(emu, [request_line(1), request_line(2)])
    create_job(emu, a)
    create_job(emu, a)
    create_job(emu, b)
    assert emu.batch_creates() == 3
    assert emu.batch_creates_by_input() == {a: 2, b: 1}
    jobs = emu.batches()
    assert [j["input_file_id"] for j in jobs] == [a, a, b] and jobs[2]["lines"] == 2
    assert all(j["outcome"] == "COMPLETED" for j in jobs)
    emu.reset()
    assert emu.batch_creates() == 0 and len(emu.batches()) == 3


# --- per-job limits, transient 429s, expiring jobs (the batch ledger's offline cases) -------------


@pytest.mark.emulator(batch_seconds=0, processing_delay=0.01, batch_max_requests=3, batch_max_bytes=100_000)
def test_a_create_over_the_per_job_limits_is_a_400(emu):
    too_many = upload(emu, [request_line(i) for i in range(4)])
    r = api(emu, "POST", "/batches", json={"input_file_id": too_many, "endpoint": CHAT})
    assert r.status_code == 400 and "at most 3" in r.json()["error"]
    assert create_job(emu, upload(emu, [request_line(i) for i in range(3)]))["status"] == "VALIDATING"
    emu.set_faults(batch_max_requests=50_000, batch_max_bytes=200)  # bytes now: the control endpoint
    r = api(emu, "POST", "/batches", json={"input_file_id": too_many, "endpoint": CHAT})
    assert r.status_code == 400 and "at most 200" in r.json()["error"]
    assert emu.batch_creates() == 1


def test_transient_429s_are_per_job_and_request_so_a_resend_may_pass(emu):
    emu.set_faults(batch_seconds=0, batch_transient_rate=0.3)
    fid = upload(emu, [request_line(i) for i in range(200)])
    answers = []
    for _ in range(2):
        job = wait_terminal(emu, create_job(emu, fid)["id"])
        assert job["status"] == "COMPLETED"
        errors = jsonl(content(emu, job["error_file_id"]))
        out = jsonl(content(emu, job["output_file_id"]))
        assert len(errors) + len(out) == 200
        assert all(x["error"]["status_code"] == 429 and x["response"]["status_code"] == 429 for x in errors)
        answers.append({x["custom_id"] for x in errors})
    assert 30 < len(answers[0]) < 90 and 30 < len(answers[1]) < 90  # about 30 % of 200
    assert answers[0] != answers[1]  # another job, other requests: a resend may pass
    assert answers[0] - answers[1]


@pytest.mark.emulator(batch_seconds=0, processing_delay=0.01, batch_expire_next=2)
def test_the_next_n_jobs_expire_half_done(emu):
    fid = upload(emu, [request_line(i) for i in range(10)])
    ends = [wait_terminal(emu, create_job(emu, fid)["id"]) for _ in range(3)]
    assert [j["status"] for j in ends] == ["EXPIRED", "EXPIRED", "COMPLETED"]
    assert [len(jsonl(content(emu, j["output_file_id"]))) for j in ends] == [5, 5, 10]
    emu.set_faults(batch_expire_next=1)
    assert wait_terminal(emu, create_job(emu, fid)["id"])["status"] == "EXPIRED"
