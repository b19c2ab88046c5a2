"""TLS failures told apart: a certificate the client refused (never retried: the CA or the
host is wrong) from a connection cut during the handshake (retried)."""

from __future__ import annotations

import re
import ssl


def certificate_refused(exc: BaseException) -> bool:
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


def ssl_reason(exc: BaseException) -> str:
    m = re.search(r"certificate verify failed: ([^()'\]]+)", str(exc))
    return m.group(1).strip() if m else "certificate verify failed"
