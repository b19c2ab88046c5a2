"""One backoff policy for every wait-and-try-again in inboxd.

A delay grows exponentially from a base up to a cap, and is drawn from the upper half of
that (`[d/2, d]`, "equal jitter"): hosts that failed together spread out, and no wait
collapses to nothing. Each use names its base and cap here, in one place; a server's own
`Retry-After` is honoured by the caller where the protocol has one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base: float  # the first delay's upper bound (seconds)
    cap: float  # no delay above this

    def delay(self, attempt: int) -> float:
        """The wait after failure number `attempt` (1 for the first)."""
        d = min(self.cap, self.base * 2.0 ** min(max(attempt - 1, 0), 60))
        return random.uniform(d / 2, d)


FILE_RETRY = Backoff(base=1.25, cap=300.0)  # a claimed file after a transient failure
API_RETRY = Backoff(base=0.5, cap=30.0)  # one HTTP call to the API (429, 5xx, a cut connection)
BATCH_CREATE = Backoff(base=0.5, cap=30.0)  # the create of a batch job
BATCH_POLL = Backoff(base=30.0, cap=600.0)  # following a batch job whose status cannot be read
PROCESSING_POLL = Backoff(base=0.5, cap=5.0)  # waiting for a file's processing_status
DOWNLOAD_CUT = Backoff(base=0.2, cap=5.0)  # resuming a results download that was cut
FS_CACHE = Backoff(base=0.1, cap=0.5)  # a network filesystem's cache that does not show a path yet


def backoff(attempt: int) -> float:
    """The wait before a claimed file is tried again."""
    return FILE_RETRY.delay(attempt)
