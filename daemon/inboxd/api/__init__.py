"""The Files API client (SPEC §1): streamed single uploads, multipart with per-part retries,
typed errors, and untrusted answers checked before they are used."""

from ._answers import SAFE_ID
from ._client import FilesClient, UploadResult
from ._errors import (
    ApiError,
    AuthError,
    Cancelled,
    ProtocolError,
    RejectedError,
    SourceChangedError,
    TransientError,
    UrlExpiredError,
)
from ._models import FileObject
from ._network import Network, redact_proxy, resolve_network
from ._protocol import Client

__all__ = [
    "SAFE_ID", "ApiError", "AuthError", "Cancelled", "Client", "FileObject", "FilesClient", "Network", "ProtocolError",
    "RejectedError", "SourceChangedError", "TransientError", "UploadResult", "UrlExpiredError", "redact_proxy",
    "resolve_network",
]
