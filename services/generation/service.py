"""generation service: ``POST /v1/completions`` (OpenAI-compatible) and ``POST /v1/summarize``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from modelfleet.api import COMPLETIONS, SUMMARIZE
from modelfleet.app import json_response
from modelfleet.decoding.handles import Generation
from modelfleet.decoding.logprobs import completion_logprobs
from modelfleet.decoding.openai import SSE_DONE, CompletionRequest, new_id, now, sse, usage
from modelfleet.decoding.sampling import SamplingParams
from modelfleet.decoding.service import DecoderService
from modelfleet.decoding.streaming import (
    collect_all,
    merged,
    sse_response,
    unless_disconnected,
)
from modelfleet.errors import InvalidRequest, PayloadTooLarge
from modelfleet.routes import Route
from modelfleet.schemas import SummarizeRequest
from services.generation.settings import GenerationSettings
from services.generation.summarize import INSTRUCTIONS, Piece, summarise

ROUTE_COMPLETIONS = COMPLETIONS.path
ROUTE_SUMMARIZE = SUMMARIZE.path

# Template and instruction tokens around a chunk, with room to spare.
_SUMMARY_OVERHEAD_TOKENS = 96


class GenerationService(DecoderService):
    name = "generation"
    settings: GenerationSettings

    # -- completions ----------------------------------------------------------------------
    async def start_completions(self, body: CompletionRequest) -> list[Generation]:
        """Validate, tokenise and queue one sequence per prompt (every 4xx is raised here)."""
        body.check()
        many = isinstance(body.prompt, list) and isinstance(body.prompt[0], str)
        if many and len(body.prompt) > self.settings.max_prompts:
            raise InvalidRequest(
                f"{len(body.prompt)} prompts, over this server's {self.settings.max_prompts}",
                param="prompt",
                code="too_many_prompts",
            )
        prompts: list[list[int]]
        if isinstance(body.prompt, str):
            prompts = [await self.encode_text(body.prompt)]
        elif body.prompt and isinstance(body.prompt[0], int):
            vocab = len(self.lm.tokenizer)
            ids = [int(t) for t in body.prompt]
            if any(not 0 <= t < vocab for t in ids):
                raise InvalidRequest(f"prompt token ids must be in [0, {vocab})", param="prompt")
            prompts = [ids]
        else:
            prompts = [await self.encode_text(str(p)) for p in body.prompt]
        params = [
            self.sampling(body, len(p), body.max_tokens, logprobs=body.logprobs) for p in prompts
        ]
        gens: list[Generation] = []
        try:
            # Choice index = prompt index * n + choice, as OpenAI numbers them.
            for prompt, p in zip(prompts, params, strict=True):
                gens.extend(self.generate_n(prompt, p, ROUTE_COMPLETIONS))
        except BaseException:
            for g in gens:
                g.cancel()
            raise
        return gens

    async def _completion_chunks(
        self,
        gens: Sequence[Generation],
        head: dict[str, Any],
        include_usage: bool,
        logprobs: bool,
        n: int,
    ) -> AsyncIterator[bytes]:
        base = {**head, "object": "text_completion"}
        if include_usage:
            base["usage"] = None
        offsets = [0] * len(gens)
        async for i, part in merged(gens):
            if part.text or part.finish_reason or part.logprobs:
                lps = None
                if logprobs:
                    lps = completion_logprobs(part.logprobs, self.grammars.token_bytes, offsets[i])
                    offsets[i] += sum(len(t) for t in lps["tokens"])
                choice = {
                    "text": part.text,
                    "index": i,
                    "logprobs": lps,
                    "finish_reason": part.finish_reason,
                }
                yield sse({**base, "choices": [choice]})
        if include_usage:
            prompt = sum(g.prompt_tokens for g in gens[::n])
            completion = sum(g.completion_tokens for g in gens)
            yield sse({**base, "choices": [], "usage": usage(prompt, completion)})
        yield SSE_DONE

    # -- summaries ------------------------------------------------------------------------
    async def summarize(self, body: SummarizeRequest) -> dict[str, Any]:
        s = self.settings
        if len(body.input) > s.summary_max_input_chars:
            raise PayloadTooLarge(
                f"input has {len(body.input)} characters, over this server's "
                f"{s.summary_max_input_chars}",
                param="input",
            )
        max_tokens = body.max_tokens or s.summary_default_tokens
        if max_tokens > s.max_tokens_cap:
            raise InvalidRequest(
                f"max_tokens={max_tokens} is over this server's limit of {s.max_tokens_cap}",
                param="max_tokens",
            )
        window = self.engine.context_window
        chunk_tokens = min(
            s.summary_chunk_tokens,
            window - _SUMMARY_OVERHEAD_TOKENS - max(max_tokens, s.summary_map_tokens),
        )
        if chunk_tokens < 32:
            raise InvalidRequest(
                f"max_tokens={max_tokens} leaves no room for input in the {window}-token "
                "context window",
                param="max_tokens",
            )
        tok = self.lm.tokenizer

        def count(texts: Sequence[str]) -> list[int]:
            if not texts:
                return []
            ids = tok(list(texts), add_special_tokens=False)["input_ids"]
            return [len(x) for x in ids]

        async def once(text: str, style: str, limit: int) -> Piece:
            prompt = await self.encode_chat(
                [{"role": "user", "content": f"{INSTRUCTIONS[style]}\n\nText:\n{text}"}],
                check_chars=False,
            )
            params = SamplingParams(max_tokens=limit, temperature=body.temperature, seed=body.seed)
            self.engine.check_lengths(len(prompt), limit)
            done = await self.generate(prompt, params, ROUTE_SUMMARIZE).collect()
            return Piece(done.text, done.finish_reason, done.prompt_tokens, done.completion_tokens)

        result = await summarise(
            body.input,
            style=body.style,
            max_tokens=max_tokens,
            chunk_tokens=chunk_tokens,
            # Partials must be much shorter than chunks, or reducing them never converges.
            map_tokens=min(s.summary_map_tokens, chunk_tokens // 4),
            once=once,
            count=count,
        )
        return {
            "id": new_id("sum"),
            "object": "summary",
            "created": now(),
            "model": self.model_id,
            "style": body.style,
            "summary": result.text,
            "finish_reason": result.finish_reason,
            "chunks": result.chunks,
            "model_calls": result.calls,
            "usage": usage(result.prompt_tokens, result.completion_tokens),
        }

    # -- routes ---------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        async def completions(body: CompletionRequest, request: Request) -> Response:
            gens = await self.start_completions(body)
            head = {
                "id": new_id("cmpl"),
                "created": now(),
                "model": self.model_id,
                "system_fingerprint": self.system_fingerprint(),
            }
            if body.stream:
                chunks = self._completion_chunks(
                    gens, head, body.include_usage(), body.logprobs is not None, body.choices()
                )
                return sse_response(chunks, gens)
            done = await collect_all(request, gens)
            return json_response(
                {
                    **head,
                    "object": "text_completion",
                    "choices": [
                        {
                            "text": d.text,
                            "index": i,
                            "logprobs": None
                            if body.logprobs is None
                            else completion_logprobs(d.logprobs, self.grammars.token_bytes),
                            "finish_reason": d.finish_reason,
                        }
                        for i, d in enumerate(done)
                    ],
                    # Each prompt is counted once, however many choices share it.
                    "usage": usage(
                        sum(d.prompt_tokens for d in done[:: body.choices()]),
                        sum(d.completion_tokens for d in done),
                    ),
                }
            )

        async def summarize(body: SummarizeRequest, request: Request) -> Response:
            return json_response(await unless_disconnected(request, self.summarize(body)))

        return [Route(COMPLETIONS, completions, raw=True), Route(SUMMARIZE, summarize, raw=True)]
