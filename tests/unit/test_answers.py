"""What one answer line says (`batch.answers`): succeeded, or failed with which HTTP status,
read from the official formats' different places; the one-decode reader (`read_answer`) gives
the same verdict as the general rule (`verdict` over the parsed line) for every shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inboxd.batch.answers import (
    ERRORS,
    OUTPUT,
    Verdict,
    custom_id_of,
    error_of,
    parse,
    read_answer,
    response_of,
    verdict,
)

SHAPES: list[tuple[str, Any, int, Verdict]] = [
    # (what, line, kind, the verdict)
    ("a 200 answer", {"custom_id": "a", "response": {"status_code": 200, "body": {}}}, OUTPUT, Verdict(False, 200)),
    ("a 429 in the output", {"custom_id": "a", "response": {"status_code": 429}}, OUTPUT, Verdict(True, 429)),
    ("an error beside a 200", {"custom_id": "a", "response": {"status_code": 200}, "error": {"message": "x"}},
     OUTPUT, Verdict(True, 200)),
    ("no status at all", {"custom_id": "a", "response": {"body": {}}}, OUTPUT, Verdict(False, None)),
    ("error.status_code", {"custom_id": 5, "error": {"status_code": 503}}, ERRORS, Verdict(True, 503)),
    ("a top-level status_code", {"custom_id": "a", "status_code": "500"}, ERRORS, Verdict(True, 500)),
    ("error.code as a number", {"custom_id": "a", "error": {"code": 400, "message": "bad"}}, ERRORS,
     Verdict(True, 400)),
    ("error.code as a word", {"custom_id": "a", "error": {"code": "invalid_request"}}, ERRORS, Verdict(True, None)),
    ("a boolean is no status", {"custom_id": "a", "status_code": True}, ERRORS, Verdict(True, None)),
    ("the response's status first", {"custom_id": "a", "response": {"status_code": 502},
                                     "error": {"status_code": 400}, "status_code": 401}, ERRORS, Verdict(True, 502)),
    ("an error line without an error", {"custom_id": "a"}, ERRORS, Verdict(True, None)),
    ("a response that is not an object", {"custom_id": "a", "response": "ok"}, OUTPUT, Verdict(False, None)),
    ("an error that is a string", {"custom_id": "a", "error": "boom"}, OUTPUT, Verdict(True, None)),
]


@pytest.mark.parametrize(("what", "line", "kind", "expected"), SHAPES, ids=[s[0] for s in SHAPES])
def test_the_verdict_of_each_shape_and_both_readers_agree(what: str, line: Any, kind: int,
                                                         expected: Verdict) -> None:
    raw = json.dumps(line).encode()
    assert verdict(parse(raw), kind) == expected
    cid, fast = read_answer(raw, kind)
    assert fast == expected
    assert cid == (None if line.get("custom_id") is None else str(line["custom_id"]))


def test_lines_that_are_not_objects_fail_without_a_status() -> None:
    for raw in (b"{not json", b"[1, 2]", b'"text"'):
        assert parse(raw) is None
        assert read_answer(raw, OUTPUT) == (None, Verdict(True, None))
    assert verdict(None, OUTPUT) == Verdict(True, None)


def test_the_custom_id_as_a_string() -> None:
    assert custom_id_of(b'{"custom_id": "r1", "body": {}}') == "r1"
    assert custom_id_of(b'{"custom_id": 7}') == "7"
    assert custom_id_of(b'{"body": {}}') is None
    assert custom_id_of(b"{nope") is None and custom_id_of(b"[1]") is None


def test_what_a_results_line_keeps_of_an_answer() -> None:
    assert response_of({"custom_id": "a", "response": {"status_code": 200}}) == {"status_code": 200}
    assert response_of({"custom_id": "a", "text": "x"}) == {"text": "x"}
    assert error_of(None, OUTPUT) == {"message": "the answer line is not a JSON object"}
    assert error_of({"custom_id": "a", "error": {"code": 1}}, OUTPUT) == {"code": 1}
    assert error_of({"custom_id": "a", "status": "expired"}, ERRORS) == {"status": "expired"}
    assert error_of({"custom_id": "a", "response": {"status_code": 429, "body": {}}}, OUTPUT) == {"status_code": 429}
    assert error_of({"custom_id": "a"}, OUTPUT) is None
