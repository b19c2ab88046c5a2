"""A corpus of fine-tune and batch files, valid and broken in every rule, for the agreement
tests of `inboxd.check` with the official checkers."""

from __future__ import annotations

import json
from pathlib import Path

IMG = "data:image/png;base64," + "A" * 64


def _j(obj: object) -> str:
    return json.dumps(obj)


def conv(*turns: tuple[str, object], **extra: object) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns], **extra}


OK_CONV = conv(("user", "hi"), ("assistant", "hello"))
OK_SYS = conv(("system", "be brief"), ("user", "hi"), ("assistant", "hello"))
OK_TEXT = {"text": "a sample"}
OK_INSTR = {"prompt": "2+2?", "completion": "4"}
OK_PREF = {"input": {"messages": [{"role": "user", "content": "pick"}]},
           "preferred_output": [{"role": "assistant", "content": "a"}],
           "non_preferred_output": [{"role": "assistant", "content": "b"}]}
MM_USER = {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": IMG}}]}
MM_ASSIST = {"role": "assistant", "content": [{"type": "text", "text": "a cat"}]}


def lines(*records: object) -> bytes:
    return ("\n".join(r if isinstance(r, str) else _j(r) for r in records) + "\n").encode()


def fine_tune_corpus() -> dict[str, bytes]:
    c: dict[str, bytes] = {}
    # valid, every format
    c["ok_text"] = lines(OK_TEXT, {"text": "another"})
    c["ok_conv"] = lines(OK_CONV, OK_CONV)
    c["ok_conv_system"] = lines(OK_SYS)
    c["ok_conv_weights"] = lines({"messages": [{"role": "user", "content": "q", "weight": 0},
                                               {"role": "assistant", "content": "a", "weight": 1}]})
    c["ok_instruction"] = lines(OK_INSTR, OK_INSTR)
    c["ok_preference"] = lines(OK_PREF)
    c["ok_multimodal"] = lines({"messages": [MM_USER, MM_ASSIST]})
    c["ok_crlf"] = lines(OK_CONV, OK_CONV).replace(b"\n", b"\r\n")
    c["ok_no_final_newline"] = lines(OK_TEXT).rstrip(b"\n")
    c["ok_unicode"] = lines({"text": "données 日本語 🚀"})
    c["ok_weight_bool"] = lines({"messages": [{"role": "user", "content": "q"},
                                              {"role": "assistant", "content": "a", "weight": True}]})
    c["ok_nan"] = b'{"text": NaN}\n'
    c["ok_lone_cr_two_lines"] = _j(OK_TEXT).encode() + b"\r" + _j(OK_TEXT).encode() + b"\n"
    c["ok_mm_text_only_list"] = lines({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]},
                                                    MM_ASSIST]})
    # encoding and framing
    c["empty"] = b""
    c["blank_line_middle"] = lines(OK_TEXT) + b"\n" + lines(OK_TEXT)
    c["blank_line_end"] = lines(OK_TEXT) + b"\n"
    c["only_newline"] = b"\n"
    c["bom"] = b"\xef\xbb\xbf" + lines(OK_TEXT)
    c["bad_utf8_line2"] = lines(OK_TEXT) + b'{"text": "\xff"}\n'
    c["bad_utf8_after_json_error"] = lines(OK_TEXT) + b"not json\n" + b'{"text": "\xfe"}\n'
    c["not_json"] = lines(OK_TEXT) + b"{nope\n"
    c["trailing_garbage"] = lines(OK_TEXT) + b'{"text": "a"} x\n'
    c["json_array"] = lines(OK_TEXT, [1, 2])
    c["json_string_line1"] = lines("\"hello\"")
    c["json_null"] = lines(OK_TEXT, "null")
    # formats
    c["unknown_format"] = lines({"foo": "bar"})
    c["extra_column_text"] = lines({"text": "a", "id": 1})
    c["extra_column_conv"] = lines({**OK_CONV, "meta": {}})
    c["text_and_messages"] = lines({"text": "a", **OK_CONV})
    c["mixed_text_then_conv"] = lines(OK_TEXT, OK_CONV)
    c["mixed_conv_then_instr"] = lines(OK_CONV, OK_CONV, OK_INSTR)
    c["instruction_missing_completion"] = lines({"prompt": "x"})
    # messages
    c["messages_not_list"] = lines({"messages": "hi"})
    c["messages_empty"] = lines({"messages": []})
    c["message_not_object"] = lines({"messages": ["hi"]})
    c["message_no_role"] = lines({"messages": [{"content": "x"}]})
    c["message_no_content"] = lines({"messages": [{"role": "user"}]})
    c["role_not_string"] = lines({"messages": [{"role": 1, "content": "x"}]})
    c["role_unknown"] = lines(conv(("user", "q"), ("tool", "a")))
    c["role_repeated"] = lines(conv(("user", "q"), ("user", "q2"), ("assistant", "a")))
    c["no_assistant"] = lines(conv(("user", "q")))
    c["second_line_no_assistant"] = lines(OK_CONV, conv(("system", "s"), ("user", "q")))
    c["weight_string"] = lines({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a", "weight": "1"}]})
    c["weight_two"] = lines({"messages": [{"role": "user", "content": "q"},
                                          {"role": "assistant", "content": "a", "weight": 2}]})
    c["weight_float"] = lines({"messages": [{"role": "user", "content": "q"},
                                            {"role": "assistant", "content": "a", "weight": 1.0}]})
    c["content_number"] = lines(conv(("user", 5), ("assistant", "a")))
    c["content_null"] = lines(conv(("user", None), ("assistant", "a")))
    # multimodal
    c["mm_item_not_object"] = lines({"messages": [{"role": "user", "content": ["x"]}, MM_ASSIST]})
    c["mm_item_no_type"] = lines({"messages": [{"role": "user", "content": [{"text": "x"}]}, MM_ASSIST]})
    c["mm_text_not_string"] = lines({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}, MM_ASSIST]})
    c["mm_bad_type"] = lines({"messages": [{"role": "user", "content": [{"type": "audio"}]}, MM_ASSIST]})
    c["mm_image_in_assistant"] = lines({"messages": [MM_USER, {"role": "assistant", "content": MM_USER["content"]}]})
    c["mm_image_url_not_object"] = lines({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}, MM_ASSIST]})
    c["mm_image_no_url"] = lines({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}, MM_ASSIST]})
    c["mm_image_gif"] = lines({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/gif;base64,AAAA"}}]}, MM_ASSIST]})
    c["mm_image_http"] = lines({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}, MM_ASSIST]})
    c["mm_too_many_images"] = lines({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMG}}] * 11}, MM_ASSIST]})
    c["mm_mixed_with_text"] = lines({"messages": [MM_USER, {"role": "assistant", "content": "plain"}]})
    c["mm_image_with_weight"] = lines({"messages": [{**MM_USER, "weight": 1}, MM_ASSIST]})
    c["mm_images_over_messages"] = lines({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMG}}] * 6}, MM_ASSIST,
                                                       {"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMG}}] * 6}, MM_ASSIST]})
    c["instruction_prompt_list_ok"] = lines({"prompt": [{"type": "text", "text": "q"}], "completion": "a"})
    c["instruction_completion_number"] = lines({"prompt": "q", "completion": 4})
    c["text_not_string"] = lines({"text": 5})
    # preference
    c["pref_input_not_object"] = lines({**OK_PREF, "input": []})
    c["pref_input_no_messages"] = lines({**OK_PREF, "input": {}})
    c["pref_last_assistant"] = lines({**OK_PREF, "input": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}})
    c["pref_output_not_list"] = lines({**OK_PREF, "preferred_output": {"role": "assistant", "content": "a"}})
    c["pref_output_two"] = lines({**OK_PREF, "preferred_output": [{"role": "assistant", "content": "a"}] * 2})
    c["pref_output_not_object"] = lines({**OK_PREF, "non_preferred_output": ["a"]})
    c["pref_output_no_role"] = lines({**OK_PREF, "non_preferred_output": [{"content": "a"}]})
    c["pref_output_user_role"] = lines({**OK_PREF, "preferred_output": [{"role": "user", "content": "a"}]})
    c["pref_output_no_content"] = lines({**OK_PREF, "preferred_output": [{"role": "assistant"}]})
    c["pref_output_bad_content"] = lines({**OK_PREF, "preferred_output": [{"role": "assistant", "content": 3}]})
    c["late_error_line_5"] = lines(OK_CONV, OK_CONV, OK_CONV, OK_CONV, conv(("assistant", "a"), ("assistant", "b")))
    return c


def batch_req(cid: object, body: object = None, **extra: object) -> dict:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]} if body is None else body
    return {"custom_id": cid, "body": body, **extra}


# name -> (content, expected verdict in basic, in strict, the rule id of the first error or None)
def batch_corpus() -> dict[str, tuple[bytes, bool, bool, str | None]]:
    b: dict[str, tuple[bytes, bool, bool, str | None]] = {}
    b["ok"] = (lines(batch_req("a"), batch_req("b")), True, True, None)
    b["ok_completions"] = (lines(batch_req("a", {"model": "m", "prompt": "once upon"})), True, True, None)
    b["ok_id_64"] = (lines(batch_req("x" * 64)), True, True, None)
    b["ok_blank_lines"] = (lines(batch_req("a")) + b"\n\n" + lines(batch_req("b")), True, True, None)
    b["ok_options"] = (lines(batch_req("a", {"model": "m", "messages": [{"role": "user", "content": "q"}],
                                              "max_tokens": 5, "temperature": 0.2, "stop": ["x"]})), True, True, None)
    b["id_65"] = (lines(batch_req("x" * 65)), False, False, "batch.custom_id.length")
    b["id_empty"] = (lines(batch_req("")), False, False, "batch.custom_id.length")
    b["id_missing"] = (lines({"body": {"model": "m"}}), False, False, "batch.custom_id.missing")
    b["id_number"] = (lines(batch_req(7)), False, False, "batch.custom_id.type")
    b["id_duplicate"] = (lines(batch_req("a"), batch_req("b"), batch_req("a")), False, False, "batch.custom_id.duplicate")
    b["body_missing"] = (lines({"custom_id": "a"}), False, False, "batch.body.missing")
    b["body_string"] = (lines(batch_req("a", "text")), False, False, "batch.body.type")
    b["not_json"] = (lines(batch_req("a")) + b"{x\n", False, False, "json.invalid")
    b["array"] = (lines([batch_req("a")]), False, False, "json.not_object")
    b["empty"] = (b"", False, False, "file.empty")
    b["only_blank"] = (b"\n\n", False, False, "file.no_records")
    b["bad_utf8"] = (lines(batch_req("a")) + b'{"custom_id": "\xff", "body": {}}\n', False, False, "utf8.invalid")
    b["bom"] = (b"\xef\xbb\xbf" + lines(batch_req("a")), False, False, "encoding.bom")
    b["strict_no_model"] = (lines(batch_req("a", {"messages": [{"role": "user", "content": "q"}]})), True, False, "batch.body.model")
    b["strict_empty_messages"] = (lines(batch_req("a", {"model": "m", "messages": []})), True, False, "batch.body.messages")
    b["strict_message_no_role"] = (lines(batch_req("a", {"model": "m", "messages": [{"content": "q"}]})), True, False, "batch.body.messages")
    b["strict_no_endpoint"] = (lines(batch_req("a", {"model": "m"})), True, False, "batch.body.endpoint")
    b["strict_max_tokens_string"] = (lines(batch_req("a", {"model": "m", "prompt": "p", "max_tokens": "5"})), True, False, "batch.body.field_type")
    b["strict_temperature_bool"] = (lines(batch_req("a", {"model": "m", "prompt": "p", "temperature": True})), True, False, "batch.body.field_type")
    b["lines_50001"] = (b"".join(json.dumps(batch_req(f"r{i}", {})).encode() + b"\n" for i in range(50_001)),
                        False, False, "batch.too_many_lines")
    b["lines_50000"] = (b"".join(json.dumps(batch_req(f"r{i}", {})).encode() + b"\n" for i in range(50_000)),
                        True, False, "batch.body.model")
    return b


def write(corpus: dict[str, bytes], folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, data in corpus.items():
        p = folder / f"{name}.jsonl"
        p.write_bytes(data)
        out[name] = p
    return out
