"""The emulator as a server: the listeners, the hashing thread pool, the faults and script it
runs with, its stats. Nothing starts at import time: threads begin in `start()` and end in `stop()`.
"""

from __future__ import annotations

import signal
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ._batches import BatchBook
from ._faults import Script
from ._handler import Handler
from ._other_host import OtherHostHandler
from ._settings import EmulatorSettings, Faults
from ._store import Store


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    emulator: Emulator


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
        self.store = Store(Path(data_dir), self.settings.processing_delay_seconds)
        self.batches = BatchBook(self.store, self.settings.batch_seconds)
        self.stopping = threading.Event()
        self.other_host = {"requests": 0, "auth_headers": 0}
        self.script = Script()
        self._hashers: ThreadPoolExecutor | None = None
        self._servers: list[Server] = []

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
        self._hashers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="emulator-hash")
        main = Server((self.settings.host, self.settings.port), Handler)
        main.emulator = self
        try:
            other = Server(("127.0.0.2", 0), OtherHostHandler)
        except OSError:
            other = Server(("127.0.0.1", 0), OtherHostHandler)
        other.emulator = self
        self._servers = [main, other]
        for srv in self._servers:
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                             name=f"emulator-{srv.server_address[1]}").start()
        return self

    @property
    def origin(self) -> str:
        host, port = self._servers[0].server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def other_origin(self) -> str:
        host, port = self._servers[1].server_address[:2]
        return f"http://{host!s}:{port}"

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
        with self.store.lock:
            self.faults.update(values)
            if "url_ttl_seconds" in values:
                self.url_ttl = float(values["url_ttl_seconds"])
            if "processing_delay_seconds" in values:
                self.store.processing_delay = float(values["processing_delay_seconds"])
            if "batch_seconds" in values:  # for jobs created from now on
                self.batches.seconds = float(values["batch_seconds"])

    def settings_dict(self) -> dict[str, Any]:
        return {**vars(self.faults), "url_ttl_seconds": self.url_ttl,
                "processing_delay_seconds": self.store.processing_delay, "batch_seconds": self.batches.seconds}

    def add_script(self, entries: list[dict[str, Any]]) -> None:
        self.script.add(entries)

    def script_snapshot(self) -> list[dict[str, Any]]:
        return self.script.snapshot()

    def take_script(self, route: str, part_number: int | None) -> dict[str, Any] | None:
        return self.script.take(route, part_number)

    def reset(self) -> None:
        self.script.clear()
        self.batches.reset()
        self.batches.seconds = self.settings.batch_seconds
        with self.store.lock:
            self.faults.__init__()  # type: ignore[misc]
            self.url_ttl = self.settings.url_ttl_seconds
            self.store.processing_delay = self.settings.processing_delay_seconds
            self.store.requests.clear()
            self.store.statuses.clear()
            self.store.faults_injected.clear()
            self.store.storage_auth_headers = 0
            self.store.events.clear()
            self.store.creates_by_sha256.clear()
            self.other_host.update(requests=0, auth_headers=0)

    def stats(self) -> dict[str, Any]:
        out = self.store.stats()
        with self.store.lock:
            out["other_host"] = dict(self.other_host)
        out["script_left"] = self.script.snapshot()
        out.update(self.batches.stats())
        return out


def serve_forever(settings: EmulatorSettings) -> int:
    """`inboxd emulator`: print the base url as the first line, serve until SIGTERM/SIGINT."""
    emu = Emulator(settings).start()
    print(emu.base_url, flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    emu.stop()
    return 0
