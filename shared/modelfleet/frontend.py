"""The HTTP side of ``FRONTENDS=N``: a model service whose model is the link to the worker.

A service's front-end is the service class itself with this base in front of it in the MRO
(``class EmbeddingFrontend(WorkerFrontend, EmbeddingService)``): the same routes, validation
and limits; only what needs the model is asked of the worker (:mod:`modelfleet.link`). It is
ready while a worker is connected (the worker listens only once its model is loaded) and
answers 503 at once while none is.
"""

from __future__ import annotations

from typing import Any

from modelfleet.gpu import GpuCollector
from modelfleet.link import WorkerClient
from modelfleet.service import ModelService
from modelfleet.settings import ModelServiceSettings


class WorkerFrontend(ModelService):
    """Readiness, model cards and metrics of a front-end; subclasses route work over ``link``."""

    def __init__(self, settings: ModelServiceSettings, socket_path: str, metrics_dir: str) -> None:
        super().__init__(settings)
        # Every process writes its series to metrics_dir; any front-end's /metrics is the sum.
        self.metrics.aggregate(metrics_dir, [GpuCollector(self.name)])
        self.link = WorkerClient(socket_path, self._worker_up, self._worker_down)
        self.hello: dict[str, Any] = {}
        self.failed = "waiting for the model worker to load its model"

    def _worker_up(self, hello: dict[str, Any]) -> None:
        self.hello = hello
        self.model_id, self.model_revision = hello["model_id"], hello["revision"]
        self.on_hello(hello)
        self.ready, self.failed = True, None

    def on_hello(self, hello: dict[str, Any]) -> None:
        """Take what the service needs from a newly connected worker's hello."""

    def _worker_down(self) -> None:
        self.ready = False
        self.failed = "the model worker stopped; it is restarting"

    def load(self) -> None:
        raise AssertionError("a front-end loads no model")

    async def start(self) -> None:
        self.link.start()

    async def stop(self) -> None:
        self.ready = False
        await self.link.close()

    def model_cards(self) -> list[dict[str, Any]]:
        cards: list[dict[str, Any]] = self.hello.get("cards") or super().model_cards()
        return [{**card, "ready": self.ready} for card in cards]
