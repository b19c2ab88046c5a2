"""A bounded, de-duplicated queue of paths: what observer handlers write into.

`put` never blocks and never raises: when the queue is full the path is dropped and the
queue remembers that it overflowed, so the daemon rescans every inbox instead. The capacity
is a memory bound (a few hundred bytes a path): a burst larger than it is found by the scan.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class PathQueue:
    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._items: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self._cond = threading.Condition()
        self._overflowed = False
        self._woken = False
        self._events: dict[str, set[str]] = {}

    def put(self, inbox: str, path: str, moved_in: bool = False, event: str = "") -> None:
        """Ask the daemon to look at `path` of `inbox` again; `moved_in` marks a rename into it;
        `event` ("created", "closed") is remembered as evidence for readiness (`take_events`)."""
        try:
            with self._cond:
                key = (inbox, path)
                if event and len(self._events) < self._capacity:
                    self._events.setdefault(path, set()).add(event)
                if key in self._items:
                    self._items[key] = self._items[key] or moved_in
                elif len(self._items) >= self._capacity:
                    self._overflowed = True
                else:
                    self._items[key] = moved_in
                self._cond.notify()
        except Exception:  # noqa: BLE001 - a handler must never raise
            self._overflowed = True

    def wake(self) -> None:
        """Wake the consumer without a path (a worker finished: room to claim more)."""
        with self._cond:
            self._woken = True
            self._cond.notify()

    def mark_overflow(self) -> None:
        """Events were lost somewhere (the kernel's queue, a watch restart): rescan."""
        with self._cond:
            self._overflowed = True
            self._cond.notify()

    def take_all(self, timeout: float) -> tuple[list[tuple[str, str, bool]], bool]:
        """Wait up to `timeout` for paths; return them and whether an overflow happened since."""
        with self._cond:
            if not self._items and not self._overflowed and not self._woken and timeout > 0:
                self._cond.wait(timeout)
            self._woken = False
            items = [(inbox, path, moved) for (inbox, path), moved in self._items.items()]
            self._items.clear()
            overflowed, self._overflowed = self._overflowed, False
            return items, overflowed

    def take_events(self) -> dict[str, set[str]]:
        """The event kinds seen per path since the last call (call right after `take_all`)."""
        with self._cond:
            events, self._events = self._events, {}
            return events

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
