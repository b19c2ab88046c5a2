"""HTTP for the client: one `requests.Session` per thread for the API (with the key) and one
for storage (without it), and the retry loop.

Timeouts are `(connect, read)`: the read timeout bounds the wait between bytes, never the
whole transfer. 429, 5xx, connection resets and idle timeouts are retried with the API's
backoff (`retry.API_RETRY`), honouring `Retry-After` / `retry-after-ms` (capped). API and
storage requests take the same route (`_network.Network`); only the API session carries the
key, so a presigned url's host never sees it, proxy or not.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.utils
import structlog
from urllib3.exceptions import InvalidHeader
from urllib3.util import Retry

from .. import __version__
from ..retry import API_RETRY
from ._answers import error_text, preload, read_answer_quietly
from ._errors import AuthError, Cancelled, TransientError
from ._network import PROXY_ENV, Network, protect_proxy
from ._send import send
from ._tls import certificate_refused, ssl_reason

log = structlog.get_logger("inboxd.api")
RETRY_LOG_EVERY = 5.0  # seconds between two api.retry lines of one route
CONNECT_TIMEOUT = 30.0
RETRY_AFTER_CAP = 120.0

Observer = Callable[[str, dict[str, Any]], None]


def retry_delay(attempt: int, response: requests.Response | None) -> float:
    """How long to wait before retry `attempt` (0 first): what the server asked for, capped at
    RETRY_AFTER_CAP, else the API's backoff (`retry.API_RETRY`). ``retry-after-ms`` (the Together and
    OpenAI convention) wins; ``Retry-After`` is read by urllib3 (delay-seconds or an HTTP-date;
    a date already past falls back to the backoff), and a fractional number of seconds, which
    the official clients accept too, is honoured."""
    if response is not None:
        asked = _asked_delay(response.headers)
        if asked is not None:
            return min(RETRY_AFTER_CAP, max(0.0, asked))
    return API_RETRY.delay(attempt + 1)


_RETRY_AFTER = Retry(total=None)  # only its parse_retry_after; the retrying is ours


def _asked_delay(headers: Mapping[str, str]) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(_RETRY_AFTER.parse_retry_after(value))
    except InvalidHeader:
        pass
    else:
        if seconds == 0 and not value.strip().isdigit():
            return None  # an HTTP-date already past: the clocks disagree; back off as urllib3 does
        return seconds
    try:
        return float(value)  # "2.5": not RFC 9110 delay-seconds, but servers send it
    except ValueError:
        return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# --- the transport --------------------------------------------------------------------------


class Transport:
    def __init__(self, key: str, *, timeout: float, max_retries: int, observer: Observer | None = None,
                 network: Network | None = None) -> None:
        self._key = key
        self.timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
        self.max_retries = max_retries
        self.observer = observer
        self.network = network or Network(proxy=None, verify=True, ca_source="certifi (the default)")
        protect_proxy(self.network.proxy)
        for var in PROXY_ENV[:-1]:  # the environment's proxies too: their passwords are never logged
            protect_proxy(os.environ.get(var) or os.environ.get(var.upper()))
        self._local = threading.local()
        self._retry_log: dict[str, tuple[float, int]] = {}
        self._retry_log_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Transport(timeout={self.timeout}, max_retries={self.max_retries})"

    def session(self, storage: bool) -> requests.Session:
        attr = "storage" if storage else "api"
        s = getattr(self._local, attr, None)
        if s is None:
            s = requests.Session()
            s.headers["User-Agent"] = f"inboxd/{__version__}"
            # never ~/.netrc; the environment's proxies come per request from self.network instead
            s.trust_env = False
            s.verify = self.network.verify
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            if not storage:
                s.headers["Authorization"] = f"Bearer {self._key}"
            setattr(self._local, attr, s)
            setattr(self._local, f"{attr}_pools", {})  # `_send.send`'s pools of this session
        return s

    def close(self) -> None:
        for attr in ("api", "storage"):
            s = getattr(self._local, attr, None)
            if s is not None:
                s.close()

    def emit(self, event: str, **fields: Any) -> None:
        if event == "retry":
            self._log_retry(fields)
        if self.observer is not None:
            try:
                self.observer(event, fields)
            except Exception:  # noqa: BLE001 - an observer never breaks an upload
                pass

    def _log_retry(self, fields: dict[str, Any]) -> None:
        """Each retry inside a request at info (status, attempt, wait), at most one line per
        route every RETRY_LOG_EVERY seconds; the lines held back are counted in the next one.
        The metric inboxd_retries counts them all (the observer)."""
        route = str(fields.get("route"))
        now = time.monotonic()
        with self._retry_log_lock:
            last, held = self._retry_log.get(route, (0.0, 0))
            if now - last < RETRY_LOG_EVERY:
                self._retry_log[route] = (last, held + 1)
                return
            self._retry_log[route] = (now, 0)
        log.info("api.retry", route=route, status=fields.get("status"), attempt=fields.get("attempt"),
                 wait=fields.get("delay"), reason=fields.get("reason"), held_back=held)

    def request(
        self,
        route: str,
        method: str,
        url: str,
        *,
        storage: bool = False,
        body: Callable[[], Any] | None = None,
        cancel: threading.Event | None = None,
        attempts: list[int] | None = None,
        stream_body: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries; return the first answer that is not transient. Raises
        TransientError when retries run out, AuthError on 401/403 from the API.
        `stream_body`: the caller reads the body itself from `response.raw` (a download), so a
        small one is not read ahead (`_preload`)."""
        last: _Transient | None = None
        fixed_data = kwargs.pop("data", None)
        for attempt in range(self.max_retries + 1):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"{route}: cancelled", route=route)
            if attempts is not None and attempt > 0:
                attempts[0] += 1  # counts retries
            outcome = self._attempt(route, method, url, storage=storage, body=body, fixed_data=fixed_data,
                                    kwargs=kwargs)
            if isinstance(outcome, requests.Response):
                if not stream_body:
                    preload(outcome)
                return outcome
            last = outcome
            if attempt >= self.max_retries:
                break
            self._wait_to_retry(route, attempt, outcome, cancel)
        assert last is not None
        raise TransientError(f"{route}: gave up after {self.max_retries + 1} attempts ({last.what})", route=route,
                             status=last.status if isinstance(last.status, int) else None)

    def _attempt(self, route: str, method: str, url: str, *, storage: bool, body: Callable[[], Any] | None,
                 fixed_data: Any, kwargs: dict[str, Any]) -> requests.Response | _Transient:
        """One send: the answer, or the transient failure that makes it worth another try.
        Raises AuthError for a certificate that cannot be verified (retrying cannot help)."""
        try:
            data = body() if body is not None else fixed_data
            response = self._send(storage, method, url, data, kwargs)
        except requests.exceptions.SSLError as exc:
            if certificate_refused(exc):
                # a configuration problem, not the file's: retrying cannot help; pause like a bad key
                raise AuthError(
                    f"{route}: the certificate of {_origin(url)} could not be verified ({ssl_reason(exc)}); "
                    f"set api.ca_bundle or REQUESTS_CA_BUNDLE to the CA that signed it "
                    f"(now: {self.network.ca_source})", route=route) from None
            return _Transient(what="SSLError", reason="tls", status="tls")
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            reason = "timeout" if isinstance(exc, requests.Timeout) else "connection"
            return _Transient(what=f"{type(exc).__name__}", reason=reason, status=reason)
        return self._judge(route, response, storage)

    def _send(self, storage: bool, method: str, url: str, data: Any, kwargs: dict[str, Any]) -> requests.Response:
        """One request through the session's pool (`_send.send`: the session's headers, verify
        and adapter; the proxies are ours, per origin)."""
        session = self.session(storage)
        pools = getattr(self._local, "storage_pools" if storage else "api_pools")
        return send(session, method, url, headers=kwargs.get("headers"), data=data, json_body=kwargs.get("json"),
                    fields=kwargs.get("fields"), timeout=self.timeout, verify=self.network.verify,
                    proxies=self.network.proxies_for(url), pools=pools)

    def _judge(self, route: str, response: requests.Response, storage: bool) -> requests.Response | _Transient:
        """An answer as it stands: 429 and 5xx are transient (their body read and dropped); 407,
        and 401/403 from the API, raise AuthError; anything else is returned."""
        status = response.status_code
        if status == 429 or status >= 500:
            self.emit("api_error", route=route, status=status)
            read_answer_quietly(response, route)
            return _Transient(what=f"HTTP {status}", reason=f"http_{status}", status=status, response=response)
        if status == 407:
            self.emit("api_error", route=route, status=status)
            read_answer_quietly(response, route)
            raise AuthError(f"{route}: the proxy refused inboxd (HTTP 407 Proxy Authentication Required); "
                            "check the credentials in api.proxy or the *_PROXY variables", route=route,
                            status=status)
        if status in (401, 403) and not storage:
            self.emit("api_error", route=route, status=status)
            text = error_text(response, route)
            raise AuthError(f"{route}: the API refused the key (HTTP {status}): {text}", route=route,
                            status=status)
        return response

    def _wait_to_retry(self, route: str, attempt: int, failure: _Transient, cancel: threading.Event | None) -> None:
        """Emit the retry, then wait what the server asked for (Retry-After) or the backoff."""
        delay = retry_delay(attempt, failure.response)
        self.emit("retry", route=route, attempt=attempt + 1, delay=round(delay, 3), reason=failure.reason,
                  status=failure.status)
        if cancel is not None:
            if cancel.wait(delay):
                raise Cancelled(f"{route}: cancelled", route=route)
        else:
            time.sleep(delay)


@dataclass(frozen=True)
class _Transient:
    """A try worth repeating: what went wrong (for the final message), the retry reason and
    status, and the HTTP answer if there was one (its Retry-After sets the wait)."""

    what: str
    reason: str
    status: int | str
    response: requests.Response | None = None
