"""The emulator as a server: the listeners, the hashing thread pool, the faults and script it
runs with, its stats. Nothing starts at import time: threads begin in `start()` and end in `stop()`.

With `tls` (`inboxd emulator --tls`) every listener speaks HTTPS: at start a throwaway CA and a
server certificate for 127.0.0.1, localhost, ::1 and 127.0.0.2 (the "other host" listener) are
made with trustme, imported only then, so nothing else needs it. The CA certificate (never its
key) is written to `<data dir>/emulator-ca.pem`, `ca_path`, for clients to trust (`api.ca_bundle`,
REQUESTS_CA_BUNDLE). The handshake runs in the connection's own thread, not in the accept loop,
so a client that refuses the certificate, or never speaks, holds up no one. Every url the
emulator hands out (presigned storage urls, the other host) is built from `origin`, so with TLS
they are https too.

The handlers reach the emulator through `_request.Controls`, which `Emulator` is: the server
knows the handler, the handler does not know the server.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ._batch_jobs import BatchBook, BatchKnobs
from ._faults import Script
from ._handler import Handler
from ._listener import Listener
from ._other_host import OtherHostHandler
from ._settings import EmulatorSettings, Faults
from ._store import Store

CA_FILE = "emulator-ca.pem"
TLS_NAMES = ("127.0.0.1", "localhost", "::1", "127.0.0.2")  # 127.0.0.2: the other host's listener


def make_tls(names: list[str], ca_path: Path) -> ssl.SSLContext:
    """A throwaway CA (its certificate written to `ca_path`) and a server context with a
    certificate it signed for `names`."""
    try:
        import trustme
    except ImportError:
        raise RuntimeError("the emulator's --tls needs the trustme package: pip install 'inboxd[tls]'") from None
    ca = trustme.CA(organization_name="inboxd emulator")
    cert = ca.issue_cert(*names)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    tmp = ca_path.with_name(f".{ca_path.name}.{os.getpid()}.tmp")
    ca.cert_pem.write_to_path(str(tmp))
    os.replace(tmp, ca_path)  # a reader never sees half a file
    return ctx


def _tls_names(host: str) -> list[str]:
    names = list(TLS_NAMES)
    if host and host not in names and host not in ("0.0.0.0", "::"):
        names.append(host)
    if host in ("0.0.0.0", "::"):
        names.append(socket.gethostname())
    return names


class Emulator:
    """The Files API on loopback. `start()` serves in background threads; `stop()` ends it."""

    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self.faults = Faults(**vars(self.settings.faults))
        self.url_ttl = self.settings.url_ttl_seconds
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        data_dir = self.settings.data_dir
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="inboxd-emulator-")
            data_dir = Path(self._tmp.name)
        self.data_dir = Path(data_dir)
        self.store = Store(self.data_dir, self.settings.processing_delay_seconds)
        self.ca_path: Path | None = None  # with tls: the CA certificate clients must trust
        s = self.settings
        self.batches = BatchBook(self.store, BatchKnobs(s.batch_seconds, s.batch_max_requests, s.batch_max_bytes,
                                                        s.batch_transient_rate))
        self.batches.expire_next(s.batch_expire_next)
        self.stopping = threading.Event()
        self.script = Script()
        self._lock = threading.Lock()  # the faults and the url ttl, as the control endpoints set them
        self._hashers: ThreadPoolExecutor | None = None
        self._servers: list[Listener] = []

    @property
    def key(self) -> str:
        return self.settings.key

    @property
    def hashers(self) -> ThreadPoolExecutor:
        """Hashes a storage PUT's chunks (md5 and sha256) while the next one is read."""
        if self._hashers is None:
            raise RuntimeError("the emulator is not started")
        return self._hashers

    def start(self) -> Emulator:
        tls = None
        if self.settings.tls:
            ca_path = self.data_dir / CA_FILE
            tls = make_tls(_tls_names(self.settings.host), ca_path)
            self.ca_path = ca_path
        self._hashers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="emulator-hash")
        main = Listener((self.settings.host, self.settings.port), Handler)
        main.emulator = self
        try:
            other = Listener(("127.0.0.2", 0), OtherHostHandler)
        except OSError:
            other = Listener(("127.0.0.1", 0), OtherHostHandler)
        other.emulator = self
        self._servers = [main, other]
        for srv in self._servers:
            srv.tls = tls
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                             name=f"emulator-{srv.server_address[1]}").start()
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.settings.tls else "http"

    @property
    def origin(self) -> str:
        host, port = self._servers[0].server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"

    @property
    def other_origin(self) -> str:
        host, port = self._servers[1].server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def stop(self) -> None:
        self.stopping.set()
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        if self._hashers is not None:
            self._hashers.shutdown(wait=True, cancel_futures=True)
            self._hashers = None
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- control -------------------------------------------------------------------------------

    def set_faults(self, values: dict[str, Any]) -> None:
        with self._lock:
            self.faults.update(values)
            if "url_ttl_seconds" in values:
                self.url_ttl = float(values["url_ttl_seconds"])
            if "processing_delay_seconds" in values:
                self.store.set_processing_delay(float(values["processing_delay_seconds"]))
            self.batches.knobs.update(values)  # batch_*: for jobs created from now on
            self.batches.expire_next(int(values.get("batch_expire_next", 0)))

    def settings_dict(self) -> dict[str, Any]:
        return {**vars(self.faults), "url_ttl_seconds": self.url_ttl,
                "processing_delay_seconds": self.store.processing_delay, **self.batches.knobs.as_dict()}

    def add_script(self, entries: list[dict[str, Any]]) -> None:
        self.script.add(entries)

    def script_snapshot(self) -> list[dict[str, Any]]:
        return self.script.snapshot()

    def take_script(self, route: str, part_number: int | None) -> dict[str, Any] | None:
        return self.script.take(route, part_number)

    def reset(self) -> None:
        self.script.clear()
        self.batches.reset()
        with self._lock:
            self.faults.__init__()  # type: ignore[misc]
            self.url_ttl = self.settings.url_ttl_seconds
            self.store.set_processing_delay(self.settings.processing_delay_seconds)
            self.store.counts.clear()

    def stats(self) -> dict[str, Any]:
        out = self.store.stats()
        out["script_left"] = self.script.snapshot()
        out.update(self.batches.stats())
        return out


def serve_forever(settings: EmulatorSettings) -> int:
    """`inboxd emulator`: print the base url as the first line (with TLS the CA file's path as
    the second), serve until SIGTERM/SIGINT."""
    emu = Emulator(settings).start()
    print(emu.base_url, flush=True)
    if emu.ca_path is not None:
        print(emu.ca_path, flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    emu.stop()
    return 0
