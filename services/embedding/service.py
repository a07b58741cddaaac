"""Embedding service: ``/v1/embeddings`` (OpenAI-compatible), ``/v1/similarity`` and
``/v1/rerank`` (see :mod:`services.embedding.rerank`)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from modelfleet.api import EMBEDDINGS, RERANK, SIMILARITY
from modelfleet.app import json_response
from modelfleet.devices import pick_device
from modelfleet.encoder import Encoded, SentenceEncoder
from modelfleet.errors import InvalidRequest
from modelfleet.registry import RegisteredModel, is_registry_uri
from modelfleet.resolve import ModelSource, resolve_encoder
from modelfleet.routes import Route
from modelfleet.schemas import INPUT_TYPES, EmbeddingRequest, RerankRequest, SimilarityRequest
from modelfleet.service import ModelService
from modelfleet.tokenize import TokenizerRef
from services.embedding.rerank import CrossEncoderScorer, Pair, check_limits, results
from services.embedding.settings import EmbeddingSettings

ROUTE_EMBEDDINGS = EMBEDDINGS.path
ROUTE_SIMILARITY = SIMILARITY.path
ROUTE_RERANK = RERANK.path
Item = str | list[int]  # a text, or token ids

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
        if is_registry_uri(settings.model):
            # registered model: resolved and fetched in load(), off the event loop
            self.registered = RegisteredModel(
                settings.model, settings.tracking_uri, settings.cache_dir, settings.registry_poll_s
            )
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
        self.prefixes = {"query": settings.query_prefix, "document": settings.document_prefix}
        self.cross: CrossEncoderScorer | None = None
        if settings.rerank_model:
            self.cross = CrossEncoderScorer(
                settings.rerank_model, settings.device, settings.trust_remote_code
            )
            self.cross_forward = self.batcher(self.cross.score, name="rerank", workers=workers)

    def _make_encoder(self, source: ModelSource) -> SentenceEncoder:
        s = self.settings
        return SentenceEncoder(source, s.device, s.dtype, s.packed, s.trust_remote_code)

    def _forward_one_batch(self, texts: list[Item]) -> list[Encoded]:
        encoder, model_id = self.serving  # one read: one version for the whole batch
        enc = encoder.encode(texts)
        return [
            Encoded(enc.embeddings[i], [enc.tokens[i]], [enc.truncated[i]], model_id)
            for i in range(len(texts))
        ]

    def _registered(self, version: str) -> tuple[SentenceEncoder, str]:
        assert self.registered is not None
        source = self.registered.fetch(version)
        encoder = self._make_encoder(source)
        encoder.load()
        return encoder, source.name

    def load(self) -> None:
        if self.registered is not None:
            version = self.registered.current_version()
            self.encoder, self.model_id = self._registered(version)
            self.registered.watch(version, self._swap)
        else:
            assert self.encoder is not None
            self.encoder.load()
        self.serving = (self.encoder, self.model_id)
        self.model_revision = self.encoder.revision
        if self.cross is not None:
            self.cross.load()

    def model_cards(self) -> list[dict[str, Any]]:
        """The embedding model, and the cross-encoder when one is configured.

        Prefixes change the answers, so they are part of the revision: the gateway's cache key
        (model id + revision) changes with them.
        """
        cards = super().model_cards()
        if any(self.prefixes.values()):
            digest = hashlib.sha256(repr(sorted(self.prefixes.items())).encode()).hexdigest()
            cards[0]["revision"] = f"{self.model_revision}+prefix:{digest[:12]}"
            cards[0]["prefixes"] = {k: v for k, v in self.prefixes.items() if v}
        if self.cross is not None:
            cards.append({**cards[0], "id": self.cross.model_id, "revision": self.cross.revision,
                          "kind": "cross-encoder"})  # fmt: skip
            cards[-1].pop("prefixes", None)
        return cards

    def tokenizers(self) -> dict[str, TokenizerRef]:
        encoder, model_id = self.serving
        known = {model_id: TokenizerRef(encoder.model.tokenizer, encoder.max_tokens,
                                        encoder._tokenizer_lock)}  # fmt: skip
        if self.cross is not None:
            known[self.cross.model_id] = self.cross.tokenizer()
        return known

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

    def warmup(self) -> None:
        assert self.encoder is not None
        self.encoder.encode(["warm up the encoder"] * min(8, self.settings.max_batch_size))

    def prefixed(self, texts: list[Item], input_type: str | None) -> list[Item]:
        """``texts`` with the instruction prefix of ``input_type`` (token ids as they are)."""
        prefix = self.prefixes.get(INPUT_TYPES[input_type]) if input_type else ""
        if not prefix:
            return texts
        return [prefix + t if isinstance(t, str) else t for t in texts]

    def check_token_ids(self, items: list[Item]) -> None:
        """Token-id inputs count against the same limits as texts: each id is at least one
        character, and every id is in the model's vocabulary."""
        size = self.vocab_size()
        for i, t in enumerate(items):
            if isinstance(t, str):
                continue
            bad = next((x for x in t if x >= size), None)
            if bad is not None:
                raise InvalidRequest(
                    f"input[{i}]: token id {bad} is outside this model's vocabulary "
                    f"(0..{size - 1})",
                    param="input",
                )

    def vocab_size(self) -> int:
        return self.serving[0].vocab_size

    async def embed(self, texts: list[Item], route: str, max_items: int | None = None) -> Encoded:
        """Validate limits, then run ``texts`` through the model."""
        self.ensure_ready()
        self.check_inputs(texts, max_items=max_items)
        self.check_token_ids(texts)
        enc = await self.encode(texts)
        self.metrics.input_tokens.labels(self.name, route).inc(sum(enc.tokens))
        return enc

    async def encode(self, texts: list[Item]) -> Encoded:
        """``texts`` through the micro-batcher (a front-end process hands them to the worker)."""
        parts = await self.forward.submit(texts, timeout=self.settings.request_timeout_s)
        return merge(parts)

    async def score_pairs(self, pairs: list[Pair]) -> list[tuple[float, int]]:
        """(score, tokens) of each pair from the cross-encoder."""
        return await self.cross_forward.submit(pairs, timeout=self.settings.request_timeout_s)

    def routes(self) -> list[Route]:
        async def embeddings(body: EmbeddingRequest, _: Request) -> Response:
            texts: list[Item] = [body.input] if isinstance(body.input, str) else [*body.input]
            enc = await self.embed(self.prefixed(texts, body.input_type), ROUTE_EMBEDDINGS)
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

        async def rerank(body: RerankRequest, _: Request) -> Response:
            self.ensure_ready()
            check_limits(body, self.settings.max_rerank_documents)
            docs = body.texts()
            most = self.settings.max_rerank_documents + 1
            if self.cross is not None:
                self.check_inputs([body.query, *docs], param="documents", max_items=most)
                pairs: list[Pair] = [(body.query, d) for d in docs]
                scored = await self.score_pairs(pairs)
                scores = np.array([s for s, _ in scored])
                tokens, model = sum(t for _, t in scored), self.cross.model_id
                self.metrics.input_tokens.labels(self.name, ROUTE_RERANK).inc(tokens)
            else:
                query = self.prefixed([body.query], "query")
                items = [*query, *self.prefixed([*docs], "document")]
                enc = await self.embed(items, ROUTE_RERANK, max_items=most)
                scores = enc.embeddings[1:] @ enc.embeddings[0]
                tokens, model = sum(enc.tokens), enc.model or self.model_id
            return json_response(
                {
                    "object": "list",
                    "model": model,
                    "results": results(body, scores),
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )

        return [
            Route(EMBEDDINGS, embeddings, raw=True),
            Route(SIMILARITY, similarity, raw=True),
            Route(RERANK, rerank, raw=True),
        ]
