"""OpenAI request and response shapes shared by the decoder services.

Requests accept OpenAI's chat and completions parameters (README-engine's compatibility table
lists each). The few we cannot honour (``best_of`` > 1, ``echo``, ``suffix``, audio, the
deprecated ``functions``) are refused with a 400 that names them rather than silently
ignored; a handful that change nothing about the output (``user``, ``metadata``, ``store``, ...)
are accepted. Limits that depend on the server (``n``, ``max_tokens``, ``logit_bias`` ids) are
checked by :class:`modelfleet.decoding.service.DecoderService` against its settings.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from modelfleet.errors import UnsupportedParameter

# Accepted but without effect on the output.
_INERT = frozenset(
    {"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"}
)
MAX_TOP_LOGPROBS = 20
# Ceilings checked while parsing (see modelfleet.schemas): the llm's MAX_MESSAGES setting is the
# real limit on messages; the context window bounds token-id prompts long before this.
MAX_MESSAGES = 4096
MAX_CONTENT_PARTS = 256
MAX_PROMPT_IDS = 1 << 17
MAX_LOGIT_BIAS = 4096


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: StrictStr


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    arguments: StrictStr  # JSON text, as OpenAI sends it


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StrictStr
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: (
        StrictStr | Annotated[list[TextPart], Field(min_length=1, max_length=MAX_CONTENT_PARTS)]
    ) | None = None
    name: StrictStr | None = None
    # An assistant turn that called tools.
    tool_calls: Annotated[list[ToolCall], Field(max_length=128)] | None = None
    tool_call_id: StrictStr | None = None  # a tool result answers this call
    refusal: StrictStr | None = None

    @model_validator(mode="after")
    def _content_or_calls(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id (the call it answers)")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def as_template_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": self.text(),
        }
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None and self.role == "tool":
            out["name"] = self.name
        return out


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class SamplingFields(BaseModel):
    """The sampling parameters both APIs take."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    # None means "the model's generation_config, else OpenAI's default"; clients send nulls.
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, description="extension: the k likeliest only")
    repetition_penalty: float | None = Field(
        default=None, gt=0.0, le=2.0, description="extension: >1 discourages repeats"
    )
    ignore_eos: bool = Field(default=False, description="extension: always max_tokens tokens")
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=16)] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: (
        Annotated[
            dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]],
            Field(max_length=MAX_LOGIT_BIAS),
        ]
        | None
    ) = None
    user: StrictStr | None = None

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def choices(self) -> int:
        return self.n or 1

    def refuse_unsupported(self, extra_checks: Iterable[tuple[bool, str]] = ()) -> None:
        """Raise one 400 naming every parameter we would otherwise have to ignore."""
        bad = [name for name in (self.model_extra or {}) if name not in _INERT]
        bad += [name for failed, name in extra_checks if failed]
        if bad:
            raise UnsupportedParameter(
                f"unsupported parameter(s): {', '.join(bad)}", param=bad[0].split("=")[0]
            )


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: StrictStr = Field(min_length=1, max_length=64)
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: Annotated[list[Any], Field(max_length=128)] | None = None
    function_call: Any = None
    modalities: Annotated[list[str], Field(max_length=4)] | None = None

    def check(self) -> None:
        self.refuse_unsupported(
            [
                (bool(self.functions), "functions (deprecated by OpenAI: use tools)"),
                (self.function_call is not None, "function_call (use tool_choice)"),
                (self.modalities not in (None, ["text"]), "modalities"),
            ]
        )

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens else self.max_tokens

    def top_logprobs_k(self) -> int | None:
        """None: no logprobs; k: the chosen token's and the k likeliest."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(SamplingFields):
    prompt: (
        StrictStr
        | Annotated[list[StrictStr], Field(min_length=1, max_length=64)]
        | Annotated[list[int], Field(min_length=1, max_length=MAX_PROMPT_IDS)]
    )
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def check(self) -> None:
        self.refuse_unsupported(
            [
                (self.echo, "echo"),
                (self.best_of not in (None, 1) and self.best_of != self.n, "best_of"),
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
