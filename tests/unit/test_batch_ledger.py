"""The batch ledger's pure logic: splitting an input into parts, the ledger file, which
requests are resent, and the merge of final answers (no server, real files under tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

from inboxd.batch.answers import ERRORS, OUTPUT
from inboxd.batch.ledger import Ledger, Limits, ledger_path
from inboxd.batch.merge import JobFiles, merge
from inboxd.batch.resend import DEFAULT_CODES, job_verdicts, select_resends
from inboxd.batch.split import copy_ranges, lines, plan_parts

LIMITS = Limits(max_requests_per_job=4, max_bytes_per_job=10**6, resubmit_rounds=2, resubmit_codes=[429, 503])


def request(i: int) -> bytes:
    return json.dumps({"custom_id": f"r{i}", "body": {"model": "m", "messages": [{"role": "user",
                                                                                   "content": f"q{i}"}]}}).encode()


def write_input(path: Path, n: int, blank_every: int = 0, final_newline: bool = True) -> Path:
    rows = []
    for i in range(n):
        rows.append(request(i))
        if blank_every and i % blank_every == blank_every - 1:
            rows.append(b"   ")
    data = b"\n".join(rows) + (b"\n" if final_newline else b"")
    path.write_bytes(data)
    return path


def ok(i: int, tokens: int = 3) -> bytes:
    return json.dumps({"custom_id": f"r{i}", "response": {"status_code": 200, "body": {
        "usage": {"prompt_tokens": 1, "completion_tokens": tokens - 1, "total_tokens": tokens}}}}).encode() + b"\n"


def err(i: int, code: int) -> bytes:
    return json.dumps({"custom_id": f"r{i}", "error": {"message": "no", "status_code": code}}).encode() + b"\n"


# --- split -----------------------------------------------------------------------------------


def test_parts_cut_at_line_boundaries_by_requests_and_by_bytes(tmp_path):
    src = write_input(tmp_path / "in.jsonl", 10, blank_every=3)
    data = src.read_bytes()
    parts = plan_parts(src, max_requests=4, max_bytes=10**6)
    assert [p.requests for p in parts] == [4, 4, 2]
    assert parts[0].start == 0 and parts[-1].end == len(data)
    assert all(a.end == b.start for a, b in zip(parts, parts[1:], strict=False))
    assert all(data[p.start - 1:p.start] == b"\n" for p in parts[1:])  # each cut after a newline
    line = len(request(0)) + 1
    by_bytes = plan_parts(src, max_requests=100, max_bytes=3 * line + 1)
    assert all(p.bytes <= 3 * line + 1 for p in by_bytes) and sum(p.requests for p in by_bytes) == 10
    assert len(by_bytes) >= 4


def test_copy_ranges_is_byte_for_byte_and_never_runs_lines_together(tmp_path):
    src = write_input(tmp_path / "in.jsonl", 5, final_newline=False)
    offsets = [(off, off + len(raw)) for off, raw in lines(src)]
    dest = tmp_path / "out.jsonl"
    copy_ranges(src, [offsets[1], offsets[4]], dest)
    assert dest.read_bytes() == request(1) + b"\n" + request(4) + b"\n"
    assert [raw for _, raw in lines(src, [offsets[2]])] == [request(2) + b"\n"]


# --- the ledger ----------------------------------------------------------------------------------


def test_the_ledger_round_trips_through_its_file_and_counts_final_requests(tmp_path):
    src = write_input(tmp_path / "in.jsonl", 10)
    ledger = Ledger.plan(src, plan_parts(src, 4, 10**6), LIMITS, sha256="ab")
    assert [(j.part, j.round, j.requests) for j in ledger.jobs] == [(1, 1, 4), (2, 1, 4), (3, 1, 2)]
    assert ledger.final_requests() == 0
    first = ledger.jobs[0]
    first.stage, first.listed_before, first.id = "created", ["batch-old"], "batch-1"
    nxt = ledger.settle(first, [(0, 10)], 1)
    assert nxt is not None and (nxt.part, nxt.round, nxt.requests) == (1, 2, 1)
    assert first.final == 3 and ledger.final_requests() == 3  # part 1: 3 of 4 final, 1 resent
    path = ledger_path(tmp_path / "done" / "in.jsonl")
    path.parent.mkdir()
    ledger.save(path)
    assert path.name == "in.jsonl.ledger.json" and json.loads(path.read_text())["schema"] == "inboxd.ledger/v1"
    again = Ledger.load(path)
    assert again == ledger and again.job_ids() == ["batch-1"] and again.jobs[0].listed_before == ["batch-old"]
    assert not list(path.parent.glob(".*tmp"))


def test_rounds_stop_at_resubmit_rounds_and_an_operator_cancel_is_not_resent(tmp_path):
    src = write_input(tmp_path / "in.jsonl", 4)
    ledger = Ledger.plan(src, plan_parts(src, 4, 10**6), LIMITS, sha256=None)
    job = ledger.jobs[0]
    for _ in range(LIMITS.resubmit_rounds):
        job = ledger.settle(job, [(0, 5)], 1)
        assert job is not None
    assert job.round == 3 and ledger.settle(job, [(0, 5)], 1) is None  # 2 resubmit rounds: 3 in all
    assert ledger.done and ledger.final_requests() == 4
    other = Ledger.plan(src, plan_parts(src, 4, 10**6), LIMITS, sha256=None)
    other.jobs[0].cancelled_by_operator = True
    assert other.settle(other.jobs[0], [(0, 5)], 1) is None and other.done


# --- resend selection ----------------------------------------------------------------------------


def test_transient_errors_and_unanswered_requests_are_resent_byte_for_byte(tmp_path):
    src = write_input(tmp_path / "in.jsonl", 8)
    out, errs = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    out.write_bytes(ok(0) + ok(2) + ok(5))
    errs.write_bytes(err(1, 429) + err(3, 400) + err(4, 503) + err(6, 500))  # 7: in neither file
    verdicts = job_verdicts({OUTPUT: out, ERRORS: errs})
    ranges, n = select_resends(src, [(0, src.stat().st_size)], verdicts, LIMITS.resubmit_codes)
    assert n == 3  # 1 (429), 4 (503), 7 (missing); 3 (400) and 6 (500, not in these codes) are final
    dest = tmp_path / "round2.jsonl"
    copy_ranges(src, ranges, dest)
    assert dest.read_bytes() == request(1) + b"\n" + request(4) + b"\n" + request(7) + b"\n"
    _, n_default = select_resends(src, [(0, src.stat().st_size)], verdicts, DEFAULT_CODES)
    assert n_default == 4  # the default codes include 500


# --- merge ---------------------------------------------------------------------------------------


def test_the_merge_keeps_final_answers_only_in_input_order(tmp_path):
    src = write_input(tmp_path / "in.jsonl", 6)
    r1o, r1e, r2o = tmp_path / "r1o", tmp_path / "r1e", tmp_path / "r2o"
    r1o.write_bytes(ok(2) + ok(0) + ok(5, tokens=10))
    r1e.write_bytes(err(1, 429) + err(3, 400))  # 4: missing in round 1
    r2o.write_bytes(ok(4) + ok(1))  # round 2 answers the 429 and the missing one
    jobs = [JobFiles("b2", 2, r2o, None), JobFiles("b1", 1, r1o, r1e)]
    dests = {k: tmp_path / f"merged.{k}" for k in ("output", "errors", "results")}
    merged = merge(jobs, src, 6, dests, work_dir=tmp_path)
    assert (merged.counts.succeeded, merged.counts.failed, merged.counts.missing) == (5, 1, 0)
    assert merged.errors_by_code == {"400": 1}
    assert merged.usage == {"prompt_tokens": 5, "completion_tokens": 17, "total_tokens": 22}
    assert dests["errors"].read_bytes() == err(3, 400)  # never the round-1 429 of r1
    assert sorted(dests["output"].read_bytes().splitlines()) == sorted(
        (ok(0) + ok(1) + ok(2) + ok(4) + ok(5, tokens=10)).splitlines())
    results = [json.loads(x) for x in dests["results"].read_text().splitlines()]
    assert [r["custom_id"] for r in results] == [f"r{i}" for i in range(6)]
    assert [(r["status"], r["batch_id"], r["round"]) for r in results] == [
        ("succeeded", "b1", 1), ("succeeded", "b2", 2), ("succeeded", "b1", 1), ("failed", "b1", 1),
        ("succeeded", "b2", 2), ("succeeded", "b1", 1)]
    assert results[3]["error"] == {"message": "no", "status_code": 400}
    assert not list(tmp_path.glob(".inboxd-merge-*"))


def test_the_merge_without_results_counts_missing_requests(tmp_path):
    src = write_input(tmp_path / "in.jsonl", 5)
    out = tmp_path / "o"
    out.write_bytes(ok(0) + ok(1))
    dests = {k: tmp_path / f"m.{k}" for k in ("output", "errors")}
    merged = merge([JobFiles("b1", 1, out, None)], src, 5, dests, work_dir=tmp_path)
    assert (merged.counts.succeeded, merged.counts.failed, merged.counts.missing) == (2, 0, 3)


# --- the check of a split input ------------------------------------------------------------------


def test_a_split_input_is_checked_per_part_with_the_inputs_line_numbers(tmp_path):
    from inboxd.batch.precheck import check_input

    src = write_input(tmp_path / "in.jsonl", 10)
    parts = plan_parts(src, 4, 10**6)
    ok_ = check_input(src, parts, max_line_bytes=2**20, max_errors=20)
    assert not ok_.errors and ok_.records == 10 and ok_.bytes == src.stat().st_size
    rows = src.read_bytes().splitlines(keepends=True)
    rows[8] = request(1) + b"\n"  # line 9 repeats line 2's custom_id: another part
    rows[5] = b'{"body": {}}\n'  # line 6: no custom_id
    src.write_bytes(b"".join(rows))
    bad = check_input(src, plan_parts(src, 4, 10**6), max_line_bytes=2**20, max_errors=20)
    assert [(e.line, e.rule) for e in bad.errors] == [(6, "batch.custom_id.missing")]
    rows[5] = request(5) + b"\n"
    src.write_bytes(b"".join(rows))
    dup = check_input(src, plan_parts(src, 4, 10**6), max_line_bytes=2**20, max_errors=20)
    assert [(e.line, e.rule) for e in dup.errors] == [(9, "batch.custom_id.duplicate")]
    assert "first on line 2" in dup.errors[0].message
