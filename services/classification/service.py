"""Classification service: ``POST /v1/classify`` and ``GET /v1/classify/tasks``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from modelfleet.api import CLASSIFY, CLASSIFY_TASKS
from modelfleet.app import json_response
from modelfleet.errors import InvalidRequest
from modelfleet.resolve import resolve_encoder
from modelfleet.routes import Route
from modelfleet.schemas import ClassifyRequest
from modelfleet.service import ModelService
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


class ClassificationService(ModelService):
    name = "classification"
    settings: ClassificationSettings

    def __init__(self, settings: ClassificationSettings) -> None:
        super().__init__(settings)
        source = resolve_encoder(settings.model, settings.model_revision)
        kind = settings.backend
        if kind == "auto":
            kind = "sequence-classification" if is_sequence_classifier(source) else "embedding"
        self.backend: ClassifierBackend
        if kind == "sequence-classification":
            self.backend = SequenceClassificationBackend(source, settings.device, settings.dtype)
        else:
            self.backend = EmbeddingBackend(
                source, settings.device, settings.dtype, settings.tasks_dir, settings.packed
            )
        self.model_id = source.name
        workers = self.forward_workers(settings.forward_workers, self.backend.device)
        self.forward = self.batcher(self.backend.classify_batch, workers=workers)

    def load(self) -> None:
        self.backend.load()
        self.model_revision = self.backend.revision

    def warmup(self) -> None:
        task = next(iter(self.backend.tasks()), None)
        self.backend.classify_batch([ClassifyItem("warm up", task, None, None)] * 4)

    def model_cards(self) -> list[dict[str, Any]]:
        cards = super().model_cards()
        cards[0]["backend"] = self.backend.kind
        return cards

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
                    "model": self.model_id,
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
                        for name, labels in self.backend.tasks().items()
                    ],
                }
            )

        return [Route(CLASSIFY, classify, raw=True), Route(CLASSIFY_TASKS, tasks)]
