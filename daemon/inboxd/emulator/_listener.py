"""A listener of the emulator: a threading HTTP server that knows the emulator it serves (as
`Controls`, what its handlers may read and change) and, with TLS, runs each handshake in the
connection's own thread, not in the accept loop, so a client that refuses the certificate, or
never speaks, holds up no one."""

from __future__ import annotations

import ssl
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._request import Controls

HANDSHAKE_TIMEOUT = 30.0


class Listener(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    emulator: Controls
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        """With TLS: the handshake, here in the connection's thread, then the handler."""
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)  # takes over the descriptor
        except (ssl.SSLError, OSError):
            return  # e.g. a client without our CA: it hangs up in the handshake ("unknown ca")
        conn.settimeout(None)
        try:
            super().finish_request(conn, client_address)
        finally:
            self.shutdown_request(conn)
