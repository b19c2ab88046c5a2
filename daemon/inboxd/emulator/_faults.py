"""Fault injection: random faults (rates in `Faults`), scripted one-shot faults, hostile modes.

Scripted entries are consumed in order of matching: {"route": R, "status": S, "times": N,
"part_number": P?} answers R with S; {"route": R, "hostile": MODE} answers with a hostile
reply. Hostile modes that need no state are answered here; the others (a bad Location, a
bad file id, no ETag) are left in `handler.pending_hostile` for the route to apply.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from ._oneshots import OneShots
from ._wire import Done

if TYPE_CHECKING:
    from ._request import Request

HOSTILE = {"no_location", "file_location", "other_host_location", "bad_file_id", "no_etag", "garbage_json",
           "hang", "huge_content_length", "redirect_loop"}


def retry_after_headers(seconds: float) -> dict[str, str]:
    """What a 429 carries: Retry-After in (possibly fractional) seconds, retry-after-ms."""
    return {"Retry-After": f"{seconds:g}", "retry-after-ms": str(int(seconds * 1000))}


def injected(h: Request, kind: str) -> None:
    h.store.counts.injected(kind)


class Script(OneShots):
    """The scripted one-shot faults, consumed in order of matching."""

    def take(self, route: str, part_number: int | None) -> dict[str, Any] | None:
        return self.take_first(lambda e: e.get("route") == route and e.get("part_number") in (None, part_number))


def bad_entries(entries: Any) -> list[Any]:
    """The entries of a script that cannot be run (not objects, or an unknown hostile mode)."""
    return [e for e in entries if not isinstance(e, dict) or (e.get("hostile") and e["hostile"] not in HOSTILE)]


# -- where faults strike --------------------------------------------------------------------------


def api_faults(h: Request) -> None:
    """Before an API route answers: slowness, a scripted answer, a random 429 or 500."""
    faults = h.emu.faults
    if faults.slow_seconds:
        time.sleep(faults.slow_seconds)
    script = h.emu.take_script(h.route, None)
    if script:
        apply_script(h, script)
    if random.random() < faults.rate_limit_rate:
        injected(h, "rate_limit")
        h.drain()
        h.send(429, {"error": {"message": "rate limited"}}, retry_after_headers(faults.retry_after_seconds))
        raise Done
    if random.random() < faults.error_rate:
        injected(h, "error")
        h.error(500, "injected server error")


def storage_faults(h: Request, part_number: int | None) -> bool:
    """Before a storage PUT is received: slowness, a scripted answer, a random 503.
    True if the answer must leave out its ETag (hostile mode no_etag)."""
    faults = h.emu.faults
    if faults.slow_seconds:
        time.sleep(faults.slow_seconds)
    script = h.emu.take_script(h.route, part_number)
    no_etag = script is not None and script.get("hostile") == "no_etag"
    if no_etag:
        injected(h, "hostile_no_etag")
    elif script:
        apply_script(h, script)
    if random.random() < faults.part_error_rate:
        injected(h, "storage_503")
        h.drain()
        h.send(503, "<Error><Code>SlowDown</Code></Error>", {"Content-Type": "application/xml"})
        raise Done
    return no_etag


def drop_point(h: Request, length: int) -> int | None:
    """Where to cut a storage PUT's body (random drop_rate), or None to take it all."""
    return length // 2 if length and random.random() < h.emu.faults.drop_rate else None


# -- scripted answers -----------------------------------------------------------------------------


def apply_script(h: Request, script: dict[str, Any]) -> None:
    """Answer with a scripted status or hostile behaviour (for routes other than the ones
    whose hostile answers need real state: those are handled where the answer is made)."""
    hostile = script.get("hostile")
    if hostile is None:
        _scripted_status(h, script)
    injected(h, f"hostile_{hostile}")
    answer = _HOSTILE_NOW.get(hostile)
    if answer is None:
        h.pending_hostile = hostile  # answered by the route itself
        return
    h.drain()
    answer(h, script)
    raise Done


def take_hostile(h: Request) -> str | None:
    """The hostile mode the route must apply to its answer, once."""
    value, h.pending_hostile = h.pending_hostile, None
    return value


def _scripted_status(h: Request, script: dict[str, Any]) -> NoReturn:
    status = int(script.get("status", 500))
    injected(h, f"scripted_{status}")
    h.drain()
    headers = {}
    if status == 429:
        headers = retry_after_headers(float(script.get("retry_after", h.emu.faults.retry_after_seconds)))
    h.send(status, {"error": {"message": f"scripted {status}"}}, headers)
    raise Done


def _hang(h: Request, script: dict[str, Any]) -> None:
    h.emu.stopping.wait(float(script.get("seconds", 300)))
    h.abort_connection()


def _garbage_json(h: Request, script: dict[str, Any]) -> None:
    h.send(200, b"<html>this is not json{", {"Content-Type": "application/json"})


def _huge_content_length(h: Request, script: dict[str, Any]) -> None:
    h.send(200, b'{"id": "file-', {"Content-Type": "application/json"}, content_length=5 * 10**9, close=True)
    h.abort_connection()


def _redirect_loop(h: Request, script: dict[str, Any]) -> None:
    h.send(307, b"", {"Location": h.path})


_HOSTILE_NOW: dict[str, Callable[[Request, dict[str, Any]], None]] = {
    "hang": _hang,
    "garbage_json": _garbage_json,
    "huge_content_length": _huge_content_length,
    "redirect_loop": _redirect_loop,
}
