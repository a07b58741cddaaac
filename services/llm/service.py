"""llm service: ``POST /v1/chat/completions`` (OpenAI-compatible, streaming, tools, JSON)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from modelfleet.api import CHAT
from modelfleet.app import json_response
from modelfleet.decoding.handles import Generation
from modelfleet.decoding.logprobs import chat_logprobs
from modelfleet.decoding.openai import (
    SSE_DONE,
    ChatCompletionRequest,
    NamedToolChoice,
    new_id,
    now,
    sse,
    usage,
)
from modelfleet.decoding.service import DecoderService
from modelfleet.decoding.streaming import collect_all, merged, sse_response
from modelfleet.decoding.tools import ToolCallParser
from modelfleet.errors import InvalidRequest
from modelfleet.routes import Route
from services.llm.settings import LlmSettings

ROUTE_CHAT = CHAT.path


@dataclass(slots=True)
class ChatJob:
    """A queued chat request: its choices, and whether their text is parsed for tool calls."""

    gens: list[Generation]
    tools: bool
    logprobs: bool


def _tool_choice(body: ChatCompletionRequest) -> Any:
    """The effective tool_choice, checked against the tools (None: tools are off)."""
    tools = body.tools or []
    choice = body.tool_choice if body.tool_choice is not None else ("auto" if tools else "none")
    if choice == "none":
        return None
    if not tools:
        raise InvalidRequest(f"tool_choice={choice!r} needs tools", param="tool_choice")
    if isinstance(choice, NamedToolChoice):
        names = [t.function.name for t in tools]
        if choice.function.name not in names:
            raise InvalidRequest(
                f"tool_choice names {choice.function.name!r}, which is not among tools {names}",
                param="tool_choice",
            )
        return choice.model_dump()
    return choice


class LlmService(DecoderService):
    name = "llm"
    settings: LlmSettings

    async def start_chat(self, body: ChatCompletionRequest) -> ChatJob:
        """Validate, template and queue a chat request (every 4xx is raised here)."""
        body.check()
        if len(body.messages) > self.settings.max_messages:
            raise InvalidRequest(
                f"{len(body.messages)} messages, over this server's {self.settings.max_messages}",
                param="messages",
                code="too_many_messages",
            )
        messages = [m.as_template_dict() for m in body.messages]
        choice = _tool_choice(body)
        tools = [t.model_dump(exclude_none=True) for t in body.tools or []] if choice else None
        fmt = body.response_format.type if body.response_format else "text"
        grammar: Any = None
        if tools and fmt != "text":
            raise InvalidRequest(
                "response_format and tools cannot be combined; use tool_choice='none' or "
                "response_format={'type': 'text'}",
                param="response_format",
            )
        if tools:
            parallel = body.parallel_tool_calls is not False
            grammar = await self.grammars.tool_calls(tools, choice, parallel, "tools")
        elif fmt == "json_object":
            grammar = await self.grammars.json_schema(None, "response_format")
        elif fmt == "json_schema":
            spec = body.response_format.json_schema if body.response_format else None
            if spec is None or spec.json_schema is None:
                raise InvalidRequest(
                    "response_format json_schema needs json_schema.schema",
                    param="response_format",
                )
            grammar = await self.grammars.json_schema(spec.json_schema, "response_format")
        prompt = await self.encode_chat(messages, tools=tools)
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        params = self.sampling(
            body,
            len(prompt),
            body.requested_max_tokens(),
            param=param,
            logprobs=body.top_logprobs_k(),
            grammar=grammar,
        )
        gens = self.generate_n(prompt, params, ROUTE_CHAT)
        return ChatJob(gens, tools=bool(tools), logprobs=body.logprobs is True)

    def routes(self) -> list[Route]:
        async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
            job = await self.start_chat(body)
            head = {
                "id": new_id("chatcmpl"),
                "created": now(),
                "model": self.model_id,
                "system_fingerprint": self.system_fingerprint(),
            }
            if body.stream:
                return sse_response(self._chunks(job, head, body.include_usage()), job.gens)
            done = await collect_all(request, job.gens)
            choices = []
            for i, d in enumerate(done):
                message: dict[str, Any] = {"role": "assistant", "content": d.text}
                finish = d.finish_reason
                if job.tools:
                    parser = ToolCallParser()
                    content, calls = parser.feed(d.text)
                    content += parser.finish()
                    message["content"] = content if content.strip() or not calls else None
                    if calls:
                        message["tool_calls"] = calls
                        finish = "tool_calls" if finish == "stop" else finish
                lps = chat_logprobs(d.logprobs, self.grammars.token_bytes) if job.logprobs else None
                choices.append(
                    {"index": i, "message": message, "logprobs": lps, "finish_reason": finish}
                )
            return json_response(
                {
                    **head,
                    "object": "chat.completion",
                    "choices": choices,
                    "usage": usage(done[0].prompt_tokens, sum(d.completion_tokens for d in done)),
                }
            )

        return [Route(CHAT, chat_completions, raw=True)]

    async def _chunks(
        self, job: ChatJob, head: dict[str, Any], include_usage: bool
    ) -> AsyncIterator[bytes]:
        base = {**head, "object": "chat.completion.chunk"}
        if include_usage:
            base["usage"] = None
        parsers = [ToolCallParser() for _ in job.gens]
        token_bytes = self.grammars.token_bytes

        def chunk(
            i: int, delta: dict[str, Any], finish: str | None = None, lps: Any = None
        ) -> bytes:
            choice = {"index": i, "delta": delta, "logprobs": lps, "finish_reason": finish}
            return sse({**base, "choices": [choice]})

        for i in range(len(job.gens)):
            yield chunk(i, {"role": "assistant", "content": ""})
        async for i, part in merged(job.gens):
            text, calls = part.text, list[dict[str, Any]]()
            if job.tools:
                text, calls = parsers[i].feed(part.text)
                if part.finish_reason is not None:
                    text += parsers[i].finish()
            lps = chat_logprobs(part.logprobs, token_bytes) if job.logprobs else None
            if text or (lps and lps["content"]):
                yield chunk(i, {"content": text}, lps=lps)
            for call in calls:
                k = parsers[i].calls - len(calls) + calls.index(call)
                yield chunk(i, {"tool_calls": [{"index": k, **call}]})
            if part.finish_reason is not None:
                reason = part.finish_reason
                if parsers[i].calls and reason == "stop":
                    reason = "tool_calls"
                yield chunk(i, {}, reason)
        if include_usage:
            completion = sum(g.completion_tokens for g in job.gens)
            yield sse(
                {**base, "choices": [], "usage": usage(job.gens[0].prompt_tokens, completion)}
            )
        yield SSE_DONE
