"""The API routes the gateway forwards, and what each one means for caching and limits."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from services.gateway.fallback import CHAT_VIA_GENERATION, COMPLETIONS_VIA_LLM, Fallback
from services.gateway.pools import CLASSIFICATION, EMBEDDING, GENERATION, LLM


class CacheMode(enum.Enum):
    NEVER = "never"
    ALWAYS = "always"  # deterministic by nature (encoders)
    GREEDY = "greedy"  # only when temperature is 0 and the answer is not streamed


@dataclass(frozen=True)
class Endpoint:
    path: str
    pool: str
    cache: CacheMode
    counts_tokens: bool  # subject to the tokens-per-minute limit
    fallback: Fallback | None
    summary: str

    def cacheable(self, payload: dict[str, Any], stream: bool) -> bool:
        if self.cache is CacheMode.ALWAYS:
            return True
        if self.cache is CacheMode.GREEDY and not stream:
            t = payload.get("temperature")
            return isinstance(t, int | float) and not isinstance(t, bool) and t == 0
        return False


ENDPOINTS = (
    Endpoint("/v1/chat/completions", LLM, CacheMode.GREEDY, True, CHAT_VIA_GENERATION,
             "Chat completion (OpenAI-compatible); falls back to the generation pool"),
    Endpoint("/v1/completions", GENERATION, CacheMode.GREEDY, True, COMPLETIONS_VIA_LLM,
             "Text completion (OpenAI-compatible); falls back to the llm pool"),
    Endpoint("/v1/summarize", GENERATION, CacheMode.NEVER, True, None,
             "Summarise a text (generation pool)"),
    Endpoint("/v1/embeddings", EMBEDDING, CacheMode.ALWAYS, False, None,
             "Create embeddings (OpenAI-compatible); cached"),
    Endpoint("/v1/similarity", EMBEDDING, CacheMode.ALWAYS, False, None,
             "Cosine similarity of a query to documents; cached"),
    Endpoint("/v1/classify", CLASSIFICATION, CacheMode.ALWAYS, False, None,
             "Classify texts; cached"),
)  # fmt: skip
