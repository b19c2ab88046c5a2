"""The emulator's fake model: one answer per batch input line, deterministic.

  chat: the last user message reversed, as a chat.completion with a usage block;
  /v1/completions: the prompt reversed, as a text_completion; audio: the `file` value reversed.
  Output line: {"id", "custom_id", "response": {"status_code": 200, "request_id", "body"}, "error": null}
  A line whose body asks for model "unknown-model" (or a chat line without messages, a
  completion without prompt) is refused for itself: an error-file line
  {"custom_id", "error": {"message", "code": "model_not_available" | "invalid_request", "status_code": 400}}.
  With a transient rate r, a request is answered with a 429 in the error file instead
  ({"custom_id", "response": {"status_code": 429, ...}, "error": {"code": "rate_limited", "status_code": 429}})
  when sha256(job id, custom_id) falls below r: decided per job and request, so the same
  request sent again in another job may pass.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

UNKNOWN_MODEL = "unknown-model"


@dataclass(frozen=True)
class Asked:
    """What the model needs of a job: its id, endpoint, default model, creation time, and the
    share of requests answered with a transient 429."""

    job_id: str
    endpoint: str
    model_id: str | None
    created: int
    transient_rate: float = 0.0


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def transient(job_id: str, custom_id: Any, rate: float) -> bool:
    """Whether this job answers this request with a transient 429 (deterministic)."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{job_id}\n{custom_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def _refused(cid: Any, message: str, code: str) -> tuple[str, bytes]:
    return "errors", _line({"custom_id": cid, "error": {"message": message, "code": code, "status_code": 400}})


def _rate_limited(cid: Any, rid: str) -> tuple[str, bytes]:
    message = "rate limited: try again later"
    return "errors", _line({"custom_id": cid,
                            "response": {"status_code": 429, "request_id": f"req_{rid}",
                                         "body": {"error": {"message": message, "type": "rate_limit"}}},
                            "error": {"message": message, "code": "rate_limited", "status_code": 429}})


def _chat(body: dict[str, Any], model: Any, rid: str, created: int) -> tuple[dict[str, Any], str, int] | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"] or messages
    last = users[-1]
    reply = _text(last.get("content") if isinstance(last, dict) else last)[::-1]
    prompt_tokens = sum(_tokens(_text(m.get("content"))) for m in messages if isinstance(m, dict))
    answer = {"id": f"chatcmpl-{rid}", "object": "chat.completion", "created": created, "model": model,
              "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                           "finish_reason": "stop", "logprobs": None}]}
    return answer, reply, prompt_tokens


def _completion(body: dict[str, Any], model: Any, rid: str, created: int) -> tuple[dict[str, Any], str, int] | None:
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        return None
    reply = prompt[::-1]
    answer = {"id": f"cmpl-{rid}", "object": "text_completion", "created": created, "model": model,
              "choices": [{"index": 0, "text": reply, "finish_reason": "stop", "logprobs": None}]}
    return answer, reply, _tokens(prompt)


def _answer(job: Asked, body: dict[str, Any], model: Any, rid: str) -> tuple[dict[str, Any], str, int] | str:
    """(answer body, reply text, prompt tokens), or the refusal's message."""
    if job.endpoint == "/v1/chat/completions":
        return _chat(body, model, rid, job.created) or "messages must be a non-empty list"
    if job.endpoint == "/v1/completions":
        return _completion(body, model, rid, job.created) or "prompt must be a string"
    reply = str(body.get("file", ""))[::-1]  # audio transcriptions and translations
    return {"text": reply}, reply, 1


def answer_line(job: Asked, number: int, raw: bytes) -> tuple[str, bytes]:
    """("output", line) or ("errors", line) for input line `number`."""
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return _refused(None, f"line {number} is not a JSON object", "invalid_request")
    cid = obj.get("custom_id")
    body = obj.get("body")
    if not isinstance(body, dict):
        return _refused(cid, "body must be an object", "invalid_request")
    model = body.get("model") or job.model_id
    if model == UNKNOWN_MODEL:
        return _refused(cid, f"Unable to access model {model}. Please visit https://api.together.ai/models "
                             "to view the list of supported models.", "model_not_available")
    rid = hashlib.sha256(f"{job.job_id}\n{number}\n{cid}".encode()).hexdigest()[:24]
    if transient(job.job_id, cid, job.transient_rate):
        return _rate_limited(cid, rid)
    got = _answer(job, body, model, rid)
    if isinstance(got, str):
        return _refused(cid, got, "invalid_request")
    answer, reply, prompt_tokens = got
    answer["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": _tokens(reply),
                       "total_tokens": prompt_tokens + _tokens(reply)}
    return "output", _line({"id": f"batch_req_{rid}", "custom_id": cid,
                            "response": {"status_code": 200, "request_id": f"req_{rid}", "body": answer},
                            "error": None})
