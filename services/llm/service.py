"""llm service: ``POST /v1/chat/completions`` (OpenAI-compatible, streaming)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from modelfleet.api import CHAT
from modelfleet.app import json_response
from modelfleet.decoding.engine import Generation
from modelfleet.decoding.openai import SSE_DONE, ChatCompletionRequest, new_id, now, sse, usage
from modelfleet.decoding.service import DecoderService
from modelfleet.decoding.streaming import collect_all, sse_response
from modelfleet.routes import Route
from services.llm.settings import LlmSettings

ROUTE_CHAT = CHAT.path


class LlmService(DecoderService):
    name = "llm"
    settings: LlmSettings

    async def start_chat(self, body: ChatCompletionRequest) -> Generation:
        """Validate, template and queue a chat request (every 4xx is raised here)."""
        body.check()
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        prompt = await self.encode_chat(messages)
        params = self.sampling(body, len(prompt), body.requested_max_tokens())
        return self.generate(prompt, params, ROUTE_CHAT)

    def routes(self) -> list[Route]:
        async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
            gen = await self.start_chat(body)
            head = {
                "id": new_id("chatcmpl"),
                "created": now(),
                "model": self.model_id,
                "system_fingerprint": self.system_fingerprint(),
            }
            if body.stream:
                return sse_response(self._chunks(gen, head, body.include_usage()), [gen])
            (done,) = await collect_all(request, [gen])
            return json_response(
                {
                    **head,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": done.text},
                            "logprobs": None,
                            "finish_reason": done.finish_reason,
                        }
                    ],
                    "usage": usage(done.prompt_tokens, done.completion_tokens),
                }
            )

        return [Route(CHAT, chat_completions)]

    async def _chunks(
        self, gen: Generation, head: dict[str, Any], include_usage: bool
    ) -> AsyncIterator[bytes]:
        base = {**head, "object": "chat.completion.chunk"}
        if include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse({**base, "choices": [choice]})

        yield chunk({"role": "assistant", "content": ""})
        async for part in gen:
            if part.text:
                yield chunk({"content": part.text})
            if part.finish_reason is not None:
                yield chunk({}, part.finish_reason)
        if include_usage:
            yield sse(
                {**base, "choices": [], "usage": usage(gen.prompt_tokens, gen.completion_tokens)}
            )
        yield SSE_DONE
