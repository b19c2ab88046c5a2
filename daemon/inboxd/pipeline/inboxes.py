"""One inbox as the daemon loop sees it: its config, its watch, its claim area, and the
files that are ready but not yet claimed.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog

from ..config import InboxConfig
from ..watch.observers import Watch, make_watch
from ..watch.queue import PathQueue
from .claim import ClaimArea, Liveness

log = structlog.get_logger("inboxd.daemon")


class InboxState:
    def __init__(self, config: InboxConfig, claimer: str, liveness: Liveness | None = None) -> None:
        self.config = config
        self.key = str(config.path)
        self.area = ClaimArea(config.work, claimer, liveness)
        self.watch: Watch | None = None
        self.ready: OrderedDict[str, None] = OrderedDict()
        self.missing = False
        self.scanned = False
        # why this daemon does not claim here: its settings differ from those the inbox's live
        # daemons run with (`fingerprint.SettingsGate`); None: it claims
        self.held: str | None = None

    @property
    def skip(self) -> tuple[str, ...]:
        """Names of our own folders when they live inside the inbox (patterns like "*"), and the
        folder of the inbox that holds its batch outbox (else a pattern such as "*" would send
        the outbox to failed/ as a directory)."""
        out = []
        for folder in (self.config.done, self.config.failed, self.config.work):
            if folder.parent == self.config.path:
                out.append(folder.name)
        outbox = self.config.batch.outbox if self.config.batch is not None else None
        if outbox is not None and outbox != self.config.path and outbox.is_relative_to(self.config.path):
            out.append(outbox.relative_to(self.config.path).parts[0])
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


class Fatal(Exception):
    """The daemon cannot go on (a watch died): exit non-zero so systemd restarts it."""


class InboxSet:
    """The inboxes the daemon serves, keyed by folder, and the diff a reload applies.

    Inboxes removed by a reload are `retired`: no longer watched, but their claim folders
    are still released (or removed) at shutdown.
    """

    def __init__(self, claimer: str, liveness: Liveness | None = None) -> None:
        self.claimer = claimer
        self.liveness = liveness or Liveness()
        self.states: dict[str, InboxState] = {}
        self.retired: list[InboxState] = []

    def __iter__(self) -> Iterator[InboxState]:
        return iter(list(self.states.values()))

    def __len__(self) -> int:
        return len(self.states)

    def get(self, key: str) -> InboxState | None:
        return self.states.get(key)

    def of_path(self, path: str) -> InboxState | None:
        """The inbox a file path lies in (inboxes are not recursive)."""
        return self.states.get(os.path.dirname(path))

    def add(self, config: InboxConfig, queue: PathQueue) -> InboxState:
        """Create its folders and claim area, then schedule its watch (the caller scans after)."""
        state = InboxState(config, self.claimer, self.liveness)
        state.prepare()
        self.states[state.key] = state
        state.start_watch(queue)
        return state

    def retire(self, key: str) -> InboxState:
        state = self.states.pop(key)
        state.stop_watch()
        self.retired.append(state)
        return state

    @staticmethod
    def diff(old: list[InboxConfig], new: list[InboxConfig]) -> tuple[list[str], list[InboxConfig], list[InboxConfig]]:
        """(keys removed, configs changed, configs added) between two inbox lists."""
        old_by = {str(i.path): i for i in old}
        new_by = {str(i.path): i for i in new}
        removed = [k for k in old_by if k not in new_by]
        changed = [new_by[k] for k in new_by if k in old_by and new_by[k] != old_by[k]]
        added = [new_by[k] for k in new_by if k not in old_by]
        return removed, changed, added

    def all_areas(self) -> list[InboxState]:
        return list(self.states.values()) + self.retired

    def watches_alive(self) -> bool:
        return all(s.watch_ok() for s in self.states.values() if not s.missing)

    def missing(self) -> list[str]:
        return [s.key for s in self.states.values() if s.missing]

    def check_watches(self, paths: PathQueue, *, scan: Callable[[InboxState], None],
                      forget: Callable[[str], None]) -> None:
        """A folder that came back is watched and scanned again; a folder that is gone is marked
        missing (its readiness forgotten); a watch that died on a folder still there is Fatal."""
        for state in self:
            if state.missing:
                if state.folder_exists():
                    state.missing = False
                    state.prepare()
                    state.start_watch(paths)
                    scan(state)
                    log.warning("inbox.restored", inbox=state.key)
                continue
            if state.watch_ok():
                continue
            if not state.folder_exists() or (state.watch is not None and not state.watch.folder_present()):
                state.missing = True
                state.stop_watch()
                state.ready.clear()
                forget(state.key)
                log.error("inbox.missing", inbox=state.key,
                          hint="the inbox folder is gone; it is watched again once it is recreated")
                continue
            raise Fatal(f"the watch of {state.key} died; exiting so that the service manager restarts inboxd")
