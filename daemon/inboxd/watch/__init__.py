"""Watching inbox folders: observers wake a scan; the scan and the readiness tracker decide.

The flow: an observer (`observers`) puts paths into a `PathQueue` (`queue`); the daemon
loop looks at each path again (`scan`), drops ignored names (`ignore`), and asks the
`ReadinessTracker` (`readiness`) whether a regular file is complete. Events are hints;
the directory scan is the source of truth.
"""

from .ignore import is_candidate, is_ignored_name
from .queue import PathQueue
from .readiness import ReadinessTracker
from .scan import Entry, inspect_path, scan_inbox

__all__ = [
    "Entry",
    "PathQueue",
    "ReadinessTracker",
    "inspect_path",
    "is_candidate",
    "is_ignored_name",
    "scan_inbox",
]
