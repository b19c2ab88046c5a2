"""Logging: structlog configured in one place, and the redaction every line passes through.

`configure()` is called once by the command line. Every other module does
``log = structlog.get_logger(__name__)`` and logs stable event names with key-value pairs.

Redaction is a processor near the end of the chain: it walks the whole event dict (after an
exception has been formatted into text), so a secret is removed wherever it hides: in a
value, in an exception message, in a repr. Secrets are known two ways: values registered
with `register_secret` (the API key, once it is resolved), and shapes (``Bearer ...``,
``Authorization: ...``, signature parameters of presigned urls).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
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
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?!bearer\s)[^\s'\",}]+"), r"\1" + REDACTED),
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


def redaction_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: redact(v) for k, v in event_dict.items()}


def _use_json(log_format: str, stream: TextIO) -> bool:
    if log_format == "json":
        return True
    if log_format == "console":
        return False
    under_systemd = bool(os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"))
    return under_systemd or not stream.isatty()


def configure(level: str = "info", log_format: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog for the whole process: JSON lines, or a console renderer on a tty."""
    stream = stream or sys.stdout
    as_json = _use_json(log_format, stream)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
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
            structlog.dev.ConsoleRenderer(colors=stream.isatty()),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
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
