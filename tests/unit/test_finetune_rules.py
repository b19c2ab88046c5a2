"""The fine-tune rules through `check_file` (purpose fine-tune), one record per case: strict
gives the 1.x client's verdicts (formats, roles and their order, an assistant turn, weights,
multimodal content, preference records) with the rule and the first failing line; basic only
asks for one known format throughout the file."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from inboxd.check import _finetune, check_file

IMG = "data:image/png;base64,iVBORw0KGgo="
U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}


def check(records: list[Any], mode: str = "strict") -> Any:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    return check_file(io.BytesIO(data), "fine-tune", mode, name="t.jsonl")


def image(url: str = IMG) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def pref(**over: Any) -> dict[str, Any]:
    return {"input": {"messages": [U]}, "preferred_output": [A], "non_preferred_output": [A], **over}


@pytest.mark.parametrize(("record", "fmt"), [
    ({"text": "a"}, "text"),
    ({"messages": [{"role": "system", "content": "s"}, U, A]}, "conversation"),
    ({"messages": [U, {"role": "assistant", "content": "x", "weight": 0}, U, A]}, "conversation"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "see"}, image()]},
                   {"role": "assistant", "content": [{"type": "text", "text": "a cat"}]}]}, "conversation"),
    ({"prompt": "p", "completion": "c"}, "instruction"),
    (pref(), "preference"),
])
def test_good_records_pass_strict(record: dict[str, Any], fmt: str) -> None:
    report = check([record, record])
    assert report.passed and report.records == 2 and report.format == fmt


@pytest.mark.parametrize(("record", "rule"), [
    ({"nothing": 1}, "finetune.format.unknown"),
    ({"text": "a", "messages": [U, A]}, "finetune.format.extra_column"),  # the first format's extra column
    ({"text": "a", "extra": 1}, "finetune.format.extra_column"),
    ({"messages": "hi"}, "finetune.messages.not_list"),
    ({"messages": []}, "finetune.messages.empty"),
    ({"messages": ["hi"]}, "finetune.message.not_object"),
    ({"messages": [{"role": "user"}]}, "finetune.message.missing_column"),
    ({"messages": [{**U, "weight": "1"}, A]}, "finetune.weight.type"),
    ({"messages": [{**U, "weight": 2}, A]}, "finetune.weight.value"),
    ({"messages": [{"role": 1, "content": "x"}]}, "finetune.role.not_string"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "finetune.role.unknown"),
    ({"messages": [U, U, A]}, "finetune.role.order"),
    ({"messages": [U]}, "finetune.assistant.missing"),
    ({"messages": [{"role": "user", "content": 5}, A]}, "finetune.content.type"),
    ({"messages": [{"role": "user", "content": ["x"]}, A]}, "finetune.content.item"),
    ({"messages": [{"role": "user", "content": [{"text": "x"}]}, A]}, "finetune.content.item"),
    ({"messages": [{"role": "user", "content": [{"type": "audio"}]}, A]}, "finetune.content.item"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}, A]}, "finetune.content.text"),
    ({"messages": [U, {"role": "assistant", "content": [image()]}]}, "finetune.image.role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}, A]}, "finetune.image.url"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}, A]},
     "finetune.image.url"),
    ({"messages": [{"role": "user", "content": [image("http://x/cat.png")]}, A]}, "finetune.image.format"),
    ({"messages": [{"role": "user", "content": [image()] * 11}, A]}, "finetune.image.too_many"),
    ({"messages": [{"role": "user", "content": [image()] * 6}, {"role": "assistant", "content": [
        {"type": "text", "text": "x"}]}, {"role": "user", "content": [image()] * 6},
        {"role": "assistant", "content": [{"type": "text", "text": "y"}]}]}, "finetune.image.too_many"),
    ({"messages": [{"role": "user", "content": [image()], "weight": 1}, A]}, "finetune.image.weight"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}, A]},
     "finetune.content.mixed_multimodal"),
    ({"prompt": 1, "completion": "c"}, "finetune.content.type"),
    (pref(input=[U]), "finetune.preference.input"),
    (pref(input={"msgs": [U]}), "finetune.preference.input"),
    (pref(input={"messages": [U, A]}), "finetune.preference.last_role"),
    (pref(preferred_output=A), "finetune.preference.output"),
    (pref(preferred_output=[A, A]), "finetune.preference.output"),
    (pref(preferred_output=["x"]), "finetune.preference.output"),
    (pref(preferred_output=[{"content": "x"}]), "finetune.preference.output"),
    (pref(preferred_output=[U]), "finetune.preference.output"),
    (pref(non_preferred_output=[{"role": "assistant"}]), "finetune.preference.output"),
    (pref(non_preferred_output=[{"role": "assistant", "content": 3}]), "finetune.content.type"),
])
def test_strict_names_the_rule_and_the_first_failing_line(record: dict[str, Any], rule: str) -> None:
    report = check([record])
    assert not report.passed
    assert (report.first_error.rule, report.first_error.line) == (rule, 1)


def test_an_image_over_10_mb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _finetune.MAX_IMAGE_URL > 13_000_000  # 10 MiB of image as base64 in a data url
    monkeypatch.setattr(_finetune, "MAX_IMAGE_URL", len(IMG) + 10)  # the same rule, on a small image
    answer = {"role": "assistant", "content": [{"type": "text", "text": "a cat"}]}
    assert check([{"messages": [{"role": "user", "content": [image(IMG + "A" * 10)]}, answer]}]).passed
    report = check([{"messages": [{"role": "user", "content": [image(IMG + "A" * 11)]}, answer]}])
    assert report.first_error.rule == "finetune.image.too_large"


def test_the_first_failing_line_is_named() -> None:
    report = check([{"messages": [U, A]}, {"messages": [U, A]}, {"messages": [A, A]}, {"messages": [U]}])
    assert [(e.line, e.rule) for e in report.errors] == [(3, "finetune.role.order"),
                                                         (4, "finetune.assistant.missing")]


def test_a_file_must_keep_one_format() -> None:
    report = check([{"text": "a"}, {"prompt": "p", "completion": "c"}, {"text": "b"}])
    assert [(e.line, e.rule) for e in report.errors] == [(2, "finetune.format.mixed")]
    assert report.format == "text"


def test_basic_asks_only_for_a_known_format() -> None:
    assert check([{"messages": [U]}, {"messages": [U, U]}], mode="basic").passed  # roles are strict's
    assert check([{"text": "a", "extra": 1}], mode="basic").passed
    report = check([{"text": "a"}, {"other": 1}, {"messages": []}], mode="basic")
    assert [(e.line, e.rule) for e in report.errors] == [(2, "finetune.format.unknown"), (3, "finetune.format.mixed")]


def test_many_key_orders_do_not_change_the_verdicts() -> None:
    """The format is remembered per key tuple; past 256 tuples the memory starts over."""
    records = [{**{f"k{i}": 0}, "text": "a"} for i in range(300)]
    report = check(records, mode="basic")
    assert report.passed and report.records == 300
    report = check(records[:3], mode="strict")
    assert [e.rule for e in report.errors] == ["finetune.format.extra_column"] * 3
