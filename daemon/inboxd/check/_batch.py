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


_ANY = msgspec.Raw  # a value of any type, parsed and not built


def _typed(key: str, types: tuple[type, ...]) -> Any:
    """The msgspec type that accepts what FIELD_TYPES accepts for `key` (never more)."""
    if key == "stop":
        return str | list[str]
    found = {(str,): str, (int,): int, (bool,): bool, (int, bool): int | bool, _NUMBER: float,
             (dict,): dict[str, _ANY], (list,): list[_ANY], (str, dict): str | dict[str, _ANY]}.get(types)
    if found is None:
        raise AssertionError(f"no typed decode for FIELD_TYPES[{key!r}]: add it here")
    return found


class _Message(msgspec.Struct):
    role: str
    content: _ANY = _ANY(b"null")  # looked at below (msgspec takes no `Raw | None`)


# What strict mode reads of a body: each known field of FIELD_TYPES with its types (or null),
# `messages` and `prompt`; any other member is parsed and not built. A value of another type
# fails the decode, and the line goes the whole way (whose rules word the error).
_Body = msgspec.defstruct("_Body", [
    ("model", str),
    ("messages", list[_Message] | msgspec.UnsetType, msgspec.UNSET),
    ("prompt", str | list[_ANY] | msgspec.UnsetType, msgspec.UNSET),
    *((key, _typed(key, types) | None, None) for key, (types, _) in FIELD_TYPES.items() if key != "model"),
])


class Request(msgspec.Struct):
    """What basic mode reads of a request: its custom_id, and whether its body is an object."""

    custom_id: str | None = None
    body: _Object | None = None


class StrictRequest(msgspec.Struct):
    """What strict mode reads of a request: its custom_id and what `_Body` reads of its body."""

    custom_id: str | None = None
    body: _Body | None = None  # type: ignore[valid-type]


def _strict_passes(body: Any) -> bool:
    """A body decoded as `_Body` that `_strict_body` passes (False: let it say why)."""
    if not body.model:
        return False
    messages = body.messages
    if messages is not msgspec.UNSET:
        if not messages:
            return False
        for m in messages:
            first = memoryview(m.content)[0]
            if first == 0x6E:  # null, or absent: for an assistant turn only
                if m.role != "assistant":
                    return False
            elif first not in b'"[':  # a string or a list
                return False
        return True
    return body.prompt is not msgspec.UNSET


class BatchRules:
    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.seen: dict[str, int] = {}  # custom_id -> the line it first appeared on
        self.records = 0
        # a typed decode of what the rules read (the rest of the line parsed, its syntax checked,
        # nothing built): basic reads two fields, and takes less than half the time of a whole
        # decode; strict reads the body's known fields, and skips the strings of the messages
        self.decode_request: Callable[[bytes | bytearray], Request | StrictRequest] = \
            _STRICT_REQUEST.decode if strict else _REQUEST.decode
        self.body_passes: Callable[[Any], bool] | None = _strict_passes if strict else None

    def record_request(self, number: int, request: Request | StrictRequest) -> CheckIssue | None:
        """A record from `decode_request` whose custom_id is a string and body an object (that
        `body_passes`, in strict mode)."""
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
_STRICT_REQUEST = msgspec.json.Decoder(StrictRequest)


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

