"""One inbox as the daemon loop sees it: its config, its watch, its claim area, and the
files that are ready but not yet claimed.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from ..config import InboxConfig
from ..watch.observers import Watch, make_watch
from ..watch.queue import PathQueue
from .claim import ClaimArea


class InboxState:
    def __init__(self, config: InboxConfig, claimer: str) -> None:
        self.config = config
        self.key = str(config.path)
        self.area = ClaimArea(config.work, claimer)
        self.watch: Watch | None = None
        self.ready: OrderedDict[str, None] = OrderedDict()
        self.missing = False
        self.scanned = False

    @property
    def skip(self) -> tuple[str, ...]:
        """Names of our own folders when they live inside the inbox (patterns like "*")."""
        out = []
        for folder in (self.config.done, self.config.failed, self.config.work):
            if folder.parent == self.config.path:
                out.append(folder.name)
        return tuple(out)

    def prepare(self) -> None:
        """Create the folders inboxd writes into, and hold our claim lock."""
        for folder in (self.config.path, self.config.done, self.config.failed):
            folder.mkdir(parents=True, exist_ok=True)
        self.area.ensure()

    def start_watch(self, queue: PathQueue) -> None:
        self.stop_watch()
        self.watch = make_watch(self.config.observer, self.key, self.config.path, queue)
        self.watch.start()

    def stop_watch(self) -> None:
        if self.watch is not None:
            self.watch.stop()
            self.watch = None

    def folder_exists(self) -> bool:
        return os.path.isdir(self.config.path) and not os.path.islink(self.config.path)

    def watch_ok(self) -> bool:
        return self.watch is not None and self.watch.alive() and self.watch.folder_present()

    def path_of(self, name: str) -> Path:
        return self.config.path / name
