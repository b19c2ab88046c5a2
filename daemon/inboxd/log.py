"""Logging: structlog configured in one place, and the redaction every line passes through.

`configure()` is called once by the command line. Every other module does
``log = structlog.get_logger(__name__)`` and logs stable event names with key-value pairs.

Redaction is a processor near the end of the chain: it walks the whole event dict (after an
exception has been formatted into text), so a secret is removed wherever it hides: in a
value, in an exception message, in a repr. Secrets are known two ways: values registered
with `register_secret` (the API key, once it is resolved), and shapes (``Bearer ...``,
``Authorization: ...``, signature parameters of presigned urls).

File names come from producers: human output (the console renderer here, every line the
command line prints) passes them through `escape`, so a name cannot move the cursor, clear
the terminal, set its title or start a line of its own.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Collection, Mapping
from typing import Any, TextIO

import structlog
import structlog.tracebacks

REDACTED = "<redacted>"

# copy-on-write: a reload registers a key while workers log; readers iterate a frozenset
# that is never changed in place ("Set changed size during iteration" cannot happen)
_secrets: frozenset[str] = frozenset()
_secrets_lock = threading.Lock()

_PATTERNS = [
    # Authorization headers and bearer tokens
    (re.compile(r"(?i)(bearer\s+)[^\s'\",}]+"), r"\1" + REDACTED),
    # (a scheme word such as Basic is kept, and the credential after it removed)
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?!bearer\s)((?:basic|digest|negotiate|token)\s+)?"
                r"[^\s'\",}]+"), r"\1\2" + REDACTED),
    # signature-like query parameters of presigned urls
    (
        re.compile(
            r"(?i)([?&](?:x-amz-signature|x-amz-credential|x-amz-security-token|signature|sig|token|key)=)[^&\s'\"]+"
        ),
        r"\1" + REDACTED,
    ),
]


def register_secret(value: str | None) -> None:
    """Never let this exact value reach a log line (the API key, once resolved)."""
    global _secrets
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets = _secrets | {value}


def redact_text(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    # each pattern needs its word ("bearer", "authorization") or a query's "=": most values (paths,
    # hashes, ids) hold none of them and skip the three regular expressions (text that is not
    # ASCII always takes them: (?i) also matches letters such as the dotless i that lower() keeps)
    lower = text.lower()
    if "=" in text or not text.isascii() or "bearer" in lower or "authorization" in lower:
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
    return text


def redact(value: Any) -> Any:
    """A copy of `value` (str, mapping, list, or anything with a str) with every secret removed."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(v) for v in value]
    return redact_text(str(value))


def _escaped_char(c: str) -> str:
    if c == "\\":
        return "\\\\"
    if c.isprintable():
        return c
    return repr(c)[1:-1]  # \n, \t, \x1b, \u2028, \U000e0041: Python's escapes


def escape(text: str) -> str:
    """`text` for a terminal: every character that is not printable (control characters, ESC,
    newlines, line and paragraph separators, format characters such as bidi overrides) and
    the backslash written as Python writes them in a repr, without the quotes. Printable text,
    the common case, comes back as it is."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escaped_char(c) for c in text)


class _Shown(str):
    """An escaped value: the console renderer quotes it when it holds a space or a quote,
    with its own repr, so the escapes are not escaped a second time."""

    def __repr__(self) -> str:
        return "'" + self.replace("'", "\\'") + "'"


def escape_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Every value of a console line escaped (a traceback keeps its newlines, each line escaped)."""
    return {k: "\n".join(escape(line) for line in v.split("\n")) if k in ("exception", "stack") and isinstance(v, str)
            else _shown(v) for k, v in event_dict.items()}


def _shown(v: Any) -> Any:
    if isinstance(v, (int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_shown(x) for x in v]
    if isinstance(v, Mapping):
        return {_shown(k): _shown(x) for k, x in v.items()}
    return _Shown(escape(v if isinstance(v, str) else str(v)))


def redaction_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: redact(v) for k, v in event_dict.items()}


def _use_json(log_format: str, stream: TextIO) -> bool:
    if log_format == "json":
        return True
    if log_format == "console":
        return False
    under_systemd = bool(os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"))
    return under_systemd or not stream.isatty()


def _let_through(level: int, events: frozenset[str]) -> Any:
    """Drop a line below `level` unless its event is one of `events`."""
    levels = logging.getLevelNamesMapping()

    def processor(_logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        if levels.get(method.upper(), logging.CRITICAL) < level and event_dict.get("event") not in events:
            raise structlog.DropEvent
        return event_dict

    return processor


def configure(level: str = "info", log_format: str = "auto", stream: TextIO | None = None, *,
              also: Collection[str] = ()) -> None:
    """Set up structlog for the whole process: JSON lines, or a console renderer on a tty.
    `also`: event names shown down to info whatever `level` says (the one-shot commands show
    api.retry at their default level, warning)."""
    stream = stream or sys.stdout
    as_json = _use_json(log_format, stream)
    threshold = logging.getLevelNamesMapping()[level.upper()]
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if also and threshold > logging.INFO:
        processors.insert(0, _let_through(threshold, frozenset(also)))
        threshold = logging.INFO
    if as_json:
        processors += [
            # tracebacks as data, without frame locals: a local may hold file content or a key
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False, use_rich=False)),
            redaction_processor,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    else:
        processors += [
            structlog.processors.format_exc_info,
            redaction_processor,
            escape_processor,
            structlog.dev.ConsoleRenderer(colors=stream.isatty()),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # libraries that use the standard logging module (watchdog, urllib3) go to stderr, redacted
    root = logging.getLogger()
    root.handlers[:] = []
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_StdlibRedactor())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


class _StdlibRedactor(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        return True


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
