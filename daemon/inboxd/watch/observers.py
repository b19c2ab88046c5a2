"""Observers: one per inbox. They only put paths into the `PathQueue`; they decide nothing.

`InotifyWatch` uses a watchdog inotify observer with full move events, so a rename into the
folder is told apart from a create (`moved_in`); when the kernel's event queue overflows it
marks the `PathQueue`, and the daemon rescans every inbox. `PollingWatch` is inboxd's own loop over
`os.scandir` for network filesystems, where inotify sees nothing written by other hosts: it
reads names only (no stat per file) and reports new ones. Both say whether they are alive:
the thread runs and the folder still is the folder that was scheduled.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, EventQueue, ObservedWatch
from watchdog.observers.inotify import InotifyFullEmitter, InotifyWatchGroup
from watchdog.observers.inotify_c import InotifyConstants, InotifyFD, Mask
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

from .ignore import is_ignored_name
from .queue import PathQueue


class Watch(Protocol):
    folder: Path

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def alive(self) -> bool: ...
    def folder_present(self) -> bool: ...


def _inode(folder: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class _Enqueue(FileSystemEventHandler):
    """Puts file paths of the inbox folder into the queue; never raises."""

    def __init__(self, key: str, folder: str, queue: PathQueue) -> None:
        self._key, self._folder, self._queue = key, folder, queue

    def _put(self, path: str | bytes, moved_in: bool = False, event: str = "") -> None:
        p = os.fsdecode(path)
        if p and os.path.dirname(p) == self._folder and not is_ignored_name(os.path.basename(p)):
            self._queue.put(self._key, p, moved_in, event)

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.event_type in ("opened", "closed_no_write"):
                return
            if event.event_type == "moved":
                self._put(event.src_path)
                self._put(event.dest_path, moved_in=True)
            elif os.fsdecode(event.src_path) != self._folder:
                kind = {"created": "created", "closed": "closed"}.get(event.event_type, "")
                self._put(event.src_path, event=kind)
        except Exception:  # noqa: BLE001 - a raising handler kills the observer thread
            self._queue.mark_overflow()


# --- inboxd's inotify observer -----------------------------------------------------------
#
# watchdog 7's InotifyObserver(generate_full_events=True), with two changes that apply to
# inboxd's observers only (no watchdog class is changed for the process):
#
# * the kernel's queue overflow (IN_Q_OVERFLOW) reaches the PathQueue, so the daemon rescans:
#   watchdog calls `on_queue_overflow()` on each watch group of the inotify instance (its
#   `WatchCallback` protocol) and otherwise only logs it;
# * no 0.5 s hold on IN_MOVED_FROM. watchdog holds each one that long to pair it with its
#   IN_MOVED_TO, in a FIFO queue: every claim (a rename out of the inbox) would delay every
#   event behind it by half a second. inboxd takes a move as two hints (look at the source,
#   look at the destination), so the pairing buys nothing here; an unpaired move-in still
#   arrives as a move (`moved_in`). watchdog has no setting for it: the delay is the class
#   attribute `InotifyMoveEventGrouper.delay`, and the watch group makes its grouper itself;
# * no IN_MOVED_FROM at all: every claim is a rename out of the inbox, and its event
#   only sent the loop to find the path gone, one wake-up and one look per file. A name that
#   leaves the inbox is now found gone when it is looked at or claimed, as a deleted one always
#   was (deletions are not watched either); a rename within the inbox still reports its new
#   name, as a move in.
#
# Both go through watchdog internals (the watch group's fields, the emitter's start), hence
# `watchdog<8` in pyproject.toml; tests/unit/test_observers.py fails if a release moves them.


class _PromptMoves(InotifyMoveEventGrouper):
    delay = 0.0


@dataclass
class _WatchGroup(InotifyWatchGroup):
    on_overflow: Callable[[], None] | None = None
    _move_event_grouper: InotifyMoveEventGrouper = field(default_factory=_PromptMoves, init=False)

    def on_queue_overflow(self) -> None:
        super().on_queue_overflow()
        if self.on_overflow is not None:
            try:
                self.on_overflow()
            except Exception:  # noqa: BLE001 - a raising callback kills watchdog's reader thread
                pass


class _Emitter(InotifyFullEmitter):
    def __init__(self, event_queue: EventQueue, watch: ObservedWatch, *, on_overflow: Callable[[], None],
                 **kwargs: Any) -> None:
        super().__init__(event_queue, watch, **kwargs)
        self._inboxd_on_overflow = on_overflow

    def on_thread_start(self) -> None:
        # InotifyEmitter.on_thread_start, with inboxd's watch group
        self._inotify = _WatchGroup(
            self._inotify_fd,
            os.fsencode(self.watch.path),
            is_recursive=self.watch.is_recursive,
            event_mask=Mask(self.get_event_mask_from_filter() & ~InotifyConstants.IN_MOVED_FROM),
            follow_symlink=self.watch.follow_symlink,
            on_overflow=self._inboxd_on_overflow,
        )


class _Observer(BaseObserver):
    """One inotify instance per observer (as InotifyObserver), stopped with it."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        self._inotify_instance = InotifyFD()
        self._inotify_instance.start()
        super().__init__(_Emitter, inotify_fd=self._inotify_instance, on_overflow=on_overflow)

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self._inotify_instance.stop()
        self._inotify_instance.join()

    def reader_alive(self) -> bool:
        return self._inotify_instance.is_alive()


class _QuietStop(logging.Filter):
    """watchdog logs an ERROR when an observer is stopped in the middle of a read: not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


_quiet = _QuietStop()


def _quiet_stops() -> None:
    for name in ("watchdog.observers.inotify_c", "watchdog.observers.inotify"):
        lg = logging.getLogger(name)
        if _quiet not in lg.filters:
            lg.addFilter(_quiet)


class InotifyWatch:
    def __init__(self, key: str, folder: Path, queue: PathQueue) -> None:
        self.folder = folder
        self._key, self._queue = key, queue
        self._observer: _Observer | None = None
        self._inode: tuple[int, int] | None = None

    def start(self) -> None:
        self._inode = _inode(self.folder)
        _quiet_stops()
        observer = _Observer(on_overflow=self._queue.mark_overflow)
        observer.daemon = True
        try:
            # only what says "a name appeared or was finished": no IN_MODIFY per write(), no directory
            # events; a file still being written is looked at again when its settle time runs out
            observer.schedule(_Enqueue(self._key, str(self.folder), self._queue), str(self.folder),
                              recursive=False, event_filter=[FileCreatedEvent, FileMovedEvent, FileClosedEvent])
            observer.start()
        except BaseException:
            observer.stop()  # and its inotify instance
            raise
        self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(2.0)
            self._observer = None

    def folder_present(self) -> bool:
        return self._inode is not None and _inode(self.folder) == self._inode

    def alive(self) -> bool:
        obs = self._observer
        if obs is None or not obs.is_alive():
            return False
        return all(e.is_alive() for e in obs.emitters) and len(obs.emitters) > 0 and obs.reader_alive()


class PollingWatch:
    def __init__(self, key: str, folder: Path, queue: PathQueue, interval: float = 1.0) -> None:
        self.folder = folder
        self._key, self._queue, self._interval = key, queue, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inode: tuple[int, int] | None = None

    def start(self) -> None:
        self._inode = _inode(self.folder)
        self._thread = threading.Thread(target=self._run, name=f"poll {self.folder}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        known: set[str] = set()
        while not self._stop.is_set():
            try:
                names = {n for n in os.listdir(self.folder) if not is_ignored_name(n)}
            except OSError:
                names = set()
            for name in names - known:
                self._queue.put(self._key, os.path.join(self.folder, name))
            known = names
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()

    def folder_present(self) -> bool:
        return self._inode is not None and _inode(self.folder) == self._inode

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def make_watch(kind: str, key: str, folder: Path, queue: PathQueue) -> Watch:
    return PollingWatch(key, folder, queue) if kind == "polling" else InotifyWatch(key, folder, queue)
