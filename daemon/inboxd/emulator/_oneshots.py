"""Scripted one-shot entries, consumed in order of matching: each is used once, or `times`
times. The fault script and the batch script are both such lists; only what an entry matches
differs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class OneShots:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    def add(self, entries: list[dict[str, Any]]) -> None:
        with self._lock:
            for e in entries:
                self._entries.append({**e, "times": int(e.get("times", 1))})

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._entries]

    def take_first(self, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The first entry that `matches`, used once (dropped when used up)."""
        with self._lock:
            for e in self._entries:
                if matches(e):
                    e["times"] -= 1
                    if e["times"] <= 0:
                        self._entries.remove(e)
                    return dict(e)
        return None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
