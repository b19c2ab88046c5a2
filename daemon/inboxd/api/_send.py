"""One HTTP request on the wire: the body encoded here, sent through the session's adapter's
urllib3 pool (its connections, TLS settings and proxy managers), answered as a `requests.Response`.

`Session.request` and `PreparedRequest.prepare` did more than inboxd uses (cookies, hooks,
environment merging, redirect bookkeeping, header validation of headers inboxd writes itself,
a general multipart encoder for four short form fields), and that was half of the CPU of each
request (docs/benchmarks.md has the figures). What stays is what the adapter's own `send` does with a
prepared request: the pool for the url (proxy and CA as the session's), the request target
(the whole url through an http proxy), `urlopen` without urllib3's retries or redirects, and
urllib3's errors raised as the `requests` exceptions the transport and its callers catch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
from requests.structures import CaseInsensitiveDict
from requests.utils import requote_uri, urldefragauth
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import InvalidHeader as Urllib3InvalidHeader
from urllib3.exceptions import ProxyError as Urllib3ProxyError
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util import Timeout


def form(fields: Mapping[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body of plain text fields, and its Content-Type."""
    boundary = os.urandom(16).hex()
    out = []
    for name, value in fields.items():
        quoted = name.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "%0D").replace("\n", "%0A")
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted}"\r\n\r\n{value}\r\n')
    out.append(f"--{boundary}--\r\n")
    return "".join(out).encode("utf-8"), f"multipart/form-data; boundary={boundary}"


def send(session: requests.Session, method: str, url: str, *, headers: Mapping[str, str] | None = None,
         data: Any = None, json_body: Any = None, fields: Mapping[str, str] | None = None,
         timeout: tuple[float, float], verify: str | bool, proxies: dict[str, str],
         pools: dict[tuple[Any, ...], tuple[Any, bool]]) -> requests.Response:
    """Send one request (no retries, no redirects followed) and return the answer, its body
    not yet read. `data`: bytes, or an iterable of bytes (with a Content-Length header, else
    it is sent chunked); `json_body`: a value sent as JSON; `fields`: a form of text fields;
    `pools`: where the pool of each origin and route is remembered (one dict per session)."""
    url = requote_uri(url)
    head: dict[str, str] = {**session.headers, **(headers or {})}  # type: ignore[dict-item]
    body = data
    if fields is not None:
        body, head["Content-Type"] = form(fields)
    elif json_body is not None:
        body = json.dumps(json_body, allow_nan=False).encode("utf-8")
        head["Content-Type"] = "application/json"
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(body, (bytes, bytearray)):
        head["Content-Length"] = str(len(body))
    elif body is None and method not in ("GET", "HEAD"):  # as requests: a bodiless POST says 0
        head["Content-Length"] = "0"
    chunked = body is not None and "Content-Length" not in head
    adapter = session.get_adapter(url)
    assert isinstance(adapter, requests.adapters.HTTPAdapter)
    conn, whole_url = _pool(adapter, url, verify, proxies, pools)
    adapter.cert_verify(conn, url, verify, None)
    try:
        raw = conn.urlopen(method=method, url=urldefragauth(url) if whole_url else _path(url), body=body, headers=head,
                           redirect=False, assert_same_host=False, preload_content=False, decode_content=False,
                           retries=adapter.max_retries, timeout=Timeout(connect=timeout[0], read=timeout[1]),
                           chunked=chunked)
    except (ProtocolError, OSError) as exc:
        raise requests.ConnectionError(exc) from exc
    except MaxRetryError as exc:  # urllib3 wraps what broke the connection
        reason = exc.reason
        if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
            raise requests.ConnectTimeout(exc) from exc
        if isinstance(reason, ResponseError):
            raise requests.exceptions.RetryError(exc) from exc
        if isinstance(reason, Urllib3ProxyError):
            raise requests.exceptions.ProxyError(exc) from exc
        if isinstance(reason, Urllib3SSLError):
            raise requests.exceptions.SSLError(exc) from exc
        raise requests.ConnectionError(exc) from exc
    except ClosedPoolError as exc:
        raise requests.ConnectionError(exc) from exc
    except Urllib3ProxyError as exc:
        raise requests.exceptions.ProxyError(exc) from exc
    except Urllib3SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc
    except ReadTimeoutError as exc:
        raise requests.ReadTimeout(exc) from exc
    except Urllib3InvalidHeader as exc:
        raise requests.exceptions.InvalidHeader(exc) from exc
    except Urllib3HTTPError as exc:
        raise requests.ConnectionError(exc) from exc
    return _answer(raw, url, adapter)


def _pool(adapter: requests.adapters.HTTPAdapter, url: str, verify: str | bool, proxies: dict[str, str],
          pools: dict[tuple[Any, ...], tuple[Any, bool]]) -> tuple[Any, bool]:
    """The adapter's urllib3 pool for `url` (as its `send` chooses it: the proxy's manager or
    the direct one, the TLS settings of `verify`), and whether the request target is the whole
    url (plain http through an http proxy) rather than the path. Remembered per origin, proxy
    and CA in `pools` while the pool is open (an adapter closes pools it has too many of)."""
    parts = urlsplit(url)
    key = (parts.scheme, parts.netloc, verify, tuple(sorted(proxies.items())))
    found = pools.get(key)
    if found is not None and found[0].pool is not None:
        return found
    target = requests.PreparedRequest()
    target.url = url  # all the adapter reads of it to choose the pool and the target
    conn = adapter.get_connection_with_tls_context(target, verify, proxies=proxies)
    found = (conn, adapter.request_url(target, proxies) == urldefragauth(url))
    pools[key] = found
    return found


def _path(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _answer(raw: Any, url: str, adapter: requests.adapters.HTTPAdapter) -> requests.Response:
    """The urllib3 answer as a `requests.Response` (no cookies: inboxd keeps none)."""
    r = requests.Response()
    r.status_code = raw.status
    r.headers = CaseInsensitiveDict(raw.headers)
    r.raw = raw
    r.reason = raw.reason
    r.url = url
    r.connection = adapter
    return r
