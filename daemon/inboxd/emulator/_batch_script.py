"""The batch script (`POST /v1/_emulator/batches`): one-shot entries consumed in order, each
used once (or "times" times). See `_batches` for what each entry does."""

from __future__ import annotations

from typing import Any

from ._oneshots import OneShots

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


class BatchScript(OneShots):
    def take(self, kind: str, match: Any = None) -> dict[str, Any] | None:
        """The first entry of this kind (for this file id, when it names one), used once."""
        return self.take_first(lambda e: kind in e and (match is None or e.get("file_id") in (None, match)))
