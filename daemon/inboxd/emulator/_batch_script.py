"""The batch script (`POST /v1/_emulator/batches`): one-shot entries consumed in order, each
used once (or "times" times). See `_batches` for what each entry does."""

from __future__ import annotations

import threading
from typing import Any

OUTCOMES = {"COMPLETED", "FAILED", "EXPIRED", "CANCELLED"}
_KINDS = ("outcome", "create_status", "cut_download")


def _entry_ok(e: Any) -> bool:
    if not isinstance(e, dict) or sum(k in e for k in _KINDS) != 1:
        return False
    if "outcome" in e:
        frac = e.get("fraction", 0.5)
        return e["outcome"] in OUTCOMES and isinstance(frac, (int, float)) and 0 <= frac <= 1
    if "create_status" in e:
        return isinstance(e["create_status"], int) and 400 <= e["create_status"] <= 599
    return isinstance(e["cut_download"], (int, float)) and 0 <= e["cut_download"] < 1


def bad_entries(entries: Any) -> list[Any]:
    """The entries that are not one of the script's shapes (all of them when not a list)."""
    if not isinstance(entries, list):
        return [entries]
    return [e for e in entries if not _entry_ok(e)]


class BatchScript:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    def add(self, entries: list[dict[str, Any]]) -> None:
        with self.lock:
            for e in entries:
                self._entries.append({**e, "times": int(e.get("times", 1))})

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(e) for e in self._entries]

    def take(self, kind: str, match: Any = None) -> dict[str, Any] | None:
        """The first entry of this kind (for this file id, when it names one), used once."""
        with self.lock:
            for e in self._entries:
                if kind in e and (match is None or e.get("file_id") in (None, match)):
                    e["times"] -= 1
                    if e["times"] <= 0:
                        self._entries.remove(e)
                    return dict(e)
        return None

    def clear(self) -> None:
        with self.lock:
            self._entries.clear()
