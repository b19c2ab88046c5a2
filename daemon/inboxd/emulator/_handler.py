"""One request: which part of the emulator it is for, and the bookkeeping every route shares
(request and status counts, bearer auth, faults before an API answer).

  /_storage/...      the storage host (presigned PUTs)               -> _storage
  /v1/_emulator/...  the control endpoints                           -> _control
  an Api's root      the API routes, through the Api's route table   -> APIS
                     (/v1/files, /v1/batches, /v3/whoami)

`Handler` is the one concrete request: the routes see it as a `_request.Request`, and it sees
the emulator as a `_request.Controls` (its listener's `emulator`), never the server's class.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from . import _faults
from ._batches import BATCHES
from ._control import PREFIX as CONTROL_PREFIX
from ._control import control
from ._files import FILES
from ._identity import IDENTITY
from ._routing import Api
from ._storage import storage_put
from ._wire import Done, WireHandler

if TYPE_CHECKING:
    from ._listener import Listener
    from ._request import Controls
    from ._store import Store

APIS: tuple[Api, ...] = (FILES, BATCHES, IDENTITY)


class Handler(WireHandler):
    server: Listener
    route = "unknown"
    pending_hostile: str | None = None  # a scripted hostile mode the route applies to its answer

    @property
    def emu(self) -> Controls:
        return self.server.emulator

    @property
    def store(self) -> Store:
        return self.server.emulator.store

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def before_answer(self) -> None:
        """--latency-ms: every API and storage answer waits (the control endpoints do not)."""
        latency = self.emu.settings.latency_ms
        if latency > 0 and self.route != "control":
            time.sleep(latency / 1000)

    def record_status(self, status: int) -> None:
        self.store.counts.status(self.route, status)

    def count(self) -> None:
        self.store.counts.request(self.route)

    def auth(self) -> None:
        if self.headers.get("Authorization", "") != f"Bearer {self.emu.settings.key}":
            self.error(401, "Invalid API key provided", code="invalid_api_key")

    def dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, dict(parse_qsl(parts.query))
        self.route, self.pending_hostile = "unknown", None
        self._body_read = False
        try:
            self._route(method, path, query)
        except Done:
            pass
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        if path.startswith("/_storage/"):
            self.route = "part_put" if path.startswith("/_storage/p/") else "put"
            self.count()
            if method != "PUT":
                self.error(405, "storage urls take PUT")
            storage_put(self, path, query)
            return
        if path.startswith(CONTROL_PREFIX):
            self.route = "control"
            self.auth()
            control(self, self.emu, method, path)
            return
        api = next((a for a in APIS if a.owns(path)), None)
        if api is None:
            self.error(404, f"no route {method} {path}")
        self.route, path_id, answer = api.route(method, path)
        self.count()
        self.auth()
        _faults.api_faults(self)
        answer(self, path_id, query)
