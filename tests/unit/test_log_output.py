"""What reaches a log line (`inboxd.log`): secrets removed wherever they hide (a registered key,
bearer tokens, Authorization values, presigned urls' signatures; in values, nested data,
exceptions and the standard library's loggers), and producers' file names escaped on a
terminal so that a name cannot move the cursor or start a line of its own. The logger is
configured for real and writes into a stream the test reads."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from inboxd.log import REDACTED, configure, escape, get_logger, redact, redact_text, register_secret

KEY = "tgp_v1_unit-secret-key-AbCdEf0123"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _root_logger_put_back() -> Iterator[None]:
    """`configure` replaces the root logger's handlers: put them back after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_registered_secret_is_removed_from_text_and_nested_data() -> None:
    register_secret(KEY)
    register_secret("abc")  # too short to be a key: never registered (it would eat ordinary words)
    assert redact_text(f"sent with {KEY}!") == f"sent with {REDACTED}!"
    assert redact_text("abc def") == "abc def"
    data = {"a": [KEY, 1, None, True], "b": {"c": (f"x{KEY}y",)}, "d": 2.5}
    assert redact(data) == {"a": [REDACTED, 1, None, True], "b": {"c": [f"x{REDACTED}y"]}, "d": 2.5}
    assert KEY not in redact(ValueError(f"refused {KEY}"))


@pytest.mark.parametrize(("text", "gone"), [
    ("Authorization: Bearer eyJhbGciOi.xyz", "eyJhbGciOi.xyz"),
    ("headers={'authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz"),  # the scheme word kept, not the rest
    ("Proxy-Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ("authorization=sk-plain-value", "sk-plain-value"),
    ("https://s3.example/b/k?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA1&x=1", "deadbeef"),
    ("https://s3.example/b/k?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA1&x=1", "AKIA1"),
    ("GET /p?sig=s1g&token=t0k", "t0k"),
])
def test_secret_shapes_are_removed_without_registration(text: str, gone: str) -> None:
    out = redact_text(text)
    assert gone not in out and REDACTED in out


def test_text_without_a_secret_comes_back_as_it_is() -> None:
    for text in ("/srv/inbox/done/a.jsonl", "sha256:0f3a", "x=1&y=2", "dıgest ı"):
        assert redact_text(text) == text


def test_escape_writes_control_characters_and_backslashes_as_a_repr_does() -> None:
    assert escape("plain name.jsonl") == "plain name.jsonl"
    assert escape("a\nb") == "a\\nb"
    assert escape("\x1b[2Jclear") == "\\x1b[2Jclear"
    assert escape("back\\slash") == "back\\\\slash"
    assert escape("rtl\u202eevil") == "rtl\\u202eevil"
    assert escape("line\u2028sep") == "line\\u2028sep"
    assert escape("é ü 中") == "é ü 中"  # printable text is data, not escaped


def test_json_lines_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    register_secret(KEY)
    out = io.StringIO()
    configure("info", "json", out)
    log = get_logger("unit")
    log.info("api.call", url="https://x/y?signature=abc123", key=KEY, name="a\nb.jsonl")
    log.debug("hidden")
    try:
        raise RuntimeError(f"failed with {KEY}")
    except RuntimeError:
        log.exception("api.failed")
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["event"] for x in lines] == ["api.call", "api.failed"]  # debug is below info
    assert lines[0]["key"] == REDACTED and "abc123" not in lines[0]["url"]
    assert lines[0]["name"] == "a\nb.jsonl"  # JSON escapes it itself
    assert lines[0]["level"] == "info" and lines[0]["timestamp"].endswith("Z")
    assert KEY not in out.getvalue() and "RuntimeError" in out.getvalue()


def test_console_lines_escape_names_and_redact() -> None:
    register_secret(KEY)
    out = Tty()
    configure("info", "console", out)
    get_logger("unit").warning("file.claimed", name="evil\x1b]0;title\x07\nfake.line", auth=f"Bearer {KEY}")
    text = out.getvalue()
    assert text.count("\n") == 1  # one line: the name's newline is written as \n
    assert "\\x1b]0;title\\x07\\nfake.line" in text and KEY not in text


def test_also_lets_named_events_through_below_the_level() -> None:
    out = io.StringIO()
    configure("warning", "json", out, also=("api.retry",))
    log = get_logger("unit")
    log.info("api.retry", attempt=2)
    log.info("api.other")
    log.error("api.failed")
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["api.retry", "api.failed"]


def test_auto_is_json_off_a_terminal_and_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    pipe = io.StringIO()
    configure("info", "auto", pipe)
    get_logger().info("x.y")
    assert json.loads(pipe.getvalue())["event"] == "x.y"
    tty = Tty()
    configure("info", "auto", tty)
    get_logger().info("x.y")
    assert not tty.getvalue().startswith("{")
    monkeypatch.setenv("INVOCATION_ID", "abc")
    tty = Tty()
    configure("info", "auto", tty)
    get_logger().info("x.y")
    assert json.loads(tty.getvalue())["event"] == "x.y"


def test_the_standard_librarys_loggers_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    register_secret(KEY)
    configure("info", "json", io.StringIO())
    logging.getLogger("urllib3.connectionpool").warning("retrying %s with %s", "https://h/p", KEY)
    err = capsys.readouterr().err
    assert "WARNING urllib3.connectionpool: retrying https://h/p with " + REDACTED in err
    assert KEY not in err
    structlog.reset_defaults()
