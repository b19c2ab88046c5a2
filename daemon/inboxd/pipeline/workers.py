"""Worker threads: take a job from the `WorkQueue`, run it through `process.handle`.

Upload workers take the upload lane; archivers the archive lane (files uploaded and
journaled, whose move to done/ and manifest are left: `handle` starts them at ARCHIVE)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from .context import Context
from .process import handle
from .work import Heartbeat

log = structlog.get_logger("inboxd.pipeline")


class Worker:
    def __init__(self, ctx: Context, index: int, on_done: Callable[[], None] = lambda: None, *,
                 archiver: bool = False) -> None:
        self.ctx = ctx
        self.archiver = archiver
        self.on_done = on_done
        self.heartbeat = Heartbeat()
        self.current: str | None = None  # the inbox of the job in hand
        self.stopping = threading.Event()
        name = f"{'archiver' if archiver else 'worker'}-{index}"
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        queue = self.ctx.queue
        take = queue.get_archive if self.archiver else queue.get
        while not self.stopping.is_set():
            job = take(timeout=0.5)
            if job is None:
                continue
            self.current = job.key
            self.heartbeat.start(f"{job.inbox.path}/{job.name}")
            try:
                handle(self.ctx, job, self.heartbeat)
            except Exception:  # noqa: BLE001 - a worker outlives any one file
                log.exception("worker.error", inbox=str(job.inbox.path), name=job.name, retry_in=60)
                queue.put(job, delay=60.0)  # it stays claimed; try again later rather than forget it
            finally:
                self.heartbeat.stop()
                self.current = None
                queue.done()
                self.on_done()
