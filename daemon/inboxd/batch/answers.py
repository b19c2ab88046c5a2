"""What one answer line says: succeeded, or failed with which HTTP status.

An error-file line is a failure; an output line is one when it carries an error or a
`response.status_code` of 400 or more. The status is the first of `response.status_code`,
`error.status_code`, `status_code`, and `error.code` when it is a number (the official
formats differ); None when none says (then the failure counts as final: it is not known to
be transient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

OUTPUT, ERRORS = 0, 1


class _Line(msgspec.Struct):
    custom_id: Any = None


_CUSTOM_ID = msgspec.json.Decoder(_Line)


def custom_id_of(raw: bytes) -> str | None:
    """The request's (or answer's) custom_id as a string; None when the line has none."""
    try:
        cid = _CUSTOM_ID.decode(raw).custom_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return None if cid is None else str(cid)


@dataclass(frozen=True)
class Verdict:
    failed: bool
    code: int | None  # the HTTP status of a failure, when the line says


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _code(obj: dict[str, Any]) -> int | None:
    resp, err = obj.get("response"), obj.get("error")
    for candidate in ((resp or {}).get("status_code") if isinstance(resp, dict) else None,
                      err.get("status_code") if isinstance(err, dict) else None,
                      obj.get("status_code"),
                      err.get("code") if isinstance(err, dict) else None):
        code = _int(candidate)
        if code is not None:
            return code
    return None


def verdict(obj: dict[str, Any] | None, kind: int) -> Verdict:
    if obj is None:
        return Verdict(True, None)
    code = _code(obj)
    if kind == ERRORS or obj.get("error"):
        return Verdict(True, code)
    return Verdict(code is not None and code >= 400, code)


class _Status(msgspec.Struct):
    status_code: Any = None


class _Answer(msgspec.Struct):
    """What a verdict reads of an answer line (the response's body is parsed, not built)."""

    custom_id: Any = None
    response: _Status | None = None
    error: Any = None
    status_code: Any = None


_ANSWER = msgspec.json.Decoder(_Answer)


def read_answer(raw: bytes, kind: int) -> tuple[str | None, Verdict]:
    """(custom_id, verdict) of an answer line, in one typed decode; an unusual shape is parsed whole."""
    try:
        a = _ANSWER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        obj = parse(raw)
        cid = obj.get("custom_id") if obj is not None else None
        return (None if cid is None else str(cid)), verdict(obj, kind)
    cid = None if a.custom_id is None else str(a.custom_id)
    code = None
    for candidate in (a.response.status_code if a.response is not None else None,
                      a.error.get("status_code") if isinstance(a.error, dict) else None, a.status_code,
                      a.error.get("code") if isinstance(a.error, dict) else None):
        code = _int(candidate)
        if code is not None:
            break
    if kind == ERRORS or a.error:
        return cid, Verdict(True, code)
    return cid, Verdict(code is not None and code >= 400, code)


def parse(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def response_of(obj: dict[str, Any]) -> Any:
    """An output line's response (the line without its custom_id when it has no `response`)."""
    if "response" in obj:
        return obj["response"]
    return {k: v for k, v in obj.items() if k != "custom_id"}


def error_of(obj: dict[str, Any] | None, kind: int) -> Any:
    """A failed answer's error: the line's `error`, else what it says about its status."""
    if obj is None:
        return {"message": "the answer line is not a JSON object"}
    if obj.get("error"):
        return obj["error"]
    if kind == ERRORS:
        return {k: v for k, v in obj.items() if k != "custom_id"}
    resp = obj.get("response")
    return {"status_code": resp.get("status_code")} if isinstance(resp, dict) else None
