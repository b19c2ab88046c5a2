"""`check_file`: one streaming pass per file, the rules of its purpose and mode.

The pass hashes every byte (the sha256 the upload sends as `checksum`), counts lines and
records, decodes each line as UTF-8 and parses it as JSON, and hands each record to the
rules of the purpose. Memory is bounded by the longest line allowed (`max_line_bytes`), and
by the set of batch `custom_id`s (at most 50,000).

Modes: `off` hashes and counts only; `basic` and `strict` apply the rules (see the README's
Validation section for what each purpose checks in each mode).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from orjson import loads as _orjson_loads

from ._batch import BatchRules
from ._finetune import FineTuneRules
from ._report import CheckIssue, CheckReport
from ._stream import CHUNK, StreamState, lines

DEFAULT_MAX_LINE = 64 * 2**20


def _loads(line: bytes) -> Any:
    """orjson for speed; where it refuses (NaN, integers past 64 bits, lone surrogates,
    nesting past 1024), the standard library decides, so the verdicts are the stdlib's."""
    try:
        return _orjson_loads(line)
    except ValueError:
        return json.loads(line.strip().decode("utf-8"))


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
    state = StreamState()
    if mode == "off":
        _hash_rest(source, state, 0)
    else:
        _run(source, state, report, purpose, mode, max_line_bytes, max_errors)
    report.bytes, report.sha256, report.lines = state.bytes, state.sha256, state.lines
    return report


def _run(f: BinaryIO, state: StreamState, report: CheckReport, purpose: str, mode: str, max_line_bytes: int,
         max_errors: int) -> None:
    rules, blank_is_error = rules_for(purpose, mode)
    errors: list[CheckIssue] = []
    utf8_errors: list[CheckIssue] = []
    records = 0
    number = 0
    stream = lines(f, state, max_line_bytes)
    record = rules.record
    for number, line in stream:
        if not line or line.isspace():
            if blank_is_error:
                errors.append(CheckIssue(number, "json.blank_line", "a blank line (the 1.x checker refuses them)"))
        else:
            stripped = line  # JSON ignores the whitespace around a value; no copy of the line
            try:
                obj = _loads(line)
            except UnicodeDecodeError as exc:
                utf8_errors.append(CheckIssue(number, "utf8.invalid", f"not UTF-8 at byte {exc.start} of the line"))
                continue
            except RecursionError:
                errors.append(CheckIssue(number, "json.too_deep", "JSON nested too deeply"))
            except ValueError as exc:
                errors.append(_json_issue(number, line, stripped, exc, blank_is_error))
            else:
                if isinstance(obj, dict):
                    records += 1
                    issue = record(number, obj)
                    if issue is not None:
                        errors.append(issue)
                else:
                    errors.append(CheckIssue(number, "json.not_object",
                                             f"each line must be a JSON object, found {_kind(obj)}"))
        if len(errors) + len(utf8_errors) + len(state.too_long) >= max_errors:
            report.truncated = True
            break
    if report.truncated:
        for _ in stream:  # hash and count the rest, parse no more
            pass
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


def _json_issue(number: int, line: bytes, stripped: bytes, exc: ValueError, blank_is_error: bool) -> CheckIssue:
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
