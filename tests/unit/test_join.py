"""The join of a job's answers back to its input (`batch.join.join_results`), on real files
under tmp_path: one results line per input line in input order, whatever order the server
answered in; blank lines counted and skipped; an input line without a custom_id (or not JSON)
is missing; the first answer of a duplicated id wins and an output answer wins over an error;
an output line with an error or a 4xx status is a failure; cancelling stops it and leaves no
index file behind."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from inboxd.api import Cancelled
from inboxd.batch.join import ERRORS, OUTPUT, join_results


def jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def ok(cid: str, text: str = "fine") -> dict[str, Any]:
    return {"custom_id": cid, "response": {"status_code": 200, "body": {"text": text}}, "error": None}


def results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_results_follow_the_input_order_and_say_what_became_of_each_line(tmp_path: Path) -> None:
    src = jsonl(tmp_path / "in.jsonl", [
        {"custom_id": "a"}, "", {"custom_id": "b"}, {"custom_id": "c"}, "{not json", {"no_id": 1},
        {"custom_id": "d"}, {"custom_id": "e"}, {"custom_id": 7},
    ])
    out = jsonl(tmp_path / "out.jsonl", [
        ok("d"), ok("a", "first"), ok("a", "second"),  # a duplicated id: the first answer wins
        {"custom_id": "c", "response": {"status_code": 429, "body": {}}, "error": None},  # a 4xx is a failure
        {"custom_id": "e", "response": {"status_code": 200}, "error": {"message": "boom"}},
        ok("7"), "garbage line", {"response": {}},
    ])
    err = jsonl(tmp_path / "err.jsonl", [
        {"custom_id": "b", "error": {"code": 400, "message": "bad"}},
        {"custom_id": "d", "error": {"code": 500, "message": "the output answer wins"}},
    ])
    dest = tmp_path / "results.jsonl"
    counts = join_results(src, {OUTPUT: out, ERRORS: err}, dest, work_dir=tmp_path)
    rows = results(dest)
    assert [(r["custom_id"], r["line"], r["status"]) for r in rows] == [
        ("a", 1, "succeeded"), ("b", 3, "failed"), ("c", 4, "failed"), (None, 5, "missing"),
        (None, 6, "missing"), ("d", 7, "succeeded"), ("e", 8, "failed"), (7, 9, "succeeded")]
    assert counts.to_json() == {"succeeded": 3, "failed": 3, "missing": 2}
    by_id = {r["custom_id"]: r for r in rows}
    assert by_id["a"]["response"]["body"] == {"text": "first"} and by_id["a"]["error"] is None
    assert by_id["b"]["error"] == {"code": 400, "message": "bad"} and by_id["b"]["response"] is None
    assert by_id["c"]["error"] == {"status_code": 429}
    assert by_id["e"]["error"] == {"message": "boom"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err.jsonl", "in.jsonl", "out.jsonl", "results.jsonl"]


def test_without_answer_files_every_request_is_missing(tmp_path: Path) -> None:
    src = jsonl(tmp_path / "in.jsonl", [{"custom_id": "a"}, {"custom_id": "b"}])
    dest = tmp_path / "results.jsonl"
    counts = join_results(src, {OUTPUT: None, ERRORS: None}, dest, work_dir=tmp_path)
    assert counts.to_json() == {"succeeded": 0, "failed": 0, "missing": 2}
    assert [r["status"] for r in results(dest)] == ["missing", "missing"]


def test_an_error_line_without_an_error_field_is_kept_as_the_error(tmp_path: Path) -> None:
    src = jsonl(tmp_path / "in.jsonl", [{"custom_id": "a"}])
    err = jsonl(tmp_path / "err.jsonl", [{"custom_id": "a", "status": "expired"}])
    dest = tmp_path / "results.jsonl"
    join_results(src, {ERRORS: err}, dest, work_dir=tmp_path)
    [row] = results(dest)
    assert row["status"] == "failed" and row["error"] == {"status": "expired"}


def test_a_cancelled_join_stops_and_leaves_no_index(tmp_path: Path) -> None:
    src = jsonl(tmp_path / "in.jsonl", [{"custom_id": "a"}])
    out = jsonl(tmp_path / "out.jsonl", [ok("a")])
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        join_results(src, {OUTPUT: out}, tmp_path / "results.jsonl", work_dir=tmp_path, cancel=cancel)
    assert not list(tmp_path.glob(".inboxd-join-*"))
