"""Typed errors of the Files API client. Messages name the route and the status, never the
key, never a presigned url's query string.

    ApiError
    ├── AuthError           401/403 from the API, 407 from the proxy, a certificate that cannot be
    │                       verified: configuration, not the file's fault (the daemon pauses)
    ├── TransientError      429, 5xx, resets, idle timeouts after the retries: try later
    ├── RejectedError       the server refused this file (a 4xx about it, processing FAILED)
    │   └── BatchRejected   (api/_batches.py) a 4xx on POST /batches: never created again
    ├── ProtocolError       an answer that breaks the protocol (hostile or broken server)
    ├── SourceChangedError  the file changed while it was read: check and upload it again
    ├── UrlExpiredError     storage refused a presigned url: restart with fresh urls
    └── Cancelled           the caller asked to stop (shutdown); not asyncio's CancelledError

The pipeline's own model of a failed file is `pipeline.failure.Failure`.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    kind = "api"

    def __init__(self, message: str, *, route: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.route = route
        self.status = status


class AuthError(ApiError):
    """The API refused the key (401/403): a configuration problem, not the file's."""

    kind = "auth"


class TransientError(ApiError):
    """429, 5xx, resets, idle timeouts: retries were exhausted; trying later may work."""

    kind = "transient"


class RejectedError(ApiError):
    """The server refused this file (4xx about it, or processing ended FAILED/INVALID_FORMAT)."""

    kind = "rejected"

    def __init__(self, message: str, *, route: str | None = None, status: int | None = None,
                 report: Any = None) -> None:
        super().__init__(message, route=route, status=status)
        self.report = report


class ProtocolError(ApiError):
    """An answer that breaks the protocol: missing or unsafe Location, bad file id, no ETag,
    a body that is not JSON or too large, a redirect where none belongs."""

    kind = "protocol"


class SourceChangedError(ApiError):
    """The file changed (size or mtime) while it was being uploaded."""

    kind = "source_changed"


class Cancelled(ApiError):
    """The caller asked to stop (shutdown)."""

    kind = "cancelled"


class UrlExpiredError(ApiError):
    """A presigned url was refused by storage (403): the upload restarts with fresh urls."""

    kind = "url_expired"
