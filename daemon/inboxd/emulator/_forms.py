"""Request fields, wherever the client put them: the query string, a JSON body, a urlencoded
form or a multipart form."""

from __future__ import annotations

import email.parser
import email.policy
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from ._wire import Done

if TYPE_CHECKING:
    from ._request import Request


def params(h: Request, query: dict[str, str]) -> dict[str, Any]:
    """Fields from the query string, a JSON body, a urlencoded form or a multipart form."""
    body = h.read_small()
    out: dict[str, Any] = dict(query)
    ctype = h.headers.get("Content-Type", "")
    if not body:
        return out
    if ctype.startswith("application/json") or body[:1] in (b"{", b"["):
        try:
            data = json.loads(body)
        except ValueError:
            h.send(400, {"error": {"message": "body is not valid JSON"}})
            raise Done from None
        if isinstance(data, dict):
            out.update(data)
    elif ctype.startswith("multipart/form-data"):
        out.update(_multipart_form(ctype, body))
    else:
        out.update(dict(parse_qsl(body.decode("utf-8", "replace"))))
    return out


def _multipart_form(ctype: str, body: bytes) -> dict[str, str]:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode("latin-1") + body)
    out: dict[str, str] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True)
            out[str(name)] = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return out
