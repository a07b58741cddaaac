"""The base class of every model service (KServe's ``Model`` shape).

A service says only what is specific to its model: how to ``load`` it, how to ``warmup``, which
``routes`` it serves. Readiness, timing of the load, ``/v1/models``, the micro-batcher's life
cycle, metrics and errors live here and in :mod:`modelfleet.app`.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from modelfleet.batching import MicroBatcher
from modelfleet.errors import InvalidRequest, ModelNotReady, PayloadTooLarge
from modelfleet.gpu import GpuCollector
from modelfleet.memory import trim_periodically
from modelfleet.metrics import Metrics
from modelfleet.routes import Route
from modelfleet.settings import ModelServiceSettings
from modelfleet.tokenize import TokenizerRef

if TYPE_CHECKING:
    from modelfleet.registry import RegisteredModel

log = logging.getLogger("modelfleet.service")

T = TypeVar("T")
R = TypeVar("R")


class ModelService(abc.ABC):
    """Owns one model, its batchers and its metrics; ``start``/``stop`` run in the lifespan."""

    name: ClassVar[str]

    def __init__(self, settings: ModelServiceSettings) -> None:
        self.settings = settings
        self.metrics = Metrics(self.name)
        self.metrics.registry.register(GpuCollector(self.name))
        self.ready = False
        self.failed: str | None = None
        self.model_id = "unloaded"
        self.model_revision = "unknown"
        self.created = int(time.time())
        self._trimmer: asyncio.Task[None] | None = None
        self._batchers: list[MicroBatcher[Any, Any]] = []
        # MODEL=models:/name@alias: set by the subclass, watched from start() to stop()
        self.registered: RegisteredModel | None = None

    # -- what subclasses implement -------------------------------------------------------
    @abc.abstractmethod
    def load(self) -> None:
        """Load the model (runs in a worker thread). Set ``model_id`` and ``model_revision``."""

    def warmup(self) -> None:  # noqa: B027 - optional hook
        """Run a representative forward pass so the first request is not the slow one."""

    @abc.abstractmethod
    def routes(self) -> list[Route]:
        """The service's route table: its specs from :mod:`modelfleet.api` bound to handlers."""

    def tokenizers(self) -> dict[str, TokenizerRef]:
        """Each model id this service serves and its tokenizer (``/tokenize``); the first is
        the one used when a request names no model. Called only once ready."""
        return {}

    def model_cards(self) -> list[dict[str, Any]]:
        """Entries of ``GET /v1/models``."""
        return [
            {
                "id": self.model_id,
                "object": "model",
                "created": self.created,
                "owned_by": "modelfleet",
                "service": self.name,
                "revision": self.model_revision,
                "ready": self.ready,
            }
        ]

    async def on_stop(self) -> None:  # noqa: B027 - optional hook
        """Release service-specific resources."""

    # -- shared machinery ----------------------------------------------------------------
    def batcher(
        self, fn: Callable[[list[T]], Sequence[R]], name: str = "forward", workers: int = 1
    ) -> MicroBatcher[T, R]:
        """A micro-batcher configured from settings; started and closed with the service.

        ``workers`` forward passes may run at once; the model's threads (``TORCH_THREADS``) are
        divided between them, each worker thread setting its share as it starts.
        """
        s = self.settings
        per_pass = max(1, self.cpu_threads() // workers)

        def thread_init() -> None:
            import torch

            torch.set_num_threads(per_pass)

        b: MicroBatcher[T, R] = MicroBatcher(
            fn,
            max_batch_size=s.max_batch_size,
            max_wait_ms=s.max_wait_ms,
            max_queue=s.max_queue,
            metrics=self.metrics,
            name=f"{self.name}-{name}",
            workers=workers,
            thread_init=thread_init if workers > 1 or s.torch_threads else None,
        )
        self._batchers.append(b)
        return b

    def cpu_threads(self) -> int:
        """``TORCH_THREADS``, or torch's own default (the machine's physical cores)."""
        if self.settings.torch_threads:
            return self.settings.torch_threads
        import torch

        return int(torch.get_num_threads())

    def forward_workers(self, setting: int, device: str) -> int:
        """``FORWARD_WORKERS`` resolved: 0 = one pass per CPU thread on a CPU, 1 elsewhere."""
        if setting:
            return setting
        return self.cpu_threads() if device == "cpu" else 1

    def ensure_ready(self) -> None:
        if not self.ready:
            raise ModelNotReady(
                f"{self.name} is still loading its model" if not self.failed else self.failed,
                retry_after=5,
            )

    def check_inputs(
        self,
        texts: Sequence[str | list[int]],
        *,
        param: str = "input",
        max_items: int | None = None,
    ) -> None:
        """Enforce ``MAX_INPUT_ITEMS`` (400) and ``MAX_INPUT_CHARS`` (413) on a request's texts.

        A token-id array counts its ids as characters (every token is at least one).
        """
        s = self.settings
        limit = max_items or s.max_input_items
        if len(texts) > limit:
            raise InvalidRequest(f"too many inputs: {len(texts)} > {limit}", param=param)
        for i, t in enumerate(texts):
            if len(t) > s.max_input_chars:
                what = "characters" if isinstance(t, str) else "token ids"
                raise PayloadTooLarge(
                    f"{param}[{i}] has {len(t)} {what}, over the {s.max_input_chars} limit",
                    param=param,
                )

    async def start(self) -> None:
        """Load and warm the model off the event loop, then start batchers and mark ready."""
        if self.settings.torch_threads:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        t0 = time.perf_counter()
        await asyncio.to_thread(self.load)
        await asyncio.to_thread(self.warmup)
        for b in self._batchers:
            b.start()
        self._trimmer = asyncio.create_task(
            trim_periodically(self.settings.malloc_trim_interval_s), name="malloc-trim"
        )
        elapsed = time.perf_counter() - t0
        self.metrics.model_load.labels(self.name, self.model_id).set(elapsed)
        self.metrics.model_info.labels(self.name, self.model_id, self.model_revision).set(1)
        self.ready = True
        if self.registered is not None and self.registered.watcher is not None:
            self.registered.watcher.start()
        log.info("model ready", extra={"model": self.model_id, "load_seconds": round(elapsed, 2)})

    async def stop(self) -> None:
        self.ready = False
        if self._trimmer is not None:
            self._trimmer.cancel()
        if self.registered is not None and self.registered.watcher is not None:
            await self.registered.watcher.stop()
        for b in self._batchers:
            await b.close()
        await self.on_stop()
