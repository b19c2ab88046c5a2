"""`inboxd.api._upload.plan_parts`, and the threshold between single and multipart uploads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from inboxd.api import _client
from inboxd.api._models import FileObject
from inboxd.api._upload import Outcome, plan_parts
from inboxd.config import ApiConfig, UploadConfig

MiB = 2**20
GiB = 2**30


def check(size: int, cfg: UploadConfig) -> tuple[int, int]:
    part, n = plan_parts(size, cfg)
    assert 1 <= n <= cfg.max_parts
    assert part >= cfg.part_size >= 5 * MiB
    assert (n - 1) * part < max(size, 1) <= n * part  # every part has bytes; the last may be short
    return part, n


def test_the_official_clients_defaults() -> None:
    cfg = UploadConfig()
    assert (cfg.multipart_threshold, cfg.part_size, cfg.max_parts) == (5 * GiB, 250 * MiB, 250)
    assert check(5 * GiB + 1, cfg) == (250 * MiB, 21)
    assert check(250 * MiB * 250, cfg) == (250 * MiB, 250)


@pytest.mark.parametrize("size,expected", [
    (0, (5 * MiB, 1)),
    (1, (5 * MiB, 1)),
    (5 * MiB, (5 * MiB, 1)),
    (5 * MiB + 1, (5 * MiB, 2)),
    (20 * MiB, (5 * MiB, 4)),
    (20 * MiB + 1, (5 * MiB, 5)),
])
def test_parts_of_the_configured_size(size: int, expected: tuple[int, int]) -> None:
    cfg = UploadConfig(part_size="5MiB", max_parts=10)
    assert check(size, cfg) == expected


def test_parts_grow_so_there_are_at_most_max_parts() -> None:
    cfg = UploadConfig(part_size="5MiB", max_parts=4)
    assert check(20 * MiB, cfg) == (5 * MiB, 4)
    part, n = check(20 * MiB + 1, cfg)
    assert n == 4 and part == -(-(20 * MiB + 1) // 4)
    part, n = check(100 * GiB, UploadConfig())
    assert (part, n) == (-(-100 * GiB // 250), 250)


@pytest.mark.parametrize("max_parts", [1, 3, 250, 10_000])
@pytest.mark.parametrize("size", [1, 5 * MiB - 1, 7 * MiB + 3, 3 * GiB + 17, 5 * GiB, 1234567890123])
def test_plan_invariants(size: int, max_parts: int) -> None:
    check(size, UploadConfig(part_size="5MiB", max_parts=max_parts))
    check(size, UploadConfig(part_size="64MiB", max_parts=max_parts))


def test_parts_below_5mib_are_refused_by_the_config() -> None:
    with pytest.raises(ValidationError, match="part_size"):
        UploadConfig(part_size=5 * MiB - 1)
    assert UploadConfig(part_size=5 * MiB).part_size == 5 * MiB


@pytest.mark.parametrize("extra,method", [(0, "single"), (1, "multipart")])
def test_multipart_only_above_the_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: int,
                                            method: str) -> None:
    calls: list[tuple[str, int]] = []
    obj = FileObject.model_validate({"id": "file-1", "object": "file", "created_at": 0, "purpose": "eval",
                                     "filename": "x.jsonl", "bytes": 0})

    def fake(kind: str) -> Any:
        def run(t: Any, base: str, src: Any, purpose: str, *rest: Any) -> Outcome:
            calls.append((kind, src.size))
            return Outcome(obj, kind, 1, 1)
        return run

    monkeypatch.setattr(_client, "single", fake("single"))
    monkeypatch.setattr(_client, "multipart", fake("multipart"))
    threshold = 1000
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"x" * (threshold + extra))
    client = _client.FilesClient(ApiConfig(), UploadConfig(multipart_threshold=threshold), "key")
    result = client.upload(path, "eval", sha256="0" * 64)
    assert calls == [(method, threshold + extra)]
    assert result.method == method and result.bytes == threshold + extra
