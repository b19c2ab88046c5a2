"""The control endpoints under /v1/_emulator/ (bearer auth like the API): `GET stats`,
`POST faults` (rates and clocks), `POST script` (one-shot faults), `POST batches` (scripted batch
outcomes, create answers and cut downloads: see `_batches`), `POST reset`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._batch_script import bad_entries as bad_batch_entries
from ._faults import HOSTILE, bad_entries

if TYPE_CHECKING:
    from ._request import Controls, Request

PREFIX = "/v1/_emulator/"


def _stats(h: Request, emu: Controls) -> None:
    h.drain()
    h.send(200, emu.stats())


def _faults(h: Request, emu: Controls) -> None:
    values = json.loads(h.read_small() or b"{}")
    emu.set_faults(values)
    h.send(200, emu.settings_dict())


def _script(h: Request, emu: Controls) -> None:
    entries = json.loads(h.read_small() or b"[]")
    bad = bad_entries(entries)
    if bad:
        h.send(400, {"error": {"message": f"bad script entries: {bad}", "hostile_modes": sorted(HOSTILE)}})
        return
    emu.add_script(entries)
    h.send(200, {"script": emu.script_snapshot()})


def _batch_script(h: Request, emu: Controls) -> None:
    entries = json.loads(h.read_small() or b"[]")
    bad = bad_batch_entries(entries)
    if bad:
        h.send(400, {"error": {"message": f"bad batch script entries: {bad}"}})
        return
    emu.batches.script.add(entries)
    h.send(200, {"batch_script": emu.batches.script.snapshot()})


def _reset(h: Request, emu: Controls) -> None:
    h.drain()
    emu.reset()
    h.send(200, {"reset": True})


CONTROL: dict[tuple[str, str], Callable[[Request, Controls], None]] = {
    ("GET", "stats"): _stats,
    ("POST", "faults"): _faults,
    ("POST", "script"): _script,
    ("POST", "batches"): _batch_script,
    ("POST", "reset"): _reset,
}


def control(h: Request, emu: Controls, method: str, path: str) -> None:
    what = path[len(PREFIX):]
    answer = CONTROL.get((method, what))
    if answer is None:
        h.error(404, f"no control route {method} {what}")
    answer(h, emu)
