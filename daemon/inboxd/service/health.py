"""The one rule of /healthz, as a pure function of the daemon's facts."""

from __future__ import annotations

from typing import Any


def health_verdict(*, paused: bool, watches_alive: bool, inboxes_missing: list[str], waiting: int,
                   last_success: float | None, started: float, now: float,
                   stale_seconds: float, stuck: dict[str, str] | None = None,
                   held: dict[str, str] | None = None,
                   undeliverable: list[str] | None = None,
                   events_behind: list[str] | None = None) -> tuple[bool, dict[str, Any]]:
    """Unhealthy while the key is rejected, a watch is lost (or an inbox folder is missing), a
    file is stuck (visible for more than 3 rescans, never claimed; `stuck` maps it to why), an
    inbox is not claimed from because this daemon's settings differ from its other daemons'
    (`held` maps the inbox to why), an event sink's oldest pending event is older than its
    threshold (`events_behind` says which), or nothing has succeeded for `stale_seconds` while
    work waits."""
    problems = []
    if paused:
        problems.append("the API rejects the key; uploads are paused")
    if not watches_alive:
        problems.append("a watch is lost")
    if inboxes_missing:
        problems.append(f"inbox folders missing: {', '.join(inboxes_missing)}")
    for inbox, why in (held or {}).items():
        problems.append(f"not claiming in {inbox}: {why}")
    if stuck:
        problems.append(f"{len(stuck)} files visible for more than 3 rescans and not claimed")
    problems += list(undeliverable or [])  # batch results whose outbox cannot be written, and why
    problems += list(events_behind or [])
    since = now - (last_success if last_success is not None else started)
    if waiting > 0 and since > stale_seconds:
        problems.append(f"{waiting} files wait and nothing succeeded for {int(since)} s")
    body = {"healthy": not problems, "problems": problems, "paused": paused, "watches_alive": watches_alive,
            "waiting": waiting, "seconds_since_success": round(since, 1), "stuck": dict(stuck or {}),
            "held": dict(held or {})}
    return not problems, body
