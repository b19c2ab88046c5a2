"""`inboxd.state.fs`: names that fit NAME_MAX with room for a sidecar, and free names."""

from __future__ import annotations

import hashlib
import os
from itertools import islice
from pathlib import Path

import pytest

from inboxd.state.fs import NAME_MAX, SIDECAR_ROOM, candidate_names, fit_name, free_name
from inboxd.state.sidecars import ERROR_SUFFIX, MANIFEST_SUFFIX


def nbytes(name: str) -> int:
    return len(os.fsencode(name))


def mark(name: str) -> str:
    return "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:10]


def test_a_short_name_is_kept() -> None:
    assert fit_name("data.jsonl", 40) == "data.jsonl"


def test_the_limit_is_exact() -> None:
    fits = "x" * (NAME_MAX - 10 - len(".jsonl")) + ".jsonl"
    assert nbytes(fits) + 10 == NAME_MAX
    assert fit_name(fits, 10) == fits
    over = "x" + fits
    out = fit_name(over, 10)
    assert out != over
    assert nbytes(out) + 10 <= NAME_MAX


@pytest.mark.parametrize("reserve", [0, 1, 17, SIDECAR_ROOM, 100])
def test_a_long_name_is_cut_marked_with_a_hash_and_keeps_its_extension(reserve: int) -> None:
    name = "report-" + "z" * 400 + ".jsonl"
    out = fit_name(name, reserve)
    assert nbytes(out) + reserve == NAME_MAX  # cut no shorter than needed (ASCII: exact)
    assert out.endswith(mark(name) + ".jsonl")
    assert name.startswith(out[: -len(mark(name) + ".jsonl")])
    assert fit_name(name, reserve) == out  # deterministic


def test_two_long_names_with_the_same_beginning_stay_apart() -> None:
    a = "p" * 300 + "-a.jsonl"
    b = "p" * 300 + "-b.jsonl"
    assert fit_name(a, SIDECAR_ROOM) != fit_name(b, SIDECAR_ROOM)


@pytest.mark.parametrize("char", ["é", "€", "😀"], ids=["2-byte", "3-byte", "4-byte"])
@pytest.mark.parametrize("pad", range(4))
def test_multibyte_names_are_cut_on_a_character_boundary(char: str, pad: int) -> None:
    name = "a" * pad + char * 200 + ".jsonl"
    out = fit_name(name, SIDECAR_ROOM)
    raw = os.fsencode(out)
    assert raw.decode("utf-8") == out  # valid UTF-8, no surrogate escapes or half characters
    assert "\ufffd" not in out
    assert nbytes(out) + SIDECAR_ROOM <= NAME_MAX
    assert nbytes(out) + SIDECAR_ROOM > NAME_MAX - len(char.encode())  # at most one character given up
    stem = out[: -len(mark(name) + ".jsonl")]
    assert name.startswith(stem) and len(stem) > pad
    assert out.endswith(mark(name) + ".jsonl")


def test_a_long_extension_is_not_kept_as_one() -> None:
    name = "a" * 300 + "." + "e" * 20
    out = fit_name(name, 10)
    assert nbytes(out) + 10 <= NAME_MAX
    assert out.endswith(mark(name))  # no "extension" after the mark


def test_a_long_name_without_a_dot() -> None:
    name = "n" * 300
    out = fit_name(name, 10)
    assert out == "n" * (NAME_MAX - 10 - 11) + mark(name)


def test_candidate_names_number_before_the_extension() -> None:
    assert list(islice(candidate_names("x.jsonl"), 4)) == ["x.jsonl", "x.2.jsonl", "x.3.jsonl", "x.4.jsonl"]
    assert list(islice(candidate_names("a.b.csv"), 2)) == ["a.b.csv", "a.b.2.csv"]
    assert list(islice(candidate_names("noext"), 3)) == ["noext", "noext.2", "noext.3"]


@pytest.mark.parametrize("name", ["y" * 300 + ".jsonl", "é" * 200 + ".jsonl", "n" * 300])
def test_every_candidate_leaves_room_for_a_sidecar_and_its_temp_name(name: str) -> None:
    for cand in islice(candidate_names(name), 1000):
        for suffix in (MANIFEST_SUFFIX, ERROR_SUFFIX):
            # write_atomic writes the sidecar as ".<name><suffix>.<8 hex>.tmp" first
            assert nbytes("." + cand + suffix + ".12345678.tmp") <= NAME_MAX, cand
    first = next(candidate_names(name))
    assert first == fit_name(name, SIDECAR_ROOM)


@pytest.mark.parametrize("name", ["y" * 300 + ".jsonl", "n" * 300])
def test_the_room_holds_numbers_up_to_seven_digits(name: str) -> None:
    first = next(candidate_names(name))
    second = next(islice(candidate_names(name), 1, None))
    worst = second.replace(".2", ".9999999", 1) if "." in first else first + ".9999999"
    assert worst.startswith(first.rpartition(".")[0] or first)
    for suffix in (MANIFEST_SUFFIX, ERROR_SUFFIX):
        assert nbytes("." + worst + suffix + ".12345678.tmp") <= NAME_MAX


def test_free_name_skips_taken_files_and_sidecars(tmp_path: Path) -> None:
    assert free_name(tmp_path, "x.jsonl", MANIFEST_SUFFIX) == "x.jsonl"
    (tmp_path / "x.jsonl").write_text("")
    (tmp_path / ("x.2.jsonl" + MANIFEST_SUFFIX)).write_text("{}")  # an orphan sidecar blocks the name too
    (tmp_path / "x.3.jsonl").symlink_to(tmp_path / "missing")  # so does a dangling symlink
    assert free_name(tmp_path, "x.jsonl", MANIFEST_SUFFIX) == "x.4.jsonl"
    assert free_name(tmp_path, "x.jsonl", ERROR_SUFFIX) == "x.2.jsonl"  # another sidecar kind


def test_free_name_of_a_long_name_is_the_shortened_one(tmp_path: Path) -> None:
    name = "q" * 300 + ".jsonl"
    got = free_name(tmp_path, name, MANIFEST_SUFFIX)
    assert got == fit_name(name, SIDECAR_ROOM)
    (tmp_path / got).write_text("")
    again = free_name(tmp_path, name, MANIFEST_SUFFIX)
    assert again == got[: -len(".jsonl")] + ".2.jsonl"
    (tmp_path / (again + MANIFEST_SUFFIX)).write_text("{}")  # the name really is creatable with its sidecar
