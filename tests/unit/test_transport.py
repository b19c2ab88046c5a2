"""`inboxd.api._transport.retry_delay`: Retry-After (seconds or an HTTP-date, read by urllib3) /
retry-after-ms honoured (capped), else jittered backoff."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
import requests

from inboxd import retry
from inboxd.api._transport import RETRY_AFTER_CAP, retry_delay

BACKOFF_BASE, BACKOFF_CAP = retry.API_RETRY.base, retry.API_RETRY.cap


def answer(**headers: str) -> requests.Response:
    r = requests.Response()
    r.status_code = 429
    for k, v in headers.items():
        r.headers[k.replace("_", "-")] = v
    return r


@pytest.fixture
def top(monkeypatch: pytest.MonkeyPatch) -> None:
    """random.uniform(a, b) -> b: the backoff's upper bound, deterministically."""
    monkeypatch.setattr(retry.random, "uniform", lambda a, b: b)


@pytest.mark.parametrize("value,expected", [("3", 3.0), ("0", 0.0), ("2.5", 2.5), ("-4", 0.0),
                                            ("100000", RETRY_AFTER_CAP)])
def test_retry_after_seconds(value: str, expected: float) -> None:
    assert retry_delay(0, answer(Retry_After=value)) == expected


def test_retry_after_header_name_is_case_insensitive() -> None:
    r = answer()
    r.headers["retry-after"] = "7"
    assert retry_delay(3, r) == 7.0


@pytest.mark.parametrize("value,expected", [("1500", 1.5), ("0", 0.0), ("250.0", 0.25), ("-1", 0.0),
                                            ("999999999", RETRY_AFTER_CAP)])
def test_retry_after_ms(value: str, expected: float) -> None:
    assert retry_delay(0, answer(retry_after_ms=value)) == expected


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert retry_delay(0, answer(retry_after_ms="200", Retry_After="9")) == 0.2


@pytest.mark.usefixtures("top")
@pytest.mark.parametrize("attempt,expected", [(0, BACKOFF_BASE), (1, 1.0), (2, 2.0), (5, 16.0), (6, BACKOFF_CAP),
                                              (40, BACKOFF_CAP)])
def test_without_a_header_the_backoff_doubles_up_to_the_cap(attempt: int, expected: float) -> None:
    assert retry_delay(attempt, None) == expected
    assert retry_delay(attempt, answer()) == expected


@pytest.mark.usefixtures("top")
@pytest.mark.parametrize("value", ["soon", "", "Wed, 32 Foo 2015 07:28:00 GMT", "5 s"])
def test_an_unreadable_retry_after_falls_back_to_backoff(value: str) -> None:
    assert retry_delay(2, answer(Retry_After=value)) == 2.0


def test_retry_after_as_an_http_date() -> None:
    delay = retry_delay(0, answer(Retry_After=formatdate(time.time() + 30, usegmt=True)))
    assert 28.0 <= delay <= 30.0  # whole seconds in the header; a little time passes


def test_an_http_date_beyond_the_cap_is_capped() -> None:
    assert retry_delay(0, answer(Retry_After=formatdate(time.time() + 86400, usegmt=True))) == RETRY_AFTER_CAP


@pytest.mark.usefixtures("top")
def test_an_http_date_already_past_falls_back_to_backoff() -> None:
    assert retry_delay(2, answer(Retry_After="Wed, 21 Oct 2015 07:28:00 GMT")) == 2.0


@pytest.mark.usefixtures("top")
def test_an_unreadable_retry_after_ms_falls_back_to_retry_after() -> None:
    assert retry_delay(2, answer(retry_after_ms="soon", Retry_After="3")) == 3.0
    assert retry_delay(2, answer(retry_after_ms="soon")) == 2.0


def test_backoff_has_equal_jitter() -> None:
    delays = {retry_delay(3, None) for _ in range(200)}
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(delays) > 100  # random, not a fixed schedule
    assert min(delays) < 2.5 < 3.5 < max(delays)


@pytest.mark.parametrize("policy", [retry.FILE_RETRY, retry.API_RETRY, retry.BATCH_CREATE, retry.BATCH_POLL,
                                    retry.PROCESSING_POLL, retry.DOWNLOAD_CUT, retry.FS_CACHE])
def test_every_backoff_is_equal_jitter_doubling_to_its_cap(policy: retry.Backoff) -> None:
    for attempt in (1, 2, 3, 10, 100, 10**6):
        d = min(policy.cap, policy.base * 2 ** min(attempt - 1, 60))
        for _ in range(50):
            assert d / 2 <= policy.delay(attempt) <= d
