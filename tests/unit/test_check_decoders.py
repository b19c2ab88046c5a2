"""The check's fast decoders give the standard library's verdicts (issue 14).

`check_file` parses each line with msgspec, and for batch files in basic mode decodes only a
request's `custom_id` and whether its `body` is an object (the rest of the line parsed, not
built). What msgspec refuses goes to the standard library, which decides. So on any input the
report must equal the report of the same pass with every line parsed by `json.loads` alone
(the reference below: both fast decoders refuse everything). Files are generated with the
mutations where the decoders differ from the stdlib: invalid UTF-8 inside strings the typed
decode skips, NaN, lone surrogates, integers past 64 bits, numbers past a float, deep
nesting, duplicate keys, values of the wrong type, blank lines and a byte order mark.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from inboxd.check import _batch, _check, check_file

TOKENS = [b"NaN", b"-Infinity", b'"\\ud800"', b'"\\udc00x"', b"123456789012345678901234567890",
          b"-98765432109876543210987654321", b"1e400", b"-1e999", b"\xff", b"\xed\xa0\x80", b"\xc0\xaf",
          b"\xf4\x90\x80\x80", b"\xe2\x82\xac", b"\xc3\xa9", b"null", b"true", b"5", b'""', b"[]", b"{}", b",", b":",
          b'"', b"\\", b"\x00", b"\x7f", b"\t", b" ", b"\x0c", b"[" * 1200 + b"]" * 1200, b"{" * 3, b"01", b"1.",
          b'"\\u00e9"', b'"\\q"']
BYTES = b'"\\{}[],:0x\xff\xc3 \t.-eE'


def _request(rng: random.Random, i: int) -> dict:
    body: dict = {"model": "m", "max_tokens": 16}
    if rng.random() < 0.7:
        body["messages"] = [{"role": "user", "content": rng.choice(["hi", "h\u00e9", "\u20ac x", "q\"uote"])}]
    else:
        body["prompt"] = "say hi"
    return {"custom_id": f"id-{i}", "body": body}


def _mutated(rng: random.Random, line: bytes, i: int) -> bytes:
    roll = rng.random()
    if roll < 0.45:
        return line
    if roll < 0.6:  # a token spliced in anywhere
        at = rng.randrange(len(line) + 1)
        return line[:at] + rng.choice(TOKENS) + line[at:]
    if roll < 0.7:  # a token in place of a value
        at = line.rfind(b":", 0, rng.randrange(1, len(line) + 1))
        end = min((p for p in (line.find(b",", at + 1), line.find(b"}", at + 1)) if p > 0), default=len(line))
        return line[:at + 1] + rng.choice(TOKENS) + line[end:] if at > 0 else line
    if roll < 0.8:  # one byte changed
        at = rng.randrange(len(line))
        return line[:at] + bytes([rng.choice(BYTES)]) + line[at + 1:]
    def req(body: bytes) -> bytes:
        return b'{"custom_id": "id-%d", "body": %s}' % (i, body)

    shapes = [
        b'{"custom_id": "id-%d", "body": null}' % i,
        b'{"custom_id": "id-%d", "body": 5}' % i,
        b'{"custom_id": "id-%d", "body": []}' % i,
        b'{"custom_id": 5, "body": {}}',
        b'{"custom_id": null, "body": {}}',
        b'{"custom_id": "", "body": {}}',
        b'{"custom_id": "%s", "body": {}}' % (b"x" * 65),
        b'{"custom_id": "id-1", "body": {}}',  # a duplicate, most of the time
        b'{"body": {}}',
        b'{"custom_id": "id-%d", "body": {}, "custom_id": null}' % i,
        b'{"custom_id": "a", "custom_id": "id-%d", "body": {}}' % i,
        b'{"custom_id": "id-%d", "body": {}, "body": 7}' % i,
        b'{"custom_id": "id-%d", "body": {"model": "m", "max_tokens": 123456789012345678901234567890,'
        b' "prompt": "p"}}' % i,
        req(b'{"model": "m", "max_tokens": NaN, "prompt": "p"}'),
        b'{"custom_id": "id-%d", "body": {"x": "\xff"}}' % i,
        b'{"custom_id": "\xc3\xa9-%d", "body": {}}' % i,
        b'{"custom_id": "id-%d", "body": {"x": "%s"}}' % (i, b"\xe2\x82\xac" * 3),
        # what strict mode reads of a body, right and wrong
        req(b'{"model": "", "prompt": "p"}'),
        req(b'{"model": 5, "prompt": "p"}'),
        req(b'{"prompt": "p"}'),
        req(b'{"model": "m"}'),
        req(b'{"model": "m", "messages": []}'),
        req(b'{"model": "m", "messages": null}'),
        req(b'{"model": "m", "messages": [5]}'),
        req(b'{"model": "m", "messages": [{"content": "x"}]}'),
        req(b'{"model": "m", "messages": [{"role": "user"}]}'),
        req(b'{"model": "m", "messages": [{"role": "assistant"}]}'),
        req(b'{"model": "m", "messages": [{"role": "assistant", "content": null}]}'),
        req(b'{"model": "m", "messages": [{"role": "user", "content": 5}]}'),
        req(b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}'),
        req(b'{"model": "m", "messages": [{"role": "user", "content": {"a": 1}}]}'),
        req(b'{"model": "m", "prompt": 5}'),
        req(b'{"model": "m", "prompt": ["a", 1]}'),
        req(b'{"model": "m", "prompt": "p", "messages": [{"role": "user", "content": "c"}]}'),
        req(b'{"model": "m", "prompt": 5, "messages": [{"role": "user", "content": "c"}]}'),
        req(b'{"model": "m", "prompt": "p", "max_tokens": 1.0}'),
        req(b'{"model": "m", "prompt": "p", "max_tokens": true}'),
        req(b'{"model": "m", "prompt": "p", "temperature": 1}'),
        req(b'{"model": "m", "prompt": "p", "temperature": false}'),
        req(b'{"model": "m", "prompt": "p", "temperature": null}'),
        req(b'{"model": "m", "prompt": "p", "stop": ["a", 1]}'),
        req(b'{"model": "m", "prompt": "p", "stop": ["a"], "stream": 1}'),
        req(b'{"model": "m", "prompt": "p", "logprobs": true, "seed": 1e3}'),
        req(b'{"model": "m", "prompt": "p", "tools": {}, "tool_choice": 5}'),
        req(b'{"model": "m", "prompt": "p", "response_format": [], "unknown": [1, {}]}'),
        req(b'{"model": "m", "prompt": "p", "tool_choice": {"a": [1]}, "n": 2}'),
        b'[{"custom_id": "x"}]', b'"a string"', b"", b"   ", b"\xef\xbb\xbf" + line,
    ]
    return rng.choice(shapes)


def _fine_tune(rng: random.Random) -> bytes:
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": rng.choice(["a", "\u00e9", "x y"])}]
    shape = rng.random()
    obj = {"messages": turns} if shape < 0.6 else {"text": "t"} if shape < 0.8 else {"prompt": "p", "completion": "c"}
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode("utf-8")


def _corpus(seed: int, purpose: str, lines: int = 300) -> bytes:
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        if purpose == "batch-api":
            line = json.dumps(_request(rng, i), ensure_ascii=rng.random() < 0.5).encode("utf-8")
        else:
            line = _fine_tune(rng)
        out.append(_mutated(rng, line, i) if rng.random() < 0.3 else line)
    return b"\n".join(out) + b"\n"


class _Refuse:
    """A decoder that refuses every line: the pass then parses each with `json.loads` alone."""

    def decode(self, line: bytes) -> object:
        raise ValueError("the reference: the standard library decides")


def _report(path: Path, purpose: str, mode: str) -> dict:
    r = check_file(path, purpose, mode, max_errors=10**6)
    return {"errors": [str(e) for e in r.errors], "records": r.records, "lines": r.lines, "bytes": r.bytes,
            "sha256": r.sha256, "format": r.format, "truncated": r.truncated}


def _reference(path: Path, purpose: str, mode: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    with monkeypatch.context() as m:
        m.setattr(_check, "_decode", _Refuse().decode)
        m.setattr(_batch, "_REQUEST", _Refuse())
        m.setattr(_batch, "_STRICT_REQUEST", _Refuse())
        return _report(path, purpose, mode)


@pytest.mark.parametrize("purpose,mode", [("batch-api", "basic"), ("batch-api", "strict"), ("fine-tune", "basic"),
                                          ("fine-tune", "strict"), ("eval", "basic")])
def test_the_fast_decoders_give_the_stdlib_verdicts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    purpose: str, mode: str) -> None:
    path = tmp_path / "f.jsonl"
    seen_errors = 0
    for seed in range(40):
        path.write_bytes(_corpus(seed, "fine-tune" if purpose == "eval" else purpose))
        fast = _report(path, purpose, mode)
        assert fast == _reference(path, purpose, mode, monkeypatch), f"seed {seed}"
        seen_errors += len(fast["errors"])
    assert seen_errors > 200  # the corpus does reach the error paths


@pytest.mark.parametrize("mode,decoder", [("basic", "_REQUEST"), ("strict", "_STRICT_REQUEST")])
def test_the_typed_decode_is_what_batch_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
                                             decoder: str) -> None:
    """The equality above would hold trivially if the typed decode were never used."""
    path = tmp_path / "f.jsonl"
    path.write_bytes(_corpus(1, "batch-api"))
    taken = []
    decode = getattr(_batch, decoder).decode

    class _Counting:
        def decode(self, line: bytes) -> object:
            taken.append(line)
            return decode(line)

    monkeypatch.setattr(_batch, decoder, _Counting())
    check_file(path, "batch-api", mode, max_errors=10**6)
    assert len(taken) > 150  # the ASCII lines (the others are decoded whole)
