"""What a route sees: the request it answers (`Request`) and the emulator it answers for
(`Service`; `Controls` adds what the control endpoints change).

The routes (`_files`, `_storage`, `_batches`, `_identity`, `_control`, `_faults`) are written
against these protocols, so none of them imports the request handler or the server:
`_handler.Handler` is the one class that is a `Request`, `_server.Emulator` the one that is a
`Controls`, and the handler reaches the emulator only through `Controls`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn, Protocol

if TYPE_CHECKING:
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from email.message import Message
    from pathlib import Path

    from ._batch_jobs import BatchBook
    from ._settings import EmulatorSettings, Faults
    from ._store import Store


class Service(Protocol):
    """What the API and storage routes (and the handler) read of the emulator."""

    @property
    def settings(self) -> EmulatorSettings: ...
    @property
    def faults(self) -> Faults: ...  # the random faults as set now
    @property
    def url_ttl(self) -> float: ...  # of the presigned urls handed out from now on
    @property
    def store(self) -> Store: ...
    @property
    def batches(self) -> BatchBook: ...
    @property
    def stopping(self) -> threading.Event: ...  # set when the emulator stops (a hang ends)
    @property
    def origin(self) -> str: ...  # scheme://host:port of the API and storage listener
    @property
    def other_origin(self) -> str: ...  # of the "other host" listener
    @property
    def hashers(self) -> ThreadPoolExecutor: ...  # hashes a storage PUT's chunks

    def take_script(self, route: str, part_number: int | None) -> dict[str, Any] | None:
        """The next scripted fault for this route (and part), consumed; None if there is none."""
        ...


class Controls(Service, Protocol):
    """What the control endpoints (/v1/_emulator/...) read and change."""

    def stats(self) -> dict[str, Any]: ...
    def set_faults(self, values: dict[str, Any]) -> None: ...
    def settings_dict(self) -> dict[str, Any]: ...
    def add_script(self, entries: list[dict[str, Any]]) -> None: ...
    def script_snapshot(self) -> list[dict[str, Any]]: ...
    def reset(self) -> None: ...


class Request(Protocol):
    """One request as a route answers it: what was asked, its body, the answer it sends."""

    route: str  # the route name (in stats, status counts and scripts)
    pending_hostile: str | None  # a scripted hostile mode the route applies to its answer
    close_connection: bool  # set: the connection closes after this answer

    @property
    def path(self) -> str: ...  # the request target, query string included
    @property
    def headers(self) -> Message: ...
    @property
    def emu(self) -> Service: ...
    @property
    def store(self) -> Store: ...

    # -- the body ---------------------------------------------------------------------------

    def content_length(self) -> int | None: ...
    def chunked(self) -> bool: ...
    def read_chunk(self, n: int) -> bytes: ...  # up to n bytes of the body (the route reads it itself)
    def mark_body_read(self) -> None: ...  # the route reads the body itself; `drain` must not
    def drain(self) -> None: ...  # read and forget the body (once)
    def read_small(self, limit: int = ...) -> bytes: ...  # the whole body; a 413 above `limit`

    # -- the answer -------------------------------------------------------------------------

    def send(self, status: int, body: Any = ..., headers: dict[str, str] | None = ..., *,
             close: bool = ..., content_length: int | None = ...) -> None:
        """A JSON answer (a dict or list body), or bytes or text as they are."""
        ...

    def send_file(self, status: int, headers: dict[str, str], path: Path, start: int, length: int) -> None: ...
    def error(self, status: int, message: str, **extra: Any) -> NoReturn: ...  # the API's JSON error; ends
    def abort_connection(self) -> None: ...  # cut the connection (RST)
