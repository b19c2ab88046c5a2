"""A multipart part that fails for good stops the other parts at once (issue 10): the parts
in flight do not go on sending their bytes for nothing (the official clients and the first
wave did: up to 1 GiB). s3transfer's coordinator is the model: one failure cancels every task."""

from __future__ import annotations

import os
import time

import pytest

from inboxd.api import FilesClient, RejectedError
from inboxd.config import parse_config
from tests.helpers.emulator import start_emulator

KEY = "parts-key-0123456789"
MiB = 2**20


def test_a_part_failing_for_good_cancels_the_parts_in_flight(tmp_path):
    emu = start_emulator(tmp_path / "emu", key=KEY, no_dedupe=True)
    try:
        # 7 parts of 5 MiB and a last one of 1 MiB, all 8 in flight, sharing 8 MiB/s: the small
        # last part is through in about 1 s and refused for good (400); the others, then at
        # about a fifth of their bytes, would need 4 s more to finish
        cfg = parse_config({"api": {"base_url": emu.base_url, "timeout_seconds": 30, "max_retries": 1},
                            "upload": {"multipart_threshold": "6MiB", "part_size": "5MiB", "part_concurrency": 8,
                                       "max_bytes_per_second": 8 * MiB}})
        path = tmp_path / "big.jsonl"
        with open(path, "wb") as f:
            f.write(os.urandom(36 * MiB))
        emu.script([{"route": "part_put", "part_number": 8, "status": 400, "times": 5}])
        client = FilesClient(cfg.api, cfg.upload, KEY)
        t0 = time.monotonic()
        with pytest.raises(RejectedError):
            client.upload(path, "fine-tune")
        took = time.monotonic() - t0
        client.close()
        assert took < 3.0, f"the upload ended {took:.1f} s in: the other parts kept sending"
    finally:
        emu.stop()
