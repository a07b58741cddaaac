"""``FRONTENDS=N``: the embedding service as one model worker and N HTTP front-ends.

The front-end is the embedding service with the model swapped for the link: the same routes,
validation and limits, tokenisation with the encoder's own :class:`EncoderTokenizer` (sent by
the worker), and token ids handed to the worker, which runs the same micro-batcher and
forward pass as a single process does. See :mod:`modelfleet.supervisor` for the process tree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelfleet.encoder import Encoded, EncoderTokenizer
from modelfleet.frontend import WorkerFrontend
from modelfleet.modelworker import Op
from modelfleet.supervisor import (
    serve_supervised,
)
from modelfleet.tokenize import TokenizerRef
from services.embedding.rerank import Pair
from services.embedding.service import EmbeddingService, Item
from services.embedding.settings import EmbeddingSettings


class EmbeddingWorker(EmbeddingService):
    """The service as the model worker runs it: the model, the batcher, and the ops below."""

    def worker_hello(self) -> dict[str, Any]:
        encoder, model_id = self.serving
        cross = None
        if self.cross is not None:
            cross = (self.cross.model.tokenizer, self.cross.max_tokens)
        return {
            "model_id": model_id,
            "revision": self.model_revision,
            "cards": self.model_cards(),
            "tokenizer": encoder.tokenizer(),
            "cross_tokenizer": cross,
        }

    def worker_ops(self) -> dict[str, Op]:
        return {"embed": self._embed_ids, "rerank": self._rerank}

    async def _embed_ids(self, ids: list[list[int]], timeout: float) -> tuple[Any, str]:
        parts = await self.forward.submit(ids, timeout=timeout)
        return np.stack([p.embeddings for p in parts]), parts[0].model

    async def _rerank(self, pairs: list[Pair], timeout: float) -> list[tuple[float, int]]:
        return await self.cross_forward.submit(pairs, timeout=timeout)


class EmbeddingFrontend(WorkerFrontend, EmbeddingService):
    """The HTTP side: tokenises with the worker's tokenizer and sends it token ids."""

    tok: EncoderTokenizer | None = None

    def on_hello(self, hello: dict[str, Any]) -> None:
        self.tok = hello["tokenizer"]

    def tokenizers(self) -> dict[str, TokenizerRef]:
        assert self.tok is not None
        known = {self.model_id: TokenizerRef(self.tok.tokenizer, self.tok.max_tokens,
                                             self.tok.lock)}  # fmt: skip
        cross = self.hello.get("cross_tokenizer")
        if cross is not None and self.cross is not None:
            known[self.cross.model_id] = TokenizerRef(cross[0], cross[1], self.cross.lock)
        return known

    def vocab_size(self) -> int:
        assert self.tok is not None
        return self.tok.vocab_size

    async def encode(self, texts: list[Item]) -> Encoded:
        assert self.tok is not None
        ids, counts = self.tok.token_ids(texts)
        embeddings, model = await self.link.call("embed", ids, self.settings.request_timeout_s)
        most = self.tok.max_tokens
        return Encoded(embeddings, [min(c, most) for c in counts], [c > most for c in counts],
                       model)  # fmt: skip

    async def score_pairs(self, pairs: list[Pair]) -> list[tuple[float, int]]:
        scored: list[tuple[float, int]] = await self.link.call(
            "rerank", pairs, self.settings.request_timeout_s
        )
        return scored


def serve_split(settings: EmbeddingSettings) -> None:
    """``main()`` with ``FRONTENDS`` > 1: supervise the worker and the front-ends."""
    serve_supervised(EmbeddingService.name, settings, EmbeddingWorker, EmbeddingFrontend)
