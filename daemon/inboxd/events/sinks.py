"""The two kinds of sink: a webhook (a signed POST) and a command (the event on stdin).

`send` makes one attempt and says how it went as an `Outcome`; the sender decides about
retries. What an outcome's `error` may hold: the HTTP status and at most 200 characters of
the answer, or the exception's class and message, or a command's exit status and the first
line of its stderr; every one passes through `inboxd.log.redact_text`. Never the secret: it
lives in `Secret` and only its signature goes out.
"""

from __future__ import annotations

import email.utils
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Protocol

import requests

from ..api import Network
from ..config import EventSinkConfig
from ..log import redact_text
from .signing import Secret

USER_AGENT = "inboxd-events"
MAX_RETRY_AFTER = 3600.0


@dataclass(frozen=True)
class Outcome:
    ok: bool
    reason: str = ""  # the failure's label in inboxd_events_failed_total: http_503, timeout, connection, ...
    error: str = ""
    retry_after: float | None = None
    parked: bool = False  # refused for itself (a 4xx): the sink goes on with the next events


class Sink(Protocol):
    label: str
    config: EventSinkConfig

    def send(self, msg_id: str, body: str) -> Outcome: ...

    def close(self) -> None: ...


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), clamped to an hour."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, min(MAX_RETRY_AFTER, seconds))


class WebhookSink:
    """POST the body with the Standard Webhooks headers; 2xx = delivered. Through the API's
    proxy and CA settings (`Network`), with the session's own pool (keep-alive per sink)."""

    def __init__(self, config: EventSinkConfig, secret: Secret, network: Network) -> None:
        assert config.url is not None
        self.label, self.config, self.url = config.label, config, config.url
        self._secret = secret
        self.session = requests.Session()
        self.session.trust_env = False  # the environment's proxy comes through Network, never ~/.netrc
        self.session.verify = network.verify
        self.session.proxies = network.proxies_for(self.url)
        self.session.headers.update({"User-Agent": USER_AGENT, "Content-Type": "application/json"})

    def send(self, msg_id: str, body: str) -> Outcome:
        data = body.encode("utf-8")
        ts = int(time.time())
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts),
                   "webhook-signature": self._secret.sign(msg_id, ts, data)}
        timeout = self.config.timeout_seconds
        try:
            r = self.session.post(self.url, data=data, headers=headers, timeout=(min(timeout, 10.0), timeout),
                                  allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            return Outcome(False, "tls", redact_text(f"TLS: {exc}")[:300])
        except requests.exceptions.Timeout:
            return Outcome(False, "timeout", f"no answer within {timeout:g} s")
        except requests.exceptions.ConnectionError as exc:
            return Outcome(False, "connection", f"connection: {_why(exc)}")
        except requests.exceptions.RequestException as exc:
            return Outcome(False, "error", redact_text(f"{type(exc).__name__}: {exc}")[:300])
        try:
            text = r.text[:200]
        finally:
            r.close()
        if 200 <= r.status_code < 300:
            return Outcome(True)
        error = redact_text(f"HTTP {r.status_code}: {' '.join(text.split())}")[:300]
        # a 4xx other than 408 (timeout) and 429 (slow down) refuses this event, not the sink
        parked = 400 <= r.status_code < 500 and r.status_code not in (408, 429)
        return Outcome(False, f"http_{r.status_code}", error, retry_after(r.headers.get("Retry-After")), parked)

    def close(self) -> None:
        self.session.close()


class CommandSink:
    """Run the command with the body on stdin; exit 0 = delivered. A command still running at
    `timeout_seconds` is killed with its process group. The environment also carries
    INBOXD_EVENT_ID (the webhook-id: the same on every redelivery, for de-duplication)."""

    def __init__(self, config: EventSinkConfig) -> None:
        assert config.command is not None
        self.label, self.config, self.command = config.label, config, list(config.command)

    def send(self, msg_id: str, body: str) -> Outcome:
        env = {**os.environ, "INBOXD_EVENT_ID": msg_id}
        timeout = self.config.timeout_seconds
        try:
            proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=env, start_new_session=True)
        except FileNotFoundError:
            return Outcome(False, "missing", f"command not found: {self.command[0]}")
        except PermissionError:
            return Outcome(False, "missing", f"command not executable: {self.command[0]}")
        except OSError as exc:
            return Outcome(False, "error", f"cannot start the command: {exc.strerror}")
        try:
            _, stderr = proc.communicate(body.encode("utf-8"), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return Outcome(False, "timeout", f"the command ran past {timeout:g} s and was killed")
        if proc.returncode == 0:
            return Outcome(True)
        first = (stderr or b"").decode("utf-8", "replace").strip().splitlines()
        detail = f": {first[0][:200]}" if first else ""
        return Outcome(False, "exit_status", redact_text(f"exit status {proc.returncode}{detail}"))

    def close(self) -> None:
        return None


def _why(exc: BaseException) -> str:
    """The innermost OS error's text (refused, reset, no route): not the url, which may hold a token."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        nxt = e.__cause__ or e.__context__
        if nxt is None and e.args and isinstance(e.args[0], BaseException):
            nxt = e.args[0]
        e = nxt
    return type(exc).__name__


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        pass
