"""Fine-tune data rules.

`strict` gives the verdicts of the 1.x client's `together.utils.files.check_file` (formats
text, messages, prompt+completion, preference; allowed roles and their order, an assistant
turn, weights 0/1, preference fields, multimodal images), line by line, with its first
failing line. `basic` checks only that every record is in one known format, the same
throughout the file.
"""

from __future__ import annotations

from typing import Any

from ._report import CheckIssue

# format name -> the columns that make it (the 1.x client's table, in its order)
FORMATS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "conversation": ("messages",),
    "instruction": ("prompt", "completion"),
    "preference": ("input", "preferred_output", "non_preferred_output"),
}
ROLES = ("system", "user", "assistant")
MAX_IMAGES = 10
MAX_IMAGE_URL = len("data:image/jpeg;base64,") + 4 * (10 * 1024 * 1024) // 3
IMAGE_PREFIXES = tuple(f"data:image/{fmt};base64," for fmt in ("jpeg", "png", "webp"))


class Bad(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


_FORMAT_SETS = [(name, frozenset(columns)) for name, columns in FORMATS.items()]
_ROLES = frozenset(ROLES)


def detect(obj: dict[str, Any]) -> str | None:
    """The first format whose columns are all present (basic mode's view of a record)."""
    keys = obj.keys()
    for name, columns in _FORMAT_SETS:
        if columns <= keys:
            return name
    return None


class FineTuneRules:
    def __init__(self, strict: bool, require_assistant: bool = True) -> None:
        self.strict = strict
        self.require_assistant = require_assistant
        self.format: str | None = None
        self._formats: dict[tuple[str, ...], tuple[str | None, Bad | None]] = {}

    def record(self, number: int, obj: dict[str, Any]) -> CheckIssue | None:
        try:
            current = self._format_of(obj)
            if current is None:
                raise Bad("finetune.format.unknown",
                          f"no known data format: expected the columns of one of text, messages, "
                          f"prompt+completion, or input+preferred_output+non_preferred_output; found {list(obj)[:8]}")
            if self.strict:
                self._strict_record(current, obj)
            if self.format is None:
                self.format = current
            elif current != self.format:
                raise Bad("finetune.format.mixed",
                          f"every record must have the same format: the file started as {self.format}, "
                          f"this record is {current}")
        except Bad as exc:
            return CheckIssue(number, exc.rule, exc.message)
        return None

    def _format_of(self, obj: dict[str, Any]) -> str | None:
        """The record's format (`_strict_format` or `detect`), which depends only on its keys in
        their order: remembered per key tuple (a file has one or a few), so a record costs one
        tuple and one lookup instead of four set comparisons."""
        keys = tuple(obj)
        known = self._formats.get(keys)
        if known is None:
            try:
                known = (self._strict_format(obj) if self.strict else detect(obj), None)
            except Bad as exc:
                known = (None, exc)
            if len(self._formats) >= 256:
                self._formats.clear()
            self._formats[keys] = known
        if known[1] is not None:
            raise Bad(known[1].rule, known[1].message)
        return known[0]

    # -- strict: the 1.x checker's rules ------------------------------------------------------

    @staticmethod
    def _strict_format(obj: dict[str, Any]) -> str | None:
        keys = obj.keys()
        current = None
        for name, columns in _FORMAT_SETS:
            if columns <= keys:
                if current is None:
                    current = name
                elif current != name:
                    raise Bad("finetune.format.ambiguous", f"the record has the columns of both {current} and {name}")
                if len(keys) != len(columns):
                    extra = next(c for c in obj if c not in columns)
                    raise Bad("finetune.format.extra_column", f"extra column {extra!r} for the {name} format")
        return current

    def _strict_record(self, fmt: str, obj: dict[str, Any]) -> None:
        if fmt == "preference":
            check_preference(obj)
        elif fmt == "conversation":
            check_messages(obj["messages"], require_assistant=self.require_assistant)
        else:
            for column in FORMATS[fmt]:
                check_content(obj[column], "assistant" if column == "completion" else "user")


def check_messages(messages: Any, *, require_assistant: bool) -> None:
    if messages.__class__ is not list:
        if not isinstance(messages, list):
            raise Bad("finetune.messages.not_list", f"`messages` must be a list, found {type(messages).__name__}")
    if not messages:
        raise Bad("finetune.messages.empty", "`messages` must not be empty")
    previous = None
    assistant = False
    multimodal: bool | None = None
    images = 0
    # One loop where the 1.x checker has two (shapes of all messages first, then each message's
    # rules): a record with problems of both kinds fails on the same line either way; only the
    # rule named for it may differ.
    for m in messages:
        if m.__class__ is not dict:
            if not isinstance(m, dict):
                raise Bad("finetune.message.not_object", f"each message must be an object, found {type(m).__name__}")
        if "role" not in m or "content" not in m:
            column = "role" if "role" not in m else "content"
            raise Bad("finetune.message.missing_column", f"a message lacks `{column}`")
        weight = None
        if "weight" in m:
            weight = m["weight"]
            if not isinstance(weight, int):
                raise Bad("finetune.weight.type", "`weight` must be an integer")
            if weight not in (0, 1):
                raise Bad("finetune.weight.value", "`weight` must be 0 or 1")
        role = m["role"]
        if not isinstance(role, str):
            raise Bad("finetune.role.not_string", f"a role must be a string, found {type(role).__name__}")
        if role not in _ROLES:
            raise Bad("finetune.role.unknown", f"unknown role {role!r}; roles are system, user, assistant")
        if role == previous:
            raise Bad("finetune.role.order", f"two {role} messages in a row: after the optional system message, "
                                             "roles must alternate user/assistant")
        previous = role
        if role == "assistant":
            assistant = True
        content = m["content"]
        if content.__class__ is str:
            is_mm, n = False, 0
        else:
            is_mm, n = check_content(content, role)
            if n > 0 and weight is not None and weight != 0:
                raise Bad("finetune.image.weight", "a message with images cannot have a non-zero weight")
        if multimodal is None:
            multimodal = is_mm
        elif multimodal != is_mm:
            raise Bad("finetune.content.mixed_multimodal",
                      "the messages of a record must all be multimodal lists or all be strings")
        images += n
    if images > MAX_IMAGES:
        raise Bad("finetune.image.too_many", f"at most {MAX_IMAGES} images per record, found {images}")
    if require_assistant and not assistant:
        raise Bad("finetune.assistant.missing", "a record needs at least one assistant message")


def check_content(content: Any, role: str) -> tuple[bool, int]:
    """(is multimodal, number of images); Bad if the content is neither a string nor a valid list."""
    if isinstance(content, str):
        return False, 0
    if not isinstance(content, list):
        raise Bad("finetune.content.type",
                  f"content must be a string or a list of parts, found {type(content).__name__}")
    images = 0
    for item in content:
        if not isinstance(item, dict):
            raise Bad("finetune.content.item", "each content part must be an object")
        if "type" not in item:
            raise Bad("finetune.content.item", "each content part needs a `type`")
        kind = item["type"]
        if kind == "text":
            if not isinstance(item.get("text"), str):
                raise Bad("finetune.content.text", "a text part needs a string `text`")
        elif kind == "image_url":
            if role != "user":
                raise Bad("finetune.image.role", "only user messages can contain images")
            image = item.get("image_url")
            if not isinstance(image, dict):
                raise Bad("finetune.image.url", "an image part needs an `image_url` object")
            url = image.get("url")
            if not url or not isinstance(url, str):
                raise Bad("finetune.image.url", "an image part needs a string `image_url.url`")
            if not url.startswith(IMAGE_PREFIXES):
                raise Bad("finetune.image.format", "an image must be a base64 data url of JPEG, PNG or WEBP")
            if len(url) > MAX_IMAGE_URL:
                raise Bad("finetune.image.too_large", "an image must be smaller than 10 MB")
            images += 1
        else:
            raise Bad("finetune.content.item", f"a content part's type must be text or image_url, found {kind!r}")
    if images > MAX_IMAGES:
        raise Bad("finetune.image.too_many", f"at most {MAX_IMAGES} images per message, found {images}")
    return True, images


def check_preference(obj: dict[str, Any]) -> None:
    inp = obj["input"]
    if not isinstance(inp, dict):
        raise Bad("finetune.preference.input", "`input` must be an object")
    if "messages" not in inp:
        raise Bad("finetune.preference.input", "`input` must have `messages`")
    check_messages(inp["messages"], require_assistant=False)
    if inp["messages"][-1]["role"] == "assistant":
        raise Bad("finetune.preference.last_role", "the last input message must not be from the assistant")
    for key in ("preferred_output", "non_preferred_output"):
        value = obj[key]
        if not isinstance(value, list):
            raise Bad("finetune.preference.output", f"`{key}` must be a list")
        if len(value) != 1:
            raise Bad("finetune.preference.output", f"`{key}` must hold exactly one message")
        first = value[0]
        if not isinstance(first, dict):
            raise Bad("finetune.preference.output", f"`{key}[0]` must be an object")
        if "role" not in first:
            raise Bad("finetune.preference.output", f"`{key}[0]` needs a role")
        if first["role"] != "assistant":
            raise Bad("finetune.preference.output", f"`{key}[0]` must have the assistant role")
        if "content" not in first:
            raise Bad("finetune.preference.output", f"`{key}[0]` needs content")
        check_content(first["content"], "assistant")
