"""What the emulator counts for `GET /v1/_emulator/stats`: requests and answers by route, the
faults it injected, Authorization headers sent where they must not be (storage, the other host),
creates, conflicts, deletes and aborts. Every change goes through a method that takes the lock,
so no route takes it itself; `reset` clears it all."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

EVENTS = ("conflicts", "creates", "deletes", "aborts")


class Counts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._statuses: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._storage_auth_headers = 0
        self._events: Counter[str] = Counter()
        self._creates_by_sha256: Counter[str] = Counter()
        self._other_host = {"requests": 0, "auth_headers": 0}

    def request(self, route: str) -> None:
        with self._lock:
            self._requests[route] += 1

    def status(self, route: str, status: int) -> None:
        with self._lock:
            self._statuses[f"{route} {status}"] += 1

    def injected(self, kind: str) -> None:
        """A fault of this kind was injected."""
        with self._lock:
            self._faults[kind] += 1

    def storage_auth_header(self) -> None:
        """A storage PUT came with an Authorization header (its url is signed already)."""
        with self._lock:
            self._storage_auth_headers += 1

    def other_host(self, with_auth: bool) -> None:
        """A request reached the other host's listener; `with_auth`: it carried the key."""
        with self._lock:
            self._other_host["requests"] += 1
            if with_auth:
                self._other_host["auth_headers"] += 1

    def event(self, name: str) -> None:
        """One of EVENTS: a conflict (checksum 409), a delete, an abort."""
        with self._lock:
            self._events[name] += 1

    def created(self, checksum: str | None) -> None:
        """A create (or initiate) was answered: counted by the checksum the client sent."""
        with self._lock:
            self._events["creates"] += 1
            if checksum:
                self._creates_by_sha256[checksum] += 1

    def content_of_create(self, sha256: str) -> None:
        """A create sent without a checksum is counted by its content's sha256 once it arrived."""
        with self._lock:
            self._creates_by_sha256[sha256] += 1

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._statuses.clear()
            self._faults.clear()
            self._storage_auth_headers = 0
            self._events.clear()
            self._creates_by_sha256.clear()
            self._other_host.update(requests=0, auth_headers=0)

    def snapshot(self) -> dict[str, Any]:
        """The counters, in the order the stats answer lists them (other_host last)."""
        with self._lock:
            return {
                "requests": dict(self._requests),
                "statuses": dict(self._statuses),
                "faults_injected": dict(self._faults),
                "storage_auth_headers": self._storage_auth_headers,
                **{k: self._events[k] for k in EVENTS},
                "creates_by_sha256": dict(self._creates_by_sha256),
                "other_host": dict(self._other_host),
            }
