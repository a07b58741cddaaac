"""Embedding service: ``/v1/embeddings`` (OpenAI-compatible) and ``/v1/similarity``."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from modelfleet.api import EMBEDDINGS, SIMILARITY
from modelfleet.app import json_response
from modelfleet.devices import pick_device
from modelfleet.encoder import Encoded, SentenceEncoder
from modelfleet.errors import InvalidRequest
from modelfleet.registry import (
    AliasWatcher,
    ModelRef,
    RegistryResolver,
    is_registry_uri,
    version_id,
)
from modelfleet.resolve import ModelSource, resolve_encoder
from modelfleet.routes import Route
from modelfleet.schemas import EmbeddingRequest, SimilarityRequest
from modelfleet.service import ModelService
from services.embedding.settings import EmbeddingSettings

ROUTE_EMBEDDINGS = EMBEDDINGS.path
ROUTE_SIMILARITY = SIMILARITY.path

log = logging.getLogger("modelfleet.embedding")


def merge(parts: list[Encoded]) -> Encoded:
    return Encoded(
        np.stack([p.embeddings for p in parts]),
        [p.tokens[0] for p in parts],
        [p.truncated[0] for p in parts],
        parts[0].model if parts else "",
    )


class EmbeddingService(ModelService):
    name = "embedding"
    settings: EmbeddingSettings

    def __init__(self, settings: EmbeddingSettings) -> None:
        super().__init__(settings)
        self.ref: ModelRef | None = None
        self.resolver: RegistryResolver | None = None
        self.watcher: AliasWatcher | None = None
        if is_registry_uri(settings.model):
            # registered model: resolved and fetched in load(), off the event loop
            self.ref = ModelRef.parse(settings.model)
            self.resolver = RegistryResolver(settings.tracking_uri, settings.cache_dir)
            self.model_id = settings.model
            device = pick_device(settings.device)
            self.encoder: SentenceEncoder | None = None
        else:
            source = resolve_encoder(settings.model, settings.model_revision)
            self.encoder = self._make_encoder(source)
            self.model_id = source.name
            device = self.encoder.device
        workers = self.forward_workers(settings.forward_workers, device)
        self.serving: tuple[SentenceEncoder, str]  # set by load()
        self.forward = self.batcher(self._forward_one_batch, workers=workers)

    def _make_encoder(self, source: ModelSource) -> SentenceEncoder:
        s = self.settings
        return SentenceEncoder(source, s.device, s.dtype, s.packed)

    def _forward_one_batch(self, texts: list[str]) -> list[Encoded]:
        encoder, model_id = self.serving  # one read: one version for the whole batch
        enc = encoder.encode(texts)
        return [
            Encoded(enc.embeddings[i], [enc.tokens[i]], [enc.truncated[i]], model_id)
            for i in range(len(texts))
        ]

    def _registered(self, version: str) -> tuple[SentenceEncoder, str]:
        assert self.ref is not None and self.resolver is not None
        path = self.resolver.fetch(self.ref.name, version)
        model_id = version_id(self.ref.name, version)
        encoder = self._make_encoder(ModelSource(str(path), model_id, True, f"v{version}"))
        encoder.load()
        return encoder, model_id

    def load(self) -> None:
        if self.ref is not None and self.resolver is not None:
            version = self.resolver.version_of(self.ref)
            self.encoder, self.model_id = self._registered(version)
            self.watcher = AliasWatcher(
                self.resolver, self.ref, version, self._swap, self.settings.registry_poll_s
            )
        else:
            assert self.encoder is not None
            self.encoder.load()
        self.serving = (self.encoder, self.model_id)
        self.model_revision = self.encoder.revision

    def _load_version(self, version: str) -> tuple[SentenceEncoder, str]:
        encoder, model_id = self._registered(version)
        encoder.encode(["warm up the encoder"] * 4)
        return encoder, model_id

    async def _swap(self, version: str) -> None:
        """Load ``version`` beside the serving encoder, then switch (see classification)."""
        encoder, model_id = await asyncio.to_thread(self._load_version, version)
        old = (self.model_id, self.model_revision)
        self.encoder = encoder
        self.serving = (encoder, model_id)  # what batches read, in one assignment
        self.model_id, self.model_revision = model_id, encoder.revision
        self.metrics.model_info.labels(self.name, *old).set(0)
        self.metrics.model_info.labels(self.name, model_id, encoder.revision).set(1)
        log.info("model swapped", extra={"model": model_id, "revision": encoder.revision})

    async def start(self) -> None:
        await super().start()
        if self.watcher is not None:
            self.watcher.start()

    async def on_stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()

    def warmup(self) -> None:
        assert self.encoder is not None
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
                    "model": enc.model or self.model_id,
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
                    "model": enc.model or self.model_id,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )

        return [Route(EMBEDDINGS, embeddings, raw=True), Route(SIMILARITY, similarity, raw=True)]
