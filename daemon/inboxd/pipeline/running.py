"""What the operations hooks (`hooks.py`) and the stop (`shutdown.py`) see of a running
daemon: its parts, read-only, typed here so that neither imports the daemon that calls them."""

from __future__ import annotations

import threading
from typing import Protocol

from ..config import Config
from ..events import Events
from ..state.journal import Journal
from .claimer import Claimer
from .context import Context
from .inboxes import InboxSet
from .pause import AuthGate
from .work import WorkQueue
from .workers import Worker


class Running(Protocol):
    config: Config
    ctx: Context
    journal: Journal
    queue: WorkQueue
    inboxes: InboxSet
    workers: list[Worker]
    claimer: Claimer
    gate: AuthGate
    events: Events
    cancel: threading.Event
