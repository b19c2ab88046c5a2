"""Batch input rules (SPEC §1), which neither official client checks.

basic and strict: each record has `custom_id` (a string of 1..64 characters, unique in the
file) and `body` (an object); at most 50,000 records and 100 MB. strict adds: the body has
what its endpoint needs (chat: `model` and a non-empty `messages` list of role/content
objects; completions: `model` and `prompt`), and the known body fields have their types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ._report import CheckIssue

MAX_ID = 64
MAX_RECORDS = 50_000
MAX_BYTES = 100 * 10**6

_NUMBER = (int, float)
# known body fields -> (accepted types, description); bool is excluded from numbers below
FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "a string"),
    "max_tokens": ((int,), "an integer"),
    "temperature": (_NUMBER, "a number"),
    "top_p": (_NUMBER, "a number"),
    "top_k": ((int,), "an integer"),
    "n": ((int,), "an integer"),
    "seed": ((int,), "an integer"),
    "presence_penalty": (_NUMBER, "a number"),
    "frequency_penalty": (_NUMBER, "a number"),
    "repetition_penalty": (_NUMBER, "a number"),
    "min_p": (_NUMBER, "a number"),
    "stream": ((bool,), "a boolean"),
    "echo": ((bool,), "a boolean"),
    "logprobs": ((int, bool), "an integer or a boolean"),
    "stop": ((str, list), "a string or a list of strings"),
    "response_format": ((dict,), "an object"),
    "tools": ((list,), "a list"),
    "tool_choice": ((str, dict), "a string or an object"),
}


# field -> (accepted types, whether a boolean is one of them): the fast look at a body's fields
_KNOWN: dict[str, tuple[tuple[type, ...], bool]] = {k: (t, bool in t) for k, (t, _) in FIELD_TYPES.items()}


class _Object(msgspec.Struct):
    """A JSON object whose members are parsed (their syntax checked) and not kept."""


class Request(msgspec.Struct):
    """What basic mode reads of a request: its custom_id, and whether its body is an object."""

    custom_id: str | None = None
    body: _Object | None = None


class BatchRules:
    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.seen: dict[str, int] = {}  # custom_id -> the line it first appeared on
        self.records = 0
        # basic mode reads two fields of a request: a decode of those alone (the rest of the line
        # parsed, its syntax checked, nothing built) takes less than half the time of a whole one
        self.decode_request: Callable[[bytes], Request] | None = None if strict else _REQUEST.decode

    def record_request(self, number: int, request: Request) -> CheckIssue | None:
        """A record from `decode_request` whose custom_id is a string and body an object."""
        self.records += 1
        if self.records == MAX_RECORDS + 1:
            return _too_many(number)
        return self._custom_id(number, request.custom_id)  # type: ignore[arg-type]

    def record(self, number: int, obj: dict[str, Any]) -> CheckIssue | None:
        self.records += 1
        if self.records == MAX_RECORDS + 1:
            return _too_many(number)
        cid = obj.get("custom_id")
        if cid is None:
            return CheckIssue(number, "batch.custom_id.missing", "every request needs a `custom_id`")
        if not isinstance(cid, str):
            return CheckIssue(number, "batch.custom_id.type",
                              f"`custom_id` must be a string, found {type(cid).__name__}")
        issue = self._custom_id(number, cid)
        if issue is not None:
            return issue
        body = obj.get("body")
        if body is None:
            return CheckIssue(number, "batch.body.missing", "every request needs a `body`")
        if not isinstance(body, dict):
            return CheckIssue(number, "batch.body.type", f"`body` must be an object, found {type(body).__name__}")
        if self.strict:
            return _strict_body(number, body)
        return None

    def _custom_id(self, number: int, cid: str) -> CheckIssue | None:
        """A string custom_id: its length, and whether an earlier line has it."""
        if not 1 <= len(cid) <= MAX_ID:
            return CheckIssue(number, "batch.custom_id.length",
                              f"`custom_id` must have 1..{MAX_ID} characters, found {len(cid)}")
        first = self.seen.get(cid)
        if first is not None:
            return CheckIssue(number, "batch.custom_id.duplicate",
                              f"`custom_id` {cid!r} appears twice: first on line {first}")
        self.seen[cid] = number
        return None

    def finish(self, size: int) -> list[CheckIssue]:
        if size > MAX_BYTES:
            return [CheckIssue(None, "batch.too_large",
                               f"a batch file holds at most {MAX_BYTES} bytes; this has {size}")]
        return []


_REQUEST = msgspec.json.Decoder(Request)


def _too_many(number: int) -> CheckIssue:
    return CheckIssue(number, "batch.too_many_lines", f"a batch file holds at most {MAX_RECORDS} requests")


def _strict_body(number: int, body: dict[str, Any]) -> CheckIssue | None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return CheckIssue(number, "batch.body.model", "`body.model` must be a non-empty string")
    if "messages" in body:
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            return CheckIssue(number, "batch.body.messages", "`body.messages` must be a non-empty list")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                return CheckIssue(number, "batch.body.messages", f"`body.messages[{i}]` needs a string `role`")
            content = m.get("content")
            if not isinstance(content, (str, list)) and not (content is None and m["role"] == "assistant"):
                return CheckIssue(number, "batch.body.messages",
                                  f"`body.messages[{i}].content` must be a string or a list")
    elif "prompt" in body:
        if not isinstance(body["prompt"], (str, list)):
            return CheckIssue(number, "batch.body.prompt", "`body.prompt` must be a string or a list")
    else:
        return CheckIssue(number, "batch.body.endpoint",
                          "`body` needs `messages` (chat completions) or `prompt` (completions)")
    # most bodies hold a few fields: look at those (one lookup each) and walk the table in its
    # order, for the first field that is wrong, only when one of them is
    for key, value in body.items():
        spec = _KNOWN.get(key)
        if spec is None or value is None:
            continue
        types, bool_ok = spec
        if (value.__class__ is bool and not bool_ok) or not isinstance(value, types):
            break
        if key == "stop" and isinstance(value, list) and not all(isinstance(s, str) for s in value):
            break
    else:
        return None
    for key, (types, what) in FIELD_TYPES.items():
        if key in body and body[key] is not None:
            value = body[key]
            if isinstance(value, bool) and bool not in types:
                return CheckIssue(number, "batch.body.field_type", f"`body.{key}` must be {what}")
            if not isinstance(value, types):
                return CheckIssue(number, "batch.body.field_type", f"`body.{key}` must be {what}")
            if key == "stop" and isinstance(value, list) and not all(isinstance(s, str) for s in value):
                return CheckIssue(number, "batch.body.field_type", "`body.stop` must be a string or a list of strings")
    return None

