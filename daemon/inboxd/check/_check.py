"""`check_file`: one streaming pass per file, the rules of its purpose and mode.

The pass hashes every byte (the sha256 the upload sends as `checksum`), counts lines and
records, decodes each line as UTF-8 and parses it as JSON, and hands each record to the
rules of the purpose. Memory is bounded by the longest line allowed (`max_line_bytes`), and
by the set of batch `custom_id`s (at most 50,000).

Modes: `off` hashes and counts only; `basic` and `strict` apply the rules (see
docs/validation.md for what each purpose checks in each mode).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import msgspec

from ._batch import BatchRules
from ._finetune import FineTuneRules
from ._report import CheckIssue, CheckReport
from ._stream import BACKGROUND_HASH, CHUNK, Line, StreamState, line_batches

DEFAULT_MAX_LINE = 64 * 2**20
_decode = msgspec.json.Decoder().decode


class Rules(Protocol):
    def record(self, number: int, obj: dict[str, Any]) -> CheckIssue | None: ...


class _ObjectsOnly:
    """eval, calibration: one JSON object per non-blank line is all the documented rules say."""

    def record(self, number: int, obj: dict[str, Any]) -> CheckIssue | None:
        return None


def rules_for(purpose: str, mode: str) -> tuple[Rules, bool]:
    """The record rules and whether blank lines are errors (they are to the 1.x checker)."""
    strict = mode == "strict"
    if purpose == "batch-api":
        return BatchRules(strict), False
    if purpose == "fine-tune":
        return FineTuneRules(strict), strict
    return _ObjectsOnly(), strict


def check_file(source: Path | str | BinaryIO, purpose: str, mode: str, *, name: str | None = None,
               max_line_bytes: int = DEFAULT_MAX_LINE, max_errors: int = 20) -> CheckReport:
    if mode not in ("off", "basic", "strict"):
        raise ValueError(f"mode must be off, basic or strict, not {mode!r}")
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            return check_file(f, purpose, mode, name=name or Path(source).name, max_line_bytes=max_line_bytes,
                              max_errors=max_errors)
    report = CheckReport(name=name or str(getattr(source, "name", "-")), purpose=purpose, mode=mode)
    state = StreamState(background=mode != "off" and _size(source) >= BACKGROUND_HASH)
    try:
        if mode == "off":
            _hash_rest(source, state, 0)
        else:
            _run(source, state, report, purpose, mode, max_line_bytes, max_errors)
    finally:
        state.close()
    report.bytes, report.sha256, report.lines = state.bytes, state.sha256, state.lines
    return report


def _size(f: BinaryIO) -> int:
    """The size of an open regular file (0 when it cannot be told: a pipe, a BytesIO)."""
    try:
        return os.fstat(f.fileno()).st_size
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return 0


def _run(f: BinaryIO, state: StreamState, report: CheckReport, purpose: str, mode: str, max_line_bytes: int,
         max_errors: int) -> None:
    rules, blank_is_error = rules_for(purpose, mode)
    checks = _Lines(rules, blank_is_error, state, max_errors)
    stream = line_batches(f, state, max_line_bytes)
    try:
        for first, batch in stream:
            if checks.batch(first, batch):
                report.truncated = True
                for _ in stream:  # hash and count the rest, parse no more
                    pass
                break
    finally:
        stream.close()  # (also on an exception: the long-line permit is given back at once)
    _finish(state, report, purpose, mode, max_line_bytes, max_errors, rules, checks.records, checks.errors,
            checks.utf8_errors)


class _Lines:
    """The per-line part of a pass: each line decoded and handed to the rules; the counts and
    issues so far. A batch is checked in a call of its own, so nothing of its lines (a long
    line, its decoded object) outlives the call: the stream's long-line permit is then free."""

    def __init__(self, rules: Rules, blank_is_error: bool, state: StreamState, max_errors: int) -> None:
        self.record = rules.record
        self.blank_is_error = blank_is_error
        self.too_long = state.too_long  # grows between batches
        self.max_errors = max_errors
        self.errors: list[CheckIssue] = []
        self.utf8_errors: list[CheckIssue] = []
        self.records = 0
        # batch rules read a few fields: those decoded, the rest of the line only parsed
        self.decode_request = self.record_request = self.body_passes = None
        if isinstance(rules, BatchRules):
            self.decode_request, self.record_request = rules.decode_request, rules.record_request
            self.body_passes = rules.body_passes

    def full(self) -> bool:
        return len(self.errors) + len(self.utf8_errors) + len(self.too_long) >= self.max_errors

    def batch(self, number: int, batch: list[Line]) -> bool:
        """Check consecutive lines, the first numbered `number`; True: stop (max_errors reached)."""
        # at the error count the pass stops after one more line (too_long grew since the last batch)
        last = self.full()
        decode_request, record_request, body_passes = self.decode_request, self.record_request, self.body_passes
        record, errors, loads = self.record, self.errors, _decode  # msgspec for speed; where it refuses
        # (NaN, lone surrogates, numbers past a float, deep nesting), the standard library decides
        records = 0  # (a local in the hot loop, added to self.records on the way out)
        try:
            for line in batch:
                # the hot loop: msgspec first; what it refuses (a blank line, invalid UTF-8 or JSON, what
                # only the standard library accepts) and what is not an object go the slow way
                if decode_request is not None and line.isascii():
                    # the typed decode skips strings without checking their UTF-8: ASCII lines only
                    try:
                        request = decode_request(line)
                    except (ValueError, RecursionError):
                        request = None  # the whole decode below decides, and words the error
                    if request is not None and request.custom_id is not None and request.body is not None \
                            and (body_passes is None or body_passes(request.body)):
                        records += 1
                        issue = record_request(number, request)  # type: ignore[misc]
                        if issue is not None:
                            errors.append(issue)
                            last = last or self.full()
                        if last:
                            return True
                        number += 1
                        continue
                try:
                    obj = loads(line)
                except (ValueError, RecursionError):
                    obj = _slow(number, line, errors, self.utf8_errors, self.blank_is_error)
                if obj.__class__ is dict:
                    records += 1
                    issue = record(number, obj)
                    if issue is not None:
                        errors.append(issue)
                        last = last or self.full()
                elif obj is _UTF8:
                    number += 1
                    continue  # (as the pass always did: no count of the errors after a UTF-8 error)
                else:
                    self._other(number, obj)
                    last = last or self.full()
                if last:
                    return True
                number += 1
            return False
        finally:
            self.records += records

    def _other(self, number: int, obj: Any) -> None:
        """A value that is not a plain dict: a dict subclass (never from msgspec nor json) is a
        record, anything else is not an object; _NOTHING (an error recorded, or blank) is neither."""
        if obj is _NOTHING:
            return
        if isinstance(obj, dict):
            self.records += 1
            issue = self.record(number, obj)
            if issue is not None:
                self.errors.append(issue)
        else:
            self.errors.append(CheckIssue(number, "json.not_object",
                                          f"each line must be a JSON object, found {_kind(obj)}"))


_NOTHING = object()  # `_slow`'s answer for a line that holds no value (blank, or an error recorded)
_UTF8 = object()  # `_slow`'s answer for a line that is not UTF-8 (recorded)


def _slow(number: int, line: Line, errors: list[CheckIssue], utf8_errors: list[CheckIssue],
          blank_is_error: bool) -> Any:
    """A line msgspec refused: blank (an error where blank lines are), not UTF-8, not JSON, too
    deep; or JSON that only the standard library reads (NaN, big integers, lone surrogates, deep
    nesting), whose verdicts are the stdlib's. Returns the value, _UTF8, or _NOTHING."""
    if not line or line.isspace():
        if blank_is_error:
            errors.append(CheckIssue(number, "json.blank_line", "a blank line (the 1.x checker refuses them)"))
        return _NOTHING
    try:  # (stripped only when there is something to strip: no copy of a long line for nothing)
        return json.loads((line.strip() if line[:1].isspace() or line[-1:].isspace() else line).decode("utf-8"))
    except UnicodeDecodeError as exc:
        utf8_errors.append(CheckIssue(number, "utf8.invalid", f"not UTF-8 at byte {exc.start} of the line"))
        return _UTF8
    except RecursionError:
        errors.append(CheckIssue(number, "json.too_deep", "JSON nested too deeply"))
    except ValueError as exc:
        errors.append(_json_issue(number, line, line, exc, blank_is_error))
    return _NOTHING


def _finish(state: StreamState, report: CheckReport, purpose: str, mode: str, max_line_bytes: int, max_errors: int,
            rules: Rules, records: int, errors: list[CheckIssue], utf8_errors: list[CheckIssue]) -> None:
    issues = utf8_errors + errors if purpose == "fine-tune" and mode == "strict" else errors + utf8_errors
    issues += [CheckIssue(n, "line.too_long", f"a line longer than {max_line_bytes} bytes") for n in state.too_long]
    if purpose == "fine-tune" and mode == "strict" and utf8_errors:
        issues.sort(key=lambda i: (i.rule != "utf8.invalid", i.line or 0))  # the 1.x checker tests UTF-8 first
    else:
        issues.sort(key=lambda i: i.line or 0)
    if state.bytes == 0:
        issues.insert(0, CheckIssue(None, "file.empty", "the file is empty"))
    elif records == 0 and not issues:
        issues.append(CheckIssue(None, "file.no_records", "the file has no records (only blank lines)"))
    if isinstance(rules, BatchRules):
        issues += rules.finish(state.bytes)
    if isinstance(rules, FineTuneRules):
        report.format = rules.format
    report.records = records
    report.errors = issues[:max_errors]
    report.truncated = report.truncated or len(issues) > max_errors


def _json_issue(number: int, line: Line, stripped: Line, exc: ValueError, blank_is_error: bool) -> CheckIssue:
    if number == 1 and stripped.startswith(b"\xef\xbb\xbf"):
        return CheckIssue(number, "encoding.bom", "the file starts with a UTF-8 byte order mark; JSON Lines has none")
    return CheckIssue(number, "json.invalid", f"not valid JSON: {getattr(exc, 'msg', str(exc))}"
                      + (f" at column {exc.colno}" if hasattr(exc, "colno") else ""))


def _kind(obj: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(obj), "null" if obj is None else type(obj).__name__)


def _hash_rest(f: BinaryIO, state: StreamState, lines_so_far: int) -> None:
    """Hash (and count the lines of) what is left, without parsing it."""
    count = 0
    while chunk := f.read(CHUNK):
        state.sha.update(chunk)
        state.bytes += len(chunk)
        count += chunk.count(b"\n")
    state.lines = max(state.lines, lines_so_far + count)
