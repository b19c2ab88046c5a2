"""The daemon's hooks into the operations layer (`inboxd.service`, issue 6): sd_notify and
metrics. Until that package lands, these are no-ops; each call is one line in the daemon.
"""

from __future__ import annotations

from typing import Any

from ..config import Config


class NoService:
    def ready(self, daemon: Any) -> None: ...
    def tick(self, daemon: Any) -> None: ...
    def observe(self, event: str, job: Any) -> None: ...
    def stopping(self, daemon: Any) -> None: ...


def make_service(config: Config) -> Any:
    return NoService()
