"""HTTP for the client: one `requests.Session` per thread for the API (with the key) and one
for storage (without it), the retry loop, and careful reading of untrusted answers.

Timeouts are `(connect, read)`: the read timeout bounds the wait between bytes, never the
whole transfer. 429, 5xx, connection resets and idle timeouts are retried with exponential
backoff and full jitter, honouring `Retry-After` / `retry-after-ms` (capped).

Proxies and CAs (`Network`, from `resolve_network`): ``api.proxy`` wins over the environment,
``api.ca_bundle`` over ``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE``, else certifi. The sessions
keep ``trust_env = False`` (so ~/.netrc never lends credentials to any host); the environment's
proxies are resolved here per request url with requests' own `get_environ_proxies` (HTTP_PROXY,
HTTPS_PROXY, ALL_PROXY, NO_PROXY, lower case first as curl does), and the CA goes into
``session.verify``. API and storage requests take the same route; only the API session carries
the key, so a presigned url's host never sees it, proxy or not. A proxy's password is handed
to the log redaction at once and only ever shown as ``user:***``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
import requests.adapters
import requests.utils
import structlog
from urllib3.exceptions import InvalidHeader
from urllib3.util import Retry

from .. import __version__
from ..config import ApiConfig
from ..log import register_secret
from ..retry import API_RETRY
from ._errors import AuthError, Cancelled, ProtocolError, TransientError
from ._send import send

log = structlog.get_logger("inboxd.api")
RETRY_LOG_EVERY = 5.0  # seconds between two api.retry lines of one route

MAX_ANSWER = 2**20  # the most of an answer body ever read into memory
PRELOAD_MAX = 2**16  # an answer declaring at most this many bytes is read at once (keep-alive)
CONNECT_TIMEOUT = 30.0
RETRY_AFTER_CAP = 120.0
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

Observer = Callable[[str, dict[str, Any]], None]


def check_id(value: Any, route: str, kind: str = "file", *, given: bool = False) -> str:
    """`value`, a `kind` id ("file" or "batch") safe to put in a url path. An unsafe one is a
    ProtocolError naming the kind and who gave it: the server (in an answer) or, with `given`,
    the caller (an id typed by a user, such as `inboxd batch cancel ID`), in which case nothing is sent."""
    if not isinstance(value, str) or not SAFE_ID.fullmatch(value) or len(value) > 256:
        shown = str(value)[:80]
        if given:
            raise ProtocolError(f"{route}: {shown!r} is not a valid {kind} id (letters, digits, '.', '_' and '-'); "
                                "nothing was sent", route=route)
        raise ProtocolError(f"{route}: the server returned an unsafe {kind} id {shown!r}", route=route)
    return value


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


# --- proxies and CAs ----------------------------------------------------------------------

PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
CA_ENV = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")


def redact_proxy(url: str | None) -> str | None:
    """A proxy url fit to show: the password replaced by ``***`` (``http://user:***@proxy:3128``)."""
    if not url:
        return url
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.password is None and parts.username is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    shown = f"{user}:***@{host}" if parts.password is not None else f"{user}@{host}"
    return url.replace(parts.netloc, shown, 1) if "://" in url else shown


def protect_proxy(url: str | None) -> None:
    """Hand a proxy's password (as written, decoded, and as the Basic header carries it) to the
    log redaction, so that no log line can ever show it."""
    if not url:
        return
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        password = parts.password
    except ValueError:
        return
    if password is None:
        return
    user = unquote(parts.username or "")
    for value in {password, unquote(password)}:
        register_secret(value)
    register_secret(base64.b64encode(f"{user}:{unquote(password)}".encode()).decode())


def _env_proxy_var(scheme: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(variable name, value) of the environment's proxy for a url scheme, lower case first."""
    for name in (f"{scheme}_proxy", "all_proxy"):
        for var in (name, name.upper()):
            if env.get(var):
                return var, env[var]
    return None


@dataclass(frozen=True)
class Network:
    """The route to the API and storage hosts: which proxy, which CAs, and where each came from."""

    proxy: str | None  # api.proxy: a url, "" (direct, the environment ignored), or None (the environment)
    verify: str | bool  # a CA bundle path, or True (certifi)
    ca_source: str

    @property
    def proxy_source(self) -> str:
        if self.proxy is None:
            return "environment"
        return "api.proxy" if self.proxy else "api.proxy (\"\": direct, the environment ignored)"

    def proxies_for(self, url: str) -> dict[str, str]:
        """The `proxies` argument of one request to `url`."""
        if self.proxy is not None:
            return {"all": self.proxy} if self.proxy else {}
        # the live environment, as requests reads it with trust_env (NO_PROXY included), minus netrc
        return _environ_proxies(url)

    def proxy_for(self, url: str) -> str | None:
        return requests.utils.select_proxy(url, self.proxies_for(url))

    def describe(self, url: str) -> dict[str, Any]:
        """What `inboxd config check` shows: the effective proxy for `url` (redacted), and where it
        came from; the CA bundle, and where it came from. Reads the live environment, as requests do."""
        env = os.environ
        chosen = self.proxy_for(url)
        if self.proxy is not None:
            source = self.proxy_source if chosen else "api.proxy = \"\" (direct; the environment is ignored)"
        else:
            scheme = urlsplit(url).scheme
            var = _env_proxy_var(scheme, env)
            no_proxy = env.get("no_proxy") or env.get("NO_PROXY")
            if var is None:
                source = f"none (no api.proxy; no {scheme}_proxy or all_proxy in the environment)"
            elif not chosen:
                source = f"none ({var[0]} is set but NO_PROXY={no_proxy} excludes the host)"
            else:
                source = f"environment variable {var[0]}"
        out: dict[str, Any] = {"proxy": redact_proxy(chosen) or None, "proxy_source": source}
        if self.proxy is None:
            out["no_proxy"] = env.get("no_proxy") or env.get("NO_PROXY") or None
        out["ca_bundle"] = self.verify if isinstance(self.verify, str) else _certifi_where()
        out["ca_bundle_source"] = self.ca_source
        return out


# The variables that decide the proxy of an http(s) url (urllib's getproxies_environment and
# proxy_bypass_environment, as requests calls them); REQUEST_METHOD makes urllib ignore HTTP_PROXY.
_PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy",
               "NO_PROXY", "REQUEST_METHOD")
_environ_cache: dict[tuple[Any, ...], dict[str, str]] = {}


def _environ_proxies(url: str) -> dict[str, str]:
    """`requests.utils.get_environ_proxies(url)`, remembered per origin and per value of the
    variables that decide it: still the live environment (a changed variable is a new key), but
    without walking and decoding all of os.environ for every request (a tenth of a worker's
    CPU in a burst of small files). Only http(s) urls come here; for them the other *_proxy
    variables (ftp_proxy ...) never matter."""
    parts = urlsplit(url)
    env = os.environ
    key = (parts.scheme, parts.netloc, *(env.get(v) for v in _PROXY_VARS))
    found = _environ_cache.get(key)
    if found is None:
        if len(_environ_cache) >= 256:
            _environ_cache.clear()
        found = _environ_cache[key] = requests.utils.get_environ_proxies(url)
    return dict(found)


def _certifi_where() -> str | None:
    try:
        import certifi

        return str(certifi.where())
    except ImportError:  # pragma: no cover - requests depends on certifi
        return None


def resolve_network(api: ApiConfig, env: Mapping[str, str] | None = None) -> Network:
    """The proxy and CA of `api` (the configuration wins) else of the environment.

    A CA variable naming a file that does not exist is skipped (and said so in the source):
    the environment is ambient, the configuration deliberate (``api.ca_bundle`` must exist)."""
    env = os.environ if env is None else env
    proxy = api.proxy.get_secret_value() if api.proxy is not None else None
    verify: str | bool = True
    ca_source = "certifi (the default)"
    skipped: list[str] = []
    if api.ca_bundle is not None:
        verify, ca_source = str(api.ca_bundle), "api.ca_bundle"
    else:
        for var in CA_ENV:
            value = env.get(var)
            if not value:
                continue
            if Path(value).exists():
                verify, ca_source = value, f"environment variable {var}"
                break
            skipped.append(f"{var}={value} does not exist")
        if skipped:
            ca_source += f" ({'; '.join(skipped)}: ignored)"
    return Network(proxy=proxy, verify=verify, ca_source=ca_source)


def _certificate_refused(exc: BaseException) -> bool:
    """Whether an SSLError comes from certificate verification (not a reset mid-handshake)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e):
            return True
        nxt = e.__cause__ or e.__context__
        if nxt is None and e.args and isinstance(e.args[0], BaseException):
            nxt = e.args[0]
        e = nxt
    return False


def _ssl_reason(exc: BaseException) -> str:
    m = re.search(r"certificate verify failed: ([^()'\]]+)", str(exc))
    return m.group(1).strip() if m else "certificate verify failed"


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
                    _preload(outcome)
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
            if _certificate_refused(exc):
                # a configuration problem, not the file's: retrying cannot help; pause like a bad key
                raise AuthError(
                    f"{route}: the certificate of {_origin(url)} could not be verified ({_ssl_reason(exc)}); "
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


def _preload(response: requests.Response) -> None:
    """Read a small answer (a declared Content-Length of at most PRELOAD_MAX) into the response
    now, so that the connection goes back to the session's pool for the next request. Callers
    that only look at the status and headers (a redirect, a storage PUT's ETag) close the
    response unread, and closing an unread streamed response closes its connection: one new
    TCP connection per file to each host. A longer or chunked answer stays streamed (downloads,
    bounded reads). An answer that breaks off here is left as it is: reading it later fails as
    before (`read_answer`: the answer broke off, or is not JSON)."""
    declared = response.headers.get("Content-Length")
    if not declared or not declared.isdigit() or int(declared) > PRELOAD_MAX:
        return
    try:
        response.content  # noqa: B018 - reads the body and releases the connection to the pool
    except requests.RequestException:
        response.close()


def read_answer_quietly(response: requests.Response, route: str) -> None:
    try:
        read_answer(response, route)
    except ProtocolError:
        pass
