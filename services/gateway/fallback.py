"""Pool fallbacks between chat and completions, and their request/response conversions.

Chat -> generation renders the messages with a plain role-prefixed template, the format small
base and instruction-tuned models continue most reliably without a tokenizer chat template::

    System: You are terse.
    User: Name a prime.
    Assistant:

``"\\nUser:"`` is added to the stop sequences (and cut from the text if the backend ignored it)
so the model answers one turn instead of writing the user's next line. Completions -> llm sends
the prompt as one user message. Answers and stream chunks are converted back to the shape the
client asked for (``chat.completion`` / ``chat.completion.chunk`` or ``text_completion``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from modelfleet.api import CHAT, COMPLETIONS, GENERATION, LLM
from modelfleet.errors import InvalidRequest

ROLE_LABELS = {
    "system": "System",
    "developer": "System",
    "user": "User",
    "assistant": "Assistant",
    "tool": "Tool",
}
TURN_STOP = "\nUser:"
MAX_STOPS = 4
# Sampling parameters both APIs share and that pass through unchanged.
SHARED_PARAMS = ("max_tokens", "temperature", "top_p", "top_k", "n", "stream", "seed",
                 "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias",
                 "user", "stream_options")  # fmt: skip


def chat_only(payload: dict[str, Any]) -> str | None:
    """The chat feature in ``payload`` that the completions API cannot honour, if any.

    Converting such a request would silently drop what the client asked for (a JSON answer,
    tool calls, log-probabilities), so it is not converted: the client gets 503 + Retry-After.
    """
    fmt = payload.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type", "text") != "text":
        return "response_format"
    if payload.get("tools") and payload.get("tool_choice") != "none":
        return "tools"
    if payload.get("logprobs") or payload.get("top_logprobs"):
        return "logprobs"
    return None


def completion_only(payload: dict[str, Any]) -> str | None:
    """The completions feature in ``payload`` that the chat API cannot honour, if any."""
    for name in ("logprobs", "echo", "suffix", "best_of"):
        if payload.get(name):
            return name
    return None


def message_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    raise InvalidRequest(f"{where}.content must be a string or a list of parts", param=where)


def chat_to_prompt(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list", param="messages")
    lines = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidRequest(f"messages[{i}] needs a string role", param=f"messages[{i}]")
        role = m["role"]
        label = ROLE_LABELS.get(role, role.capitalize())
        lines.append(f"{label}: {message_text(m.get('content'), f'messages[{i}]')}")
    lines.append("Assistant:")
    return "\n".join(lines)


def _stops(stop: Any, extra: str | None = None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str)]
    if extra is not None and extra not in stops:
        stops = [*stops[: MAX_STOPS - 1], extra]
    return stops


def _copy_params(payload: dict[str, Any]) -> dict[str, Any]:
    out = {k: payload[k] for k in SHARED_PARAMS if k in payload}
    if "max_tokens" not in out and "max_completion_tokens" in payload:
        out["max_tokens"] = payload["max_completion_tokens"]
    return out


def _cut_turn(text: str) -> str:
    i = text.find(TURN_STOP)
    return text[:i] if i >= 0 else text


# -- chat served by the completions API ------------------------------------------------------
def chat_request_as_completion(payload: dict[str, Any]) -> dict[str, Any]:
    out = _copy_params(payload)
    out["prompt"] = chat_to_prompt(payload.get("messages"))
    out["stop"] = _stops(payload.get("stop"), TURN_STOP)
    return out


def _envelope(
    data: dict[str, Any], obj: str, choices: list[dict[str, Any]], *, stream: bool
) -> dict[str, Any]:
    """The converted reply around ``choices``: id re-prefixed for ``obj``'s API, created, model,
    usage (a stream chunk carries usage only where the source chunk did)."""
    chat = obj.startswith("chat.")
    new, old = ("chatcmpl-", "cmpl-") if chat else ("cmpl-", "chatcmpl-")
    source_id = data.get("id") or ("" if stream else uuid.uuid4().hex)
    out = {
        "id": new + str(source_id).removeprefix(old),
        "object": obj,
        "created": data.get("created") or int(time.time()),
        "model": data.get("model"),
        "choices": choices,
    }
    if not stream or data.get("usage") is not None:
        out["usage"] = data.get("usage")
    return out


def completion_reply_as_chat(data: dict[str, Any]) -> dict[str, Any]:
    choices = [
        {
            "index": c.get("index", i),
            "message": {"role": "assistant", "content": _cut_turn(c.get("text") or "").strip()},
            "finish_reason": c.get("finish_reason"),
            "logprobs": None,
        }
        for i, c in enumerate(data.get("choices") or ())
    ]
    return _envelope(data, "chat.completion", choices, stream=False)


class _ChatChunks:
    """Completion stream chunks -> chat.completion.chunk; the first delta of a choice names the
    role, as OpenAI's stream does."""

    def __init__(self) -> None:
        self.started: set[int] = set()

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        choices = []
        for i, c in enumerate(data.get("choices") or ()):
            idx = c.get("index", i)
            delta: dict[str, Any] = {}
            if idx not in self.started:
                self.started.add(idx)
                delta["role"] = "assistant"
            if c.get("text"):
                delta["content"] = c["text"]
            choices.append({"index": idx, "delta": delta, "finish_reason": c.get("finish_reason")})
        return _envelope(data, "chat.completion.chunk", choices, stream=True)


# -- completions served by the chat API ------------------------------------------------------
def completion_request_as_chat(payload: dict[str, Any]) -> dict[str, Any]:
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest(
            "prompt must be a string (a list of prompts cannot be served by the chat fallback)",
            param="prompt",
        )
    out = _copy_params(payload)
    out["messages"] = [{"role": "user", "content": prompt}]
    if payload.get("stop") is not None:
        out["stop"] = _stops(payload["stop"])
    return out


def chat_reply_as_completion(data: dict[str, Any]) -> dict[str, Any]:
    choices = [
        {
            "index": c.get("index", i),
            "text": (c.get("message") or {}).get("content") or "",
            "finish_reason": c.get("finish_reason"),
            "logprobs": None,
        }
        for i, c in enumerate(data.get("choices") or ())
    ]
    return _envelope(data, "text_completion", choices, stream=False)


def _completion_chunk(data: dict[str, Any]) -> dict[str, Any]:
    choices = [
        {
            "index": c.get("index", i),
            "text": (c.get("delta") or {}).get("content") or "",
            "finish_reason": c.get("finish_reason"),
            "logprobs": None,
        }
        for i, c in enumerate(data.get("choices") or ())
    ]
    return _envelope(data, "text_completion", choices, stream=True)


# -- server-sent events ----------------------------------------------------------------------
async def convert_sse(
    chunks: AsyncIterator[bytes], convert: Callable[[dict[str, Any]], dict[str, Any]]
) -> AsyncIterator[bytes]:
    """Re-frame an SSE stream event by event; ``[DONE]``, errors and comments pass unchanged."""
    buf = b""
    async for chunk in chunks:
        buf += chunk.replace(b"\r\n", b"\n")
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            event, buf = buf[:end], buf[end + 2 :]
            yield _convert_event(event, convert)
    if buf.strip():
        yield _convert_event(buf.strip(b"\n"), convert)


def _convert_event(event: bytes, convert: Callable[[dict[str, Any]], dict[str, Any]]) -> bytes:
    data = b"\n".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
    if not data or data == b"[DONE]":
        return event + b"\n\n"
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return event + b"\n\n"
    if not isinstance(obj, dict) or "error" in obj:
        return event + b"\n\n"
    return b"data: " + orjson.dumps(convert(obj)) + b"\n\n"


@dataclass(frozen=True)
class Fallback:
    """How one route is served by another pool's route."""

    pool: str
    path: str
    request: Callable[[dict[str, Any]], dict[str, Any]]
    reply: Callable[[dict[str, Any]], dict[str, Any]]
    chunk: Callable[[], Callable[[dict[str, Any]], dict[str, Any]]]
    # The request's feature the other API cannot honour (then no fallback), or None.
    loses: Callable[[dict[str, Any]], str | None]


CHAT_VIA_GENERATION = Fallback(
    GENERATION,
    COMPLETIONS.path,
    chat_request_as_completion,
    completion_reply_as_chat,
    _ChatChunks,
    chat_only,
)
COMPLETIONS_VIA_LLM = Fallback(
    LLM,
    CHAT.path,
    completion_request_as_chat,
    chat_reply_as_completion,
    lambda: _completion_chunk,
    completion_only,
)

# Route path -> how another pool serves it when its own pool cannot.
FALLBACKS = {CHAT.path: CHAT_VIA_GENERATION, COMPLETIONS.path: COMPLETIONS_VIA_LLM}
