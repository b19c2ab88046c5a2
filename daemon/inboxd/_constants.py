"""Values the whole package agrees on, each defined once: exit codes, purposes,
and the statuses a file's processing and a batch job end in. Imports nothing from the package.

The emulator keeps its own lists on purpose (SPEC §8: it shares no code with `api/`, so one
cannot hide the other's bugs).
"""

from __future__ import annotations

from typing import Literal, get_args

# --- exit codes (SPEC §5) ------------------------------------------------------------------

EXIT_OK = 0
EXIT_FAILED = 1  # the work failed
EXIT_USAGE = 2  # usage or configuration error
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)

# --- purposes (SPEC §4) --------------------------------------------------------------------

Purpose = Literal["fine-tune", "batch-api", "eval", "calibration"]
PURPOSES: tuple[str, ...] = get_args(Purpose)

# --- a file's processing_status once the server is done with it ------------------------------

PROCESSING_FAILED: frozenset[str] = frozenset({"FAILED", "INVALID_FORMAT"})
PROCESSING_TERMINAL: frozenset[str] = frozenset({"COMPLETED"}) | PROCESSING_FAILED

# --- a batch job's status once it is over (SPEC §9) ------------------------------------------

BATCH_TERMINAL: frozenset[str] = frozenset({"COMPLETED", "FAILED", "EXPIRED", "CANCELLED"})
