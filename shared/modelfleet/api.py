"""The fleet's API, declared once: every route a model service serves, and what it means.

Each :class:`RouteSpec` names the method, path, request model, the pool (service) that serves
it, whether it may stream and whether its answers may be cached. A model service binds its specs
to handlers (:class:`modelfleet.routes.Route`); the gateway builds its own table from the same
specs, so it validates and documents exactly what the services accept.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from modelfleet.decoding.openai import ChatCompletionRequest, CompletionRequest
from modelfleet.schemas import (
    ClassifyRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    RerankRequest,
    SimilarityRequest,
    SummarizeRequest,
    TokenizeRequest,
)

LLM, EMBEDDING, CLASSIFICATION, GENERATION = "llm", "embedding", "classification", "generation"
POOLS = (LLM, EMBEDDING, CLASSIFICATION, GENERATION)


class CacheMode(enum.Enum):
    NEVER = "never"
    ALWAYS = "always"  # deterministic by nature (encoders)
    GREEDY = "greedy"  # only when temperature is 0 and the answer is not streamed


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: Literal["GET", "POST"]
    path: str
    pool: str
    summary: str  # one line: FastAPI shows it as the route's title
    request: type[BaseModel] | None = None  # the JSON body; None for a GET
    cache: CacheMode = CacheMode.NEVER
    streams: bool = False  # may answer text/event-stream when the body says "stream": true
    counts_tokens: bool = False  # subject to the gateway's tokens-per-minute limit
    # Every pool serves it; the gateway sends it to the pool serving the body's `model`
    # (``pool`` when the body names none).
    by_model: bool = False

    def cacheable(self, payload: dict[str, Any], stream: bool) -> bool:
        if self.cache is CacheMode.ALWAYS:
            return True
        if self.cache is CacheMode.GREEDY and not stream:
            t = payload.get("temperature")
            return isinstance(t, int | float) and not isinstance(t, bool) and t == 0
        return False


CHAT = RouteSpec(
    "POST",
    "/v1/chat/completions",
    LLM,
    "Create a chat completion (OpenAI-compatible)",
    ChatCompletionRequest,
    CacheMode.GREEDY,
    streams=True,
    counts_tokens=True,
)
COMPLETIONS = RouteSpec(
    "POST",
    "/v1/completions",
    GENERATION,
    "Create a text completion (OpenAI-compatible)",
    CompletionRequest,
    CacheMode.GREEDY,
    streams=True,
    counts_tokens=True,
)
SUMMARIZE = RouteSpec(
    "POST",
    "/v1/summarize",
    GENERATION,
    "Summarise a text of any length",
    SummarizeRequest,
    counts_tokens=True,
)
EMBEDDINGS = RouteSpec(
    "POST",
    "/v1/embeddings",
    EMBEDDING,
    "Create embeddings (OpenAI-compatible)",
    EmbeddingRequest,
    CacheMode.ALWAYS,
)
SIMILARITY = RouteSpec(
    "POST",
    "/v1/similarity",
    EMBEDDING,
    "Cosine similarity of a query to documents",
    SimilarityRequest,
    CacheMode.ALWAYS,
)
RERANK = RouteSpec(
    "POST",
    "/v1/rerank",
    EMBEDDING,
    "Rank documents by relevance to a query (Cohere/Jina shape)",
    RerankRequest,
    CacheMode.ALWAYS,
)
CLASSIFY = RouteSpec(
    "POST",
    "/v1/classify",
    CLASSIFICATION,
    "Classify texts: sentiment, intent or custom labels",
    ClassifyRequest,
    CacheMode.ALWAYS,
)
CLASSIFY_TASKS = RouteSpec(
    "GET", "/v1/classify/tasks", CLASSIFICATION, "Built-in tasks and their labels"
)  # fmt: skip

TOKENIZE = RouteSpec(
    "POST", "/tokenize", LLM, "Token ids of a prompt or conversation (vLLM shape)",
    TokenizeRequest, by_model=True,
)  # fmt: skip
DETOKENIZE = RouteSpec(
    "POST", "/detokenize", LLM, "Text of token ids (vLLM shape)", DetokenizeRequest,
    by_model=True,
)  # fmt: skip

FLEET_ROUTES: tuple[RouteSpec, ...] = (
    CHAT, COMPLETIONS, SUMMARIZE, EMBEDDINGS, SIMILARITY, RERANK, CLASSIFY, CLASSIFY_TASKS,
    TOKENIZE, DETOKENIZE,
)  # fmt: skip
