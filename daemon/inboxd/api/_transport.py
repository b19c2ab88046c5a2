"""HTTP for the client: one `requests.Session` per thread for the API (with the key) and one
for storage (without it), the retry loop, and careful reading of untrusted answers.

Timeouts are `(connect, read)`: the read timeout bounds the wait between bytes, never the
whole transfer. 429, 5xx, connection resets and idle timeouts are retried with exponential
backoff and full jitter, honouring `Retry-After` / `retry-after-ms` (capped).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests

from .. import __version__
from ._errors import AuthError, CancelledError, ProtocolError, TransientError

MAX_ANSWER = 2**20  # the most of an answer body ever read into memory
CONNECT_TIMEOUT = 30.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 120.0
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

Observer = Callable[[str, dict[str, Any]], None]


def check_id(file_id: Any, route: str) -> str:
    if not isinstance(file_id, str) or not SAFE_ID.fullmatch(file_id) or len(file_id) > 256:
        raise ProtocolError(f"{route}: the server returned an unsafe file id {str(file_id)[:80]!r}", route=route)
    return file_id


def check_url(url: Any, route: str) -> str:
    if not isinstance(url, str) or not url:
        raise ProtocolError(f"{route}: the server gave no upload url", route=route)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProtocolError(f"{route}: the server gave an upload url that is not http(s) ({parts.scheme or '?'}:)",
                            route=route)
    return url


def safe_url(url: str) -> str:
    """A url fit for a message: no query string (it holds the signature)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def retry_delay(attempt: int, response: requests.Response | None) -> float:
    if response is not None:
        ms = response.headers.get("retry-after-ms")
        sec = response.headers.get("Retry-After")
        try:
            if ms is not None:
                return min(RETRY_AFTER_CAP, max(0.0, float(ms) / 1000))
            if sec is not None:
                return min(RETRY_AFTER_CAP, max(0.0, float(sec)))
        except ValueError:
            pass
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


def read_answer(response: requests.Response, route: str) -> bytes:
    """The body of an answer, at most MAX_ANSWER bytes; a longer one is a protocol error."""
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > MAX_ANSWER:
        response.close()
        raise ProtocolError(f"{route}: the answer declares {declared} bytes; refusing to read it", route=route,
                            status=response.status_code)
    out = bytearray()
    try:
        for chunk in response.iter_content(65536):
            out += chunk
            if len(out) > MAX_ANSWER:
                response.close()
                raise ProtocolError(f"{route}: the answer is larger than {MAX_ANSWER} bytes", route=route,
                                    status=response.status_code)
    except requests.RequestException as exc:
        raise ProtocolError(f"{route}: the answer broke off: {type(exc).__name__}", route=route,
                            status=response.status_code) from None
    return bytes(out)


def read_json(response: requests.Response, route: str) -> Any:
    body = read_answer(response, route)
    try:
        return json.loads(body)
    except ValueError:
        raise ProtocolError(f"{route}: the answer (HTTP {response.status_code}) is not JSON", route=route,
                            status=response.status_code) from None


def error_text(response: requests.Response, route: str) -> str:
    """A short description of an error answer, for messages."""
    try:
        body = read_answer(response, route)
    except ProtocolError:
        return ""
    try:
        data = json.loads(body)
        if isinstance(data, dict):
            err = data.get("error", data)
            msg = err.get("message") if isinstance(err, dict) else err
            return str(msg)[:300]
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace")


class Transport:
    def __init__(self, key: str, *, timeout: float, max_retries: int, observer: Observer | None = None) -> None:
        self._key = key
        self.timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
        self.max_retries = max_retries
        self.observer = observer
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Transport(timeout={self.timeout}, max_retries={self.max_retries})"

    def session(self, storage: bool) -> requests.Session:
        attr = "storage" if storage else "api"
        s = getattr(self._local, attr, None)
        if s is None:
            s = requests.Session()
            s.headers["User-Agent"] = f"inboxd/{__version__}"
            s.trust_env = False  # loopback and the API host only; no proxies or netrc from the environment
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            if not storage:
                s.headers["Authorization"] = f"Bearer {self._key}"
            setattr(self._local, attr, s)
        return s

    def close(self) -> None:
        for attr in ("api", "storage"):
            s = getattr(self._local, attr, None)
            if s is not None:
                s.close()

    def emit(self, event: str, **fields: Any) -> None:
        if self.observer is not None:
            try:
                self.observer(event, fields)
            except Exception:  # noqa: BLE001 - an observer never breaks an upload
                pass

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
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries; return the first answer that is not transient. Raises
        TransientError when retries run out, AuthError on 401/403 from the API."""
        last = ""
        fixed_data = kwargs.pop("data", None)
        for attempt in range(self.max_retries + 1):
            if cancel is not None and cancel.is_set():
                raise CancelledError(f"{route}: cancelled", route=route)
            if attempts is not None and attempt > 0:
                attempts[0] += 1  # counts retries
            response = None
            try:
                data = body() if body is not None else fixed_data
                response = self.session(storage).request(
                    method, url, data=data, timeout=self.timeout, allow_redirects=False, stream=True, **kwargs)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                last = f"{type(exc).__name__}"
                reason = "timeout" if isinstance(exc, requests.Timeout) else "connection"
                status: int | str = reason
            else:
                status = response.status_code
                if status == 429 or status >= 500:
                    last = f"HTTP {status}"
                    reason = f"http_{status}"
                    self.emit("api_error", route=route, status=status)
                    read_answer_quietly(response, route)
                elif status in (401, 403) and not storage:
                    self.emit("api_error", route=route, status=status)
                    text = error_text(response, route)
                    raise AuthError(f"{route}: the API refused the key (HTTP {status}): {text}", route=route,
                                    status=status)
                else:
                    return response
            if attempt >= self.max_retries:
                break
            delay = retry_delay(attempt, response if isinstance(status, int) else None)
            self.emit("retry", route=route, attempt=attempt + 1, delay=round(delay, 3), reason=reason,
                      status=status)
            if cancel is not None:
                if cancel.wait(delay):
                    raise CancelledError(f"{route}: cancelled", route=route)
            else:
                time.sleep(delay)
        raise TransientError(f"{route}: gave up after {self.max_retries + 1} attempts ({last})", route=route,
                             status=status if isinstance(status, int) else None)


def read_answer_quietly(response: requests.Response, route: str) -> None:
    try:
        read_answer(response, route)
    except ProtocolError:
        pass
