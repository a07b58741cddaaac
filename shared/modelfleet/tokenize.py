"""``POST /tokenize`` and ``POST /detokenize`` in vLLM's shape, for every model service.

A service says which tokenizer serves which of its model ids (:meth:`ModelService.tokenizers`);
the routes here do the rest, so the four services answer alike::

    /tokenize   {model?, prompt | messages, add_special_tokens} -> {tokens, count, max_model_len}
    /detokenize {model?, tokens}                                 -> {prompt}
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from modelfleet.api import DETOKENIZE, TOKENIZE
from modelfleet.errors import InvalidRequest, NotFound
from modelfleet.routes import Route
from modelfleet.schemas import DetokenizeRequest, TokenizeRequest

if TYPE_CHECKING:
    from modelfleet.service import ModelService

MAX_DETOKENIZE = 1 << 20  # ids one /detokenize may send: a bound, far above any context window


@dataclass(frozen=True, slots=True)
class TokenizerRef:
    """A model's tokenizer, its context length, and the lock its other users hold (a fast
    tokenizer keeps truncation settings in shared state: see :class:`SentenceEncoder`)."""

    tokenizer: Any
    max_model_len: int
    lock: threading.Lock | None = field(default=None)

    def held(self) -> contextlib.AbstractContextManager[Any]:
        return self.lock if self.lock is not None else contextlib.nullcontext()


def model_not_found(model: str) -> NotFound:
    return NotFound(f"The model `{model}` does not exist", param="model", code="model_not_found")


def pick(service: ModelService, model: str | None) -> TokenizerRef:
    """The (tokenizer, max_model_len) of ``model``; the service's main model when absent."""
    service.ensure_ready()
    known = service.tokenizers()
    if model is None or model == "":
        return next(iter(known.values()))
    if model not in known:
        raise model_not_found(model)
    return known[model]


def tokenize_routes(service: ModelService) -> list[Route]:
    from modelfleet.app import json_response

    async def tokenize(body: TokenizeRequest, _: Request) -> Response:
        if (body.prompt is None) == (body.messages is None):
            raise InvalidRequest("give exactly one of `prompt` and `messages`", param="prompt")
        ref = pick(service, body.model)
        tok, max_len = ref.tokenizer, ref.max_model_len
        if body.prompt is not None:
            service.check_inputs([body.prompt])
            with ref.held():
                ids = tok(body.prompt, add_special_tokens=body.add_special_tokens,
                          truncation=False, verbose=False)["input_ids"]  # fmt: skip
        else:
            assert body.messages is not None
            service.check_inputs([m.content for m in body.messages])
            if not getattr(tok, "chat_template", None):
                raise InvalidRequest(
                    "this model has no chat template: send `prompt` instead of `messages`",
                    param="messages",
                )
            ids = tok.apply_chat_template(
                [m.model_dump() for m in body.messages],
                add_generation_prompt=body.add_generation_prompt,
                tokenize=True,
                return_dict=False,
            )
        tokens = [int(t) for t in ids]
        return json_response({"tokens": tokens, "count": len(tokens), "max_model_len": max_len})

    async def detokenize(body: DetokenizeRequest, _: Request) -> Response:
        tok = pick(service, body.model).tokenizer
        if len(body.tokens) > MAX_DETOKENIZE:
            raise InvalidRequest(f"too many tokens: over {MAX_DETOKENIZE}", param="tokens")
        size = len(tok)
        bad = next((t for t in body.tokens if t >= size), None)
        if bad is not None:
            raise InvalidRequest(
                f"token id {bad} is outside this model's vocabulary (0..{size - 1})",
                param="tokens",
            )
        return json_response({"prompt": tok.decode(body.tokens)})

    return [Route(TOKENIZE, tokenize), Route(DETOKENIZE, detokenize)]
