"""What an emulator is started with: where it listens, its key, its clocks, its faults."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class Faults:
    """Random faults, each a rate from 0 to 1 (scripted one-shot faults are separate)."""

    error_rate: float = 0.0  # HTTP 500 on API calls
    part_error_rate: float = 0.0  # HTTP 503 on storage PUTs (single and parts)
    rate_limit_rate: float = 0.0  # HTTP 429 with Retry-After on API calls
    retry_after_seconds: float = 1.0
    drop_rate: float = 0.0  # storage PUTs: the connection is cut half-way through the body
    slow_seconds: float = 0.0  # every answer waits this long first

    def update(self, values: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for key, value in values.items():
            if key in names:
                setattr(self, key, float(value))


@dataclass
class EmulatorSettings:
    host: str = "127.0.0.1"
    port: int = 0
    data_dir: Path | None = None
    key: str = "emulator-key"
    url_ttl_seconds: float = 900.0
    processing_delay_seconds: float = 0.2
    dedupe: bool = True  # False: never the checksum 409; the same bytes sent twice make two files
    latency_ms: float = 0.0  # every answer (API and storage; not the control endpoints) waits this long
    batch_seconds: float = 2.0  # a batch job's time from create to its end (0: done at the first look)
    batch_max_requests: int = 50_000  # per-job limits a batch create enforces (400 above them)
    batch_max_bytes: int = 100 * 10**6
    batch_transient_rate: float = 0.0  # share of batch requests answered with a 429 in the error file
    batch_expire_next: int = 0  # the next N batch jobs end EXPIRED with half their requests answered
    tls: bool = False  # HTTPS on every listener, with a throwaway CA made at start (needs trustme)
    faults: Faults = field(default_factory=Faults)
