"""OpenAI request and response shapes shared by the decoder services.

Requests accept OpenAI's parameters. Parameters we cannot honour (``n`` > 1, tools, logprobs,
penalties, non-text response formats, ...) are refused with a 400 that names them rather than
silently ignored; a handful that change nothing about the output (``user``, ``metadata``,
``store``, ...) are accepted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from modelfleet.errors import UnsupportedParameter

Role = Literal["system", "developer", "user", "assistant"]

# Accepted but without effect on the output.
_INERT = frozenset(
    {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key",
     "safety_identifier"}
)  # fmt: skip


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: StrictStr | Annotated[list[TextPart], Field(min_length=1)]
    name: StrictStr | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class SamplingFields(BaseModel):
    """The sampling parameters both APIs take."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    # None means the default, as some clients send explicit nulls.
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, description="extension: the k likeliest only")
    repetition_penalty: float | None = Field(
        default=None, ge=1.0, le=2.0, description="extension: >1 discourages repeats"
    )
    ignore_eos: bool = Field(default=False, description="extension: always max_tokens tokens")
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=16)] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1)
    logprobs: Any = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def refuse_unsupported(self, extra_checks: Iterable[tuple[bool, str]] = ()) -> None:
        """Raise one 400 naming every parameter we would otherwise have to ignore."""
        bad = [name for name in (self.model_extra or {}) if name not in _INERT]
        checks = [
            (self.n not in (None, 1), f"n={self.n}"),
            (self.logprobs not in (None, False, 0), "logprobs"),
            (self.presence_penalty not in (None, 0), "presence_penalty"),
            (self.frequency_penalty not in (None, 0), "frequency_penalty"),
            (bool(self.logit_bias), "logit_bias"),
            *extra_checks,
        ]
        bad += [name for failed, name in checks if failed]
        if bad:
            raise UnsupportedParameter(
                f"unsupported parameter(s): {', '.join(bad)}", param=bad[0].split("=")[0]
            )


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    top_logprobs: int | None = None
    modalities: list[str] | None = None

    def check(self) -> None:
        fmt = (self.response_format or {}).get("type", "text")
        self.refuse_unsupported(
            [
                (bool(self.tools), "tools"),
                (self.tool_choice not in (None, "none", "auto"), "tool_choice"),
                (bool(self.functions), "functions"),
                (self.function_call not in (None, "none", "auto"), "function_call"),
                (fmt != "text", f"response_format={fmt}"),
                (bool(self.top_logprobs), "top_logprobs"),
                (self.modalities not in (None, ["text"]), "modalities"),
            ]
        )

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens else self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: (
        StrictStr
        | Annotated[list[StrictStr], Field(min_length=1, max_length=64)]
        | Annotated[list[int], Field(min_length=1)]
    )
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def check(self) -> None:
        self.refuse_unsupported(
            [
                (self.echo, "echo"),
                (self.best_of not in (None, 1), "best_of"),
                (self.suffix is not None, "suffix"),
            ]
        )


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(obj: Any) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def now() -> int:
    return int(time.time())
