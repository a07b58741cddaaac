"""Classification service: ``POST /v1/classify`` and ``GET /v1/classify/tasks``."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from modelfleet.api import CLASSIFY, CLASSIFY_TASKS
from modelfleet.app import json_response
from modelfleet.devices import pick_device
from modelfleet.errors import InvalidRequest
from modelfleet.registry import RegisteredModel, is_registry_uri
from modelfleet.resolve import ModelSource, resolve_encoder
from modelfleet.routes import Route
from modelfleet.schemas import ClassifyRequest
from modelfleet.service import ModelService
from modelfleet.tokenize import TokenizerRef
from services.classification.backends import (
    ClassifierBackend,
    ClassifyItem,
    ClassifyResult,
    EmbeddingBackend,
    Labels,
    SequenceClassificationBackend,
    is_sequence_classifier,
)
from services.classification.settings import ClassificationSettings

ROUTE = CLASSIFY.path

log = logging.getLogger("modelfleet.classification")


@dataclass(frozen=True, slots=True)
class Active:
    """The backend serving now and the identity it answers under; replaced in one assignment."""

    backend: ClassifierBackend
    model_id: str
    revision: str


class ClassificationService(ModelService):
    name = "classification"
    settings: ClassificationSettings

    def __init__(self, settings: ClassificationSettings) -> None:
        super().__init__(settings)
        self.pending: ClassifierBackend | None = None
        if is_registry_uri(settings.model):
            # registered model: resolved and fetched in load(), off the event loop
            self.registered = RegisteredModel(
                settings.model, settings.tracking_uri, settings.cache_dir, settings.registry_poll_s
            )
            self.model_id = settings.model
            device = pick_device(settings.device)
        else:
            source = resolve_encoder(settings.model, settings.model_revision)
            self.pending = self._make_backend(source)
            self.model_id = source.name
            device = self.pending.device
        workers = self.forward_workers(settings.forward_workers, device)
        self.threads_per_pass = max(1, self.cpu_threads() // workers)
        if isinstance(self.pending, SequenceClassificationBackend):
            self.pending.threads = self.threads_per_pass
        self.active: Active | None = None
        self.forward = self.batcher(self._classify_batch, workers=workers)

    @property
    def backend(self) -> ClassifierBackend:
        assert self.active is not None, "load() first"
        return self.active.backend

    def _make_backend(self, source: ModelSource) -> ClassifierBackend:
        s = self.settings
        kind = s.backend
        if kind == "auto":
            kind = "sequence-classification" if is_sequence_classifier(source) else "embedding"
        if kind == "sequence-classification":
            return SequenceClassificationBackend(
                source, s.device, s.dtype, s.flavour, getattr(self, "threads_per_pass", 0),
                s.trust_remote_code,
            )  # fmt: skip
        return EmbeddingBackend(
            source, s.device, s.dtype, s.tasks_dir, s.packed, s.trust_remote_code
        )

    def _registered(self, version: str) -> tuple[ClassifierBackend, str]:
        """Fetch version ``version`` of the registered model and build (not load) its backend."""
        assert self.registered is not None
        source = self.registered.fetch(version)
        return self._make_backend(source), source.name

    def _classify_batch(self, items: list[ClassifyItem]) -> list[ClassifyResult]:
        active = self.active  # one read: the whole batch runs on one version
        assert active is not None
        results = active.backend.classify_batch(items)
        return [replace(r, model=active.model_id) for r in results]

    def load(self) -> None:
        if self.registered is not None:
            version = self.registered.current_version()
            backend, model_id = self._registered(version)
            backend.load()
            self.registered.watch(version, self._swap)
        else:
            assert self.pending is not None
            backend, model_id = self.pending, self.model_id
            backend.load()
        self._activate(backend, model_id)

    def _activate(self, backend: ClassifierBackend, model_id: str) -> None:
        old = self.active
        self.active = Active(backend, model_id, backend.revision)
        self.model_id, self.model_revision = model_id, backend.revision
        if old is not None:
            self.metrics.model_info.labels(self.name, old.model_id, old.revision).set(0)
            self.metrics.model_info.labels(self.name, model_id, backend.revision).set(1)

    def _load_version(self, version: str) -> tuple[ClassifierBackend, str]:
        backend, model_id = self._registered(version)
        backend.load()
        self._warm(backend)
        return backend, model_id

    async def _swap(self, version: str) -> None:
        """Load ``version`` beside the serving one, then switch in one assignment.

        Requests already in a batch finish on the old backend (the batch holds its reference);
        the next batch runs on the new one. No request waits for the load.
        """
        backend, model_id = await asyncio.to_thread(self._load_version, version)
        self._activate(backend, model_id)
        log.info("model swapped", extra={"model": model_id, "revision": backend.revision})

    @staticmethod
    def _warm(backend: ClassifierBackend) -> None:
        task = next(iter(backend.tasks()), None)
        backend.classify_batch([ClassifyItem("warm up", task, None, None)] * 4)

    def warmup(self) -> None:
        self._warm(self.backend)

    def tokenizers(self) -> dict[str, TokenizerRef]:
        active = self.active
        assert active is not None
        b = active.backend
        if isinstance(b, EmbeddingBackend):
            enc = b.encoder
            ref = TokenizerRef(enc.model.tokenizer, enc.max_tokens, enc._tokenizer_lock)
        else:
            assert isinstance(b, SequenceClassificationBackend)
            ref = TokenizerRef(b.tokenizer, b.max_tokens, b._tokenizer_lock)
        return {active.model_id: ref}

    def model_cards(self) -> list[dict[str, Any]]:
        cards = super().model_cards()
        # /v1/models answers while the model loads too (ready: false)
        backend = self.active.backend if self.active else self.pending
        cards[0]["backend"] = backend.kind if backend is not None else "unknown"
        return cards

    def task_labels(self) -> dict[str, dict[str, str]]:
        """Each task's labels (``GET /v1/classify/tasks``)."""
        return self.backend.tasks()

    def _labels(self, body: ClassifyRequest) -> Labels | None:
        if body.labels is None:
            return None
        if body.task is not None:
            raise InvalidRequest("give either `task` or `labels`, not both", param="labels")
        names = list(body.labels)
        if len(names) < 2:
            raise InvalidRequest("`labels` needs at least two labels", param="labels")
        if len(names) > self.settings.max_labels:
            raise InvalidRequest(
                f"too many labels: {len(names)} > {self.settings.max_labels}", param="labels"
            )
        if len({n.strip().lower() for n in names}) != len(names):
            raise InvalidRequest("`labels` contains duplicates", param="labels")
        if isinstance(body.labels, dict):
            return tuple(body.labels.items())
        return tuple(body.labels)

    async def classify(self, body: ClassifyRequest) -> list[ClassifyResult]:
        self.ensure_ready()
        s = self.settings
        texts = [body.input] if isinstance(body.input, str) else body.input
        self.check_inputs(texts)
        labels = self._labels(body)
        self.backend.validate(body.task, labels)
        items = [ClassifyItem(t, body.task, labels, body.top_k) for t in texts]
        results = await self.forward.submit(items, timeout=s.request_timeout_s)
        self.metrics.input_tokens.labels(self.name, ROUTE).inc(sum(r.tokens for r in results))
        return results

    def routes(self) -> list[Route]:
        async def classify(body: ClassifyRequest, _: Request) -> Response:
            results = await self.classify(body)
            data = []
            for i, r in enumerate(results):
                item: dict[str, Any] = {
                    "index": i,
                    "labels": [{"label": lbl, "score": score} for lbl, score in r.labels],
                }
                if r.truncated:
                    item["truncated"] = True
                data.append(item)
            tokens = sum(r.tokens for r in results)
            return json_response(
                {
                    "object": "list",
                    "data": data,
                    "model": results[0].model if results else self.model_id,
                    "task": body.task or "custom",
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )

        async def tasks(_: None, __: Request) -> Response:
            self.ensure_ready()
            return json_response(
                {
                    "object": "list",
                    "data": [
                        {"task": name, "labels": labels}
                        for name, labels in self.task_labels().items()
                    ],
                }
            )

        return [Route(CLASSIFY, classify, raw=True), Route(CLASSIFY_TASKS, tasks)]
