"""``FRONTENDS=N``: the classification service as one model worker and N HTTP front-ends.

Same process tree as the embedding service's (:mod:`modelfleet.supervisor`). The front-end
parses and checks requests (limits, labels) and hands the worker whole items: a classifier
backend tokenises inside its forward pass (the sequence-classification flavours include ONNX
sessions that take text), so, unlike embeddings, tokenisation stays in the worker. A backend's
own check of a task or label set runs there too; its 400 comes back through the link as is.
"""

from __future__ import annotations

from typing import Any

from modelfleet.frontend import WorkerFrontend
from modelfleet.modelworker import Op
from modelfleet.schemas import ClassifyRequest
from modelfleet.supervisor import (
    serve_supervised,
)
from modelfleet.tokenize import TokenizerRef
from services.classification.backends import ClassifyItem, ClassifyResult
from services.classification.service import ROUTE, ClassificationService
from services.classification.settings import ClassificationSettings


class ClassificationWorker(ClassificationService):
    """The service as the model worker runs it."""

    def worker_hello(self) -> dict[str, Any]:
        ((model_id, ref),) = self.tokenizers().items()
        return {
            "model_id": model_id,
            "revision": self.model_revision,
            "cards": self.model_cards(),
            "tasks": self.backend.tasks(),
            "tokenizer": (ref.tokenizer, ref.max_model_len),
        }

    def worker_ops(self) -> dict[str, Op]:
        return {"classify": self._classify_items}

    async def _classify_items(self, items: list[ClassifyItem], timeout: float) -> Any:
        first = items[0]
        self.backend.validate(first.task, first.labels)  # one request: one task, one label set
        return await self.forward.submit(items, timeout=timeout)


class ClassificationFrontend(WorkerFrontend, ClassificationService):
    """The HTTP side: checks requests, the worker classifies."""

    def task_labels(self) -> dict[str, dict[str, str]]:
        tasks: dict[str, dict[str, str]] = self.hello["tasks"]
        return tasks

    def tokenizers(self) -> dict[str, TokenizerRef]:
        tokenizer, most = self.hello["tokenizer"]
        return {self.model_id: TokenizerRef(tokenizer, most)}

    async def classify(self, body: ClassifyRequest) -> list[ClassifyResult]:
        self.ensure_ready()
        texts = [body.input] if isinstance(body.input, str) else body.input
        self.check_inputs(texts)
        labels = self._labels(body)
        items = [ClassifyItem(t, body.task, labels, body.top_k) for t in texts]
        results: list[ClassifyResult] = await self.link.call(
            "classify", items, self.settings.request_timeout_s
        )
        self.metrics.input_tokens.labels(self.name, ROUTE).inc(sum(r.tokens for r in results))
        return results


def serve_split(settings: ClassificationSettings) -> None:
    """``main()`` with ``FRONTENDS`` > 1: supervise the worker and the front-ends."""
    serve_supervised(
        ClassificationService.name, settings, ClassificationWorker, ClassificationFrontend
    )
