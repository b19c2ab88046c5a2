"""Bandwidth caps: a token bucket that upload bodies are charged to as they are read.

`Bandwidth(rate)` is `rate` bytes per second, shared by every thread that charges it (all the
workers of a daemon, all the parts of a multipart upload). `take(n)` books `n` bytes and
sleeps until the bucket has paid for them: the balance may go negative (a debt that later
takers queue behind), so chunks of any size are exact and concurrent takers share the rate
fairly without a condition variable. The bucket starts empty and saves at most `burst` bytes
while idle, so a cap holds from the first byte and after a pause alike: over a window of T
seconds at most ``rate * T + burst`` bytes pass (burst defaults to a quarter second of rate).

A `FilesClient` owns one bucket (``upload.max_bytes_per_second``); an inbox may add its own
(``max_bytes_per_second`` of the inbox), passed to `FilesClient.upload(limiter=...)`. Both are
charged; a body waits for the slower. `Metered` carries the buckets of one upload from
`FilesClient.upload` to every `RangeBody` (the single PUT and each part), riding on the
progress callback, the one thing that already travels that whole way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ._errors import Cancelled

BURST_SECONDS = 0.25  # what an idle bucket saves up: a quarter second of its rate
SLICE_SECONDS = 0.05  # a capped body yields slices of 1/20 s of the slowest rate (smooth, not bursty)
MIN_SLICE = 1024


class Bandwidth:
    """A token bucket of `rate` bytes per second. Thread-safe."""

    def __init__(self, rate: float, *, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not rate > 0:
            raise ValueError(f"a bandwidth cap must be > 0 bytes per second; got {rate!r}")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(self.rate * BURST_SECONDS, float(MIN_SLICE))
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = 0.0  # starts empty: no free burst at the start
        self._stamp = clock()
        self.charged = 0  # bytes booked in total (for tests and metrics)

    @classmethod
    def of(cls, rate: float | None) -> Bandwidth | None:
        """A bucket for a configured rate; None for 0 / None (no cap)."""
        return cls(rate) if rate else None

    def __repr__(self) -> str:
        return f"Bandwidth(rate={self.rate:.0f} B/s)"

    def reserve(self, n: int) -> float:
        """Book `n` bytes; return how long the caller must wait before sending them."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            self.charged += n
            return -self._tokens / self.rate if self._tokens < 0 else 0.0

    def refund(self, n: int) -> None:
        """Give back bytes booked but never sent (a cancelled wait)."""
        with self._lock:
            self._tokens = min(self.burst, self._tokens + n)
            self.charged -= n

    def take(self, n: int, cancel: threading.Event | None = None) -> None:
        """Book `n` bytes and wait until they are paid for; Cancelled if `cancel` is set meanwhile."""
        delay = self.reserve(n)
        if delay <= 0:
            return
        if cancel is None:
            time.sleep(delay)
        elif cancel.wait(delay):
            self.refund(n)
            raise Cancelled("cancelled while waiting for bandwidth")


def slice_size(limiters: Iterable[Bandwidth], chunk: int) -> int:
    """How many bytes a capped body sends at a time: 1/20 s of the slowest rate, within [1 KiB, chunk]."""
    rates = [b.rate for b in limiters]
    if not rates:
        return chunk
    return max(MIN_SLICE, min(chunk, int(min(rates) * SLICE_SECONDS)))


@dataclass(frozen=True)
class Metered:
    """A progress callback that also names the buckets its bytes are charged to. Called, it is
    the plain progress callback; `RangeBody` recognises it and charges `limiters` per slice."""

    progress: Callable[[int], None] | None
    limiters: tuple[Bandwidth, ...]

    def __call__(self, n: int) -> None:
        if self.progress is not None:
            self.progress(n)


def metered(progress: Callable[[int], None] | None,
            *limiters: Bandwidth | None) -> Callable[[int], None] | None:
    """`progress` charged to the given buckets (None entries skipped); `progress` itself if none."""
    chosen = tuple(b for b in limiters if b is not None)
    if not chosen:
        return progress
    if isinstance(progress, Metered):
        return Metered(progress.progress, (*progress.limiters, *chosen))
    return Metered(progress, chosen)


__all__ = ["Bandwidth", "Metered", "metered", "slice_size"]
