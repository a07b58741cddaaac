"""Embedding service: ``/v1/embeddings`` (OpenAI-compatible) and ``/v1/similarity``."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from modelfleet.api import EMBEDDINGS, SIMILARITY
from modelfleet.app import json_response
from modelfleet.encoder import Encoded, SentenceEncoder
from modelfleet.errors import InvalidRequest
from modelfleet.resolve import resolve_encoder
from modelfleet.routes import Route
from modelfleet.schemas import EmbeddingRequest, SimilarityRequest
from modelfleet.service import ModelService
from services.embedding.settings import EmbeddingSettings

ROUTE_EMBEDDINGS = EMBEDDINGS.path
ROUTE_SIMILARITY = SIMILARITY.path


def merge(parts: list[Encoded]) -> Encoded:
    return Encoded(
        np.stack([p.embeddings for p in parts]),
        [p.tokens[0] for p in parts],
        [p.truncated[0] for p in parts],
    )


class EmbeddingService(ModelService):
    name = "embedding"
    settings: EmbeddingSettings

    def __init__(self, settings: EmbeddingSettings) -> None:
        super().__init__(settings)
        source = resolve_encoder(settings.model, settings.model_revision)
        self.encoder = SentenceEncoder(source, settings.device, settings.dtype, settings.packed)
        self.model_id = source.name
        workers = self.forward_workers(settings.forward_workers, self.encoder.device)
        self.forward = self.batcher(self._forward_one_batch, workers=workers)

    def _forward_one_batch(self, texts: list[str]) -> list[Encoded]:
        enc = self.encoder.encode(texts)
        return [
            Encoded(enc.embeddings[i], [enc.tokens[i]], [enc.truncated[i]])
            for i in range(len(texts))
        ]

    def load(self) -> None:
        self.encoder.load()
        self.model_revision = self.encoder.revision

    def warmup(self) -> None:
        self.encoder.encode(["warm up the encoder"] * min(8, self.settings.max_batch_size))

    async def embed(self, texts: list[str], route: str) -> Encoded:
        """Validate limits, then run ``texts`` through the micro-batcher."""
        self.ensure_ready()
        s = self.settings
        self.check_inputs(texts)
        parts = await self.forward.submit(texts, timeout=s.request_timeout_s)
        enc = merge(parts)
        self.metrics.input_tokens.labels(self.name, route).inc(sum(enc.tokens))
        return enc

    def routes(self) -> list[Route]:
        async def embeddings(body: EmbeddingRequest, _: Request) -> Response:
            texts = [body.input] if isinstance(body.input, str) else body.input
            enc = await self.embed(texts, ROUTE_EMBEDDINGS)
            vectors = enc.embeddings
            if body.dimensions is not None:
                if body.dimensions > vectors.shape[1]:
                    raise InvalidRequest(
                        f"dimensions={body.dimensions} exceeds the model's {vectors.shape[1]}",
                        param="dimensions",
                    )
                vectors = vectors[:, : body.dimensions]
                vectors = vectors / np.maximum(
                    np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12
                )
            data: list[dict[str, Any]] = []
            for i, vec in enumerate(vectors):
                item: dict[str, Any] = {"object": "embedding", "index": i}
                if body.encoding_format == "base64":
                    item["embedding"] = base64.b64encode(vec.astype("<f4").tobytes()).decode()
                else:
                    item["embedding"] = vec
                if enc.truncated[i]:
                    item["truncated"] = True
                data.append(item)
            tokens = sum(enc.tokens)
            return json_response(
                {
                    "object": "list",
                    "data": data,
                    "model": self.model_id,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )

        async def similarity(body: SimilarityRequest, _: Request) -> Response:
            enc = await self.embed([body.query, *body.documents], ROUTE_SIMILARITY)
            scores = enc.embeddings[1:] @ enc.embeddings[0]
            order = np.argsort(-scores, kind="stable")
            if body.top_n is not None:
                order = order[: body.top_n]
            tokens = sum(enc.tokens)
            return json_response(
                {
                    "object": "list",
                    "data": [{"index": int(i), "score": float(scores[i])} for i in order],
                    "model": self.model_id,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )

        return [Route(EMBEDDINGS, embeddings, raw=True), Route(SIMILARITY, similarity, raw=True)]
