"""Sizes in the configuration (`inboxd.config.parse_size` and the keys that use it): pydantic's
`ByteSize` does the arithmetic, behind a check of the forms configs have always accepted."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ByteSize

from inboxd.config import ConfigError, format_size, parse_config, parse_size

KiB, MiB, GiB, TiB, PiB = 2**10, 2**20, 2**30, 2**40, 2**50


@pytest.mark.parametrize("value,expected", [
    (0, 0),
    (1, 1),
    (5 * GiB, 5 * GiB),
    ("0", 0),
    ("1234", 1234),
    ("12B", 12),
    ("5GiB", 5 * GiB),
    ("250MiB", 250 * MiB),
    ("64KiB", 64 * KiB),
    ("2TiB", 2 * TiB),
    ("100MB", 100 * 10**6),
    ("1.5GB", 1_500_000_000),
    ("1.5GiB", 3 * GiB // 2),
    ("2KB", 2000),
    ("3TB", 3 * 10**12),
    ("10K", 10 * KiB),
    ("10M", 10 * MiB),
    ("1G", GiB),
    ("1T", TiB),
    ("250mib", 250 * MiB),  # units are case-insensitive
    ("10k", 10 * KiB),  # a lone letter is binary, whatever its case (ByteSize alone: decimal)
    (" 5 GiB ", 5 * GiB),  # spaces around and between
    ("1PiB", PiB),  # new with ByteSize: peta and exa units
    ("2PB", 2 * 10**15),
    ("1P", PiB),
    ("1EiB", 2**60),
])
def test_sizes_that_parse(value: Any, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", [
    -1, True, False, 1.5, 2.0, None, [], "", "lots", "GiB", "-5MiB", "5XB", "5 Gi B", "1e9", "5 GiB extra", ".5GiB",
    "5,000", "1.0.0", "5ZiB",
])
def test_sizes_that_do_not(value: Any) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(value)


@pytest.mark.parametrize("section,key", [("upload", "multipart_threshold"), ("upload", "part_size"),
                                         ("check", "max_line_bytes")])
def test_size_keys_accept_units(section: str, key: str) -> None:
    config = parse_config({section: {key: "6MiB"}})
    value = getattr(getattr(config, section), key)
    assert value == 6 * MiB
    assert isinstance(value, ByteSize)


def test_the_defaults_and_an_inbox_cap_are_byte_sizes() -> None:
    config = parse_config({"inboxes": [{"path": "/srv/in", "purpose": "eval", "max_bytes_per_second": "2M"}]})
    assert config.upload.multipart_threshold == 5 * GiB
    assert config.upload.part_size == 250 * MiB
    assert config.check.max_line_bytes == 64 * MiB
    assert config.inboxes[0].max_bytes_per_second == 2 * MiB
    assert isinstance(config.upload.part_size, ByteSize)
    assert config.model_dump(mode="json")["upload"]["part_size"] == 250 * MiB  # plain bytes in JSON


@pytest.mark.parametrize("section,key,value", [
    ("upload", "multipart_threshold", "lots"),
    ("upload", "part_size", "250 parsecs"),
    ("check", "max_line_bytes", -1),
    ("check", "max_line_bytes", 1.5),
])
def test_a_bad_size_names_its_key(section: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({section: {key: value}})
    message = str(info.value)
    assert message.startswith(f"{section}.{key}: expected a size"), message


def test_a_bad_size_echoes_the_value() -> None:
    with pytest.raises(ConfigError, match=r"upload\.part_size: .*; got 'lots'"):
        parse_config({"upload": {"part_size": "lots"}})


def test_a_part_size_below_5mib_names_the_key_and_the_minimum() -> None:
    with pytest.raises(ConfigError, match=r"upload\.part_size: expected at least 5MiB"):
        parse_config({"upload": {"part_size": "4MiB"}})


@pytest.mark.parametrize("n,text", [(0, "0"), (1000, "1000"), (KiB, "1KiB"), (250 * MiB, "250MiB"), (5 * GiB, "5GiB"),
                                    (TiB, "1TiB"), (GiB + 1, str(GiB + 1)), (3 * GiB // 2, "1536MiB")])
def test_format_size_round_trips(n: int, text: str) -> None:
    assert format_size(n) == text
    assert parse_size(text) == n
