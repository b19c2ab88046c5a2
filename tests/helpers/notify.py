"""systemd's end of $NOTIFY_SOCKET for tests: a datagram socket bound at a path (or "@name",
an abstract address), read without blocking."""

from __future__ import annotations

import socket


class NotifySocket:
    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)

    def messages(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()
