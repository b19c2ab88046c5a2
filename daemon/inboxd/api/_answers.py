"""Answers from servers inboxd does not trust: ids and urls checked before they go into a
request, bodies read with a bound (`MAX_ANSWER`), JSON parsed only from what was read, error
texts cut short; small answers read at once so their connection goes back to the pool."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.utils

from ._errors import ProtocolError

MAX_ANSWER = 2**20  # the most of an answer body ever read into memory
PRELOAD_MAX = 2**16  # an answer declaring at most this many bytes is read at once (keep-alive)
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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


def preload(response: requests.Response) -> None:
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
