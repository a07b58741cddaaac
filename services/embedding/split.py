"""``FRONTENDS=N``: the embedding service as one model worker and N HTTP front-ends.

The front-end is the embedding service with the model swapped for the link: the same routes,
validation and limits, tokenisation with the encoder's own :class:`EncoderTokenizer` (sent by
the worker), and token ids handed to the worker, which runs the same micro-batcher and
forward pass as a single process does. See :mod:`modelfleet.supervisor` for the process tree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelfleet.app import create_app
from modelfleet.devices import reproducible_cpu_math
from modelfleet.encoder import Encoded, EncoderTokenizer
from modelfleet.gpu import GpuCollector
from modelfleet.link import WorkerClient
from modelfleet.logs import configure_logging
from modelfleet.modelworker import Op, die_with_parent
from modelfleet.supervisor import Supervisor, run_worker_process, serve_frontend
from modelfleet.tokenize import TokenizerRef
from modelfleet.tracing import configure as configure_tracing
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


class EmbeddingFrontend(EmbeddingService):
    """The HTTP side: ready while a model worker is connected, 503 at once while none is."""

    def __init__(self, settings: EmbeddingSettings, socket_path: str, metrics_dir: str) -> None:
        super().__init__(settings)
        self.metrics.aggregate(metrics_dir, [GpuCollector(self.name)])
        self.link = WorkerClient(socket_path, self._worker_up, self._worker_down)
        self.hello: dict[str, Any] = {}
        self.tok: EncoderTokenizer | None = None
        self.failed = "waiting for the model worker to load its model"

    def _worker_up(self, hello: dict[str, Any]) -> None:
        self.hello, self.tok = hello, hello["tokenizer"]
        self.model_id, self.model_revision = hello["model_id"], hello["revision"]
        self.ready, self.failed = True, None

    def _worker_down(self) -> None:
        self.ready = False
        self.failed = "the model worker stopped; it is restarting"

    async def start(self) -> None:
        self.link.start()

    async def stop(self) -> None:
        self.ready = False
        await self.link.close()

    def model_cards(self) -> list[dict[str, Any]]:
        cards: list[dict[str, Any]] = self.hello.get("cards") or super().model_cards()
        return [{**card, "ready": self.ready} for card in cards]

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


def _configure(settings: EmbeddingSettings) -> None:
    die_with_parent()
    reproducible_cpu_math()
    configure_logging(EmbeddingService.name, settings.log_level, settings.log_json)
    configure_tracing(EmbeddingService.name, settings.otlp_endpoint, settings.trace_sample_ratio)


def worker_process(settings: EmbeddingSettings, path: str) -> None:  # pragma: no cover
    _configure(settings)
    run_worker_process(EmbeddingWorker(settings), path)


def frontend_process(
    settings: EmbeddingSettings, path: str, metrics_dir: str
) -> None:  # pragma: no cover
    _configure(settings)
    app = create_app(EmbeddingFrontend(settings, path, metrics_dir))
    serve_frontend(app, settings, settings.shutdown_grace_s)


def serve_split(settings: EmbeddingSettings) -> None:
    """``main()`` with ``FRONTENDS`` > 1: supervise the worker and the front-ends."""
    configure_logging(EmbeddingService.name, settings.log_level, settings.log_json)
    sup = Supervisor(settings, settings.frontends, worker_process, frontend_process)
    raise SystemExit(sup.run())
