"""Dynamic micro-batching for encoder models.

Concurrent requests put their items in one bounded queue. A collector task takes up to
``max_batch_size`` items - waiting ``max_wait_ms`` for company whenever fewer are queued, also
right after a forward pass (where, under load, the queue often holds a single straggler) - and
runs one forward pass in a worker thread, so the event loop keeps accepting requests meanwhile.
Each caller gets its own results back in order.

With ``workers > 1`` that many collectors each run their own forward pass at the same time, in a
pool of as many threads. On a CPU this is the throughput mode TorchServe and Intel recommend: N
single-threaded passes in flight instead of one pass split over N threads, which keeps every core
busy without a barrier per operator and degrades gracefully when the event loop or a neighbour
takes a core for a moment.

A full queue answers :class:`~modelfleet.errors.Overloaded` (429 with Retry-After); a request
whose deadline passes answers :class:`~modelfleet.errors.DeadlineExceeded` (504), and its items
that have not started are dropped rather than computed for nobody.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from modelfleet import tracing
from modelfleet.errors import DeadlineExceeded, Overloaded, ServiceUnavailable
from modelfleet.metrics import Metrics

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("modelfleet.batching")


@dataclass(slots=True)
class _Item(Generic[T, R]):
    value: T
    future: asyncio.Future[R]
    deadline: float = field(default=float("inf"))
    trace: Any = None  # the request's span, when tracing
    queued_ns: int = 0


class MicroBatcher(Generic[T, R]):
    """Group items from concurrent callers into forward passes of ``fn``.

    ``fn`` receives a list of items and must return one result per item, in order. It runs in
    ``workers`` threads, at most one forward pass per thread; ``fn`` must be safe to call from
    that many threads at once (inference-mode torch modules are).
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        metrics: Metrics | None = None,
        name: str = "batcher",
        workers: int = 1,
        thread_init: Callable[[], None] | None = None,
    ) -> None:
        self._fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._metrics = metrics
        self._name = name
        self._pending: collections.deque[_Item[T, R]] = collections.deque()
        self._wakeup = asyncio.Event()
        self.workers = max(1, workers)
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix=name, initializer=thread_init
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0  # collectors inside a forward pass
        self._closed = False
        # Moving average of seconds per item, to give a truthful Retry-After when full.
        self._sec_per_item = 0.01

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._run(), name=f"{self._name}-{i}") for i in range(self.workers)
            ]

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(ServiceUnavailable("service is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def depth(self) -> int:
        return len(self._pending)

    async def submit(self, values: Sequence[T], timeout: float | None = None) -> list[R]:
        """Queue ``values`` and wait for their results, in order."""
        if self._closed:
            raise ServiceUnavailable("service is shutting down")
        if len(self._pending) + len(values) > self.max_queue:
            retry = max(1.0, len(self._pending) * self._sec_per_item / self.workers)
            raise Overloaded(
                f"server is at capacity ({len(self._pending)} items queued); retry later",
                retry_after=retry,
            )
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout if timeout else float("inf")
        items = [_Item[T, R](v, loop.create_future(), deadline) for v in values]
        if tracing.ENABLED:
            span, now_ns = tracing.capture(), time.time_ns()
            for it in items:
                it.trace, it.queued_ns = span, now_ns
        self._pending.extend(items)
        self._set_depth()
        self._wakeup.set()
        futures = [it.future for it in items]
        try:
            # asyncio.timeout rather than wait_for(gather()): no wrapper futures per request.
            async with asyncio.timeout(timeout):
                if len(futures) == 1:
                    return [await futures[0]]
                return list(await asyncio.gather(*futures))
        except TimeoutError:
            raise DeadlineExceeded(
                f"request did not complete within its {timeout:.1f}s deadline"
            ) from None
        finally:
            for fut in futures:
                if not fut.done():
                    fut.cancel()

    def _set_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.labels(self._metrics.service).set(len(self._pending))

    def _take(self) -> list[_Item[T, R]]:
        batch: list[_Item[T, R]] = []
        now = time.monotonic()
        # Share what is queued among the idle collectors rather than let the first take it all.
        idle = self.workers - self._busy
        limit = min(self.max_batch_size, -(-len(self._pending) // max(1, idle)))
        while self._pending and len(batch) < limit:
            item = self._pending.popleft()
            if item.future.done():  # caller gone (deadline, disconnect)
                continue
            if item.deadline < now:
                item.future.set_exception(DeadlineExceeded("request deadline passed in queue"))
                continue
            batch.append(item)
        self._set_depth()
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            # Short of a full batch: give concurrent callers a moment to join it. Also after a
            # forward pass, when the stragglers queued so far are often a single request.
            if self.max_wait > 0 and len(self._pending) < self.max_batch_size:
                await asyncio.sleep(self.max_wait)
            batch = self._take()
            if not batch:
                continue
            if self._metrics is not None:
                self._metrics.batch_size.labels(self._metrics.service).observe(len(batch))
            taken_ns = time.time_ns() if tracing.ENABLED else 0
            start = time.perf_counter()
            self._busy += 1
            try:
                results = await loop.run_in_executor(
                    self._executor, self._fn, [it.value for it in batch]
                )
            except Exception as exc:  # one bad batch must not stop the collector
                log.exception("forward pass failed")
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(exc)
                continue
            finally:
                self._busy -= 1
            elapsed = time.perf_counter() - start
            if taken_ns:
                self._trace(batch, taken_ns, elapsed)
            self._sec_per_item = 0.8 * self._sec_per_item + 0.2 * (elapsed / len(batch))
            for it, res in zip(batch, results, strict=True):
                if not it.future.done():
                    it.future.set_result(res)

    def _trace(self, batch: list[_Item[T, R]], taken_ns: int, elapsed: float) -> None:
        traced = [(it.trace, it.queued_ns) for it in batch if it.trace is not None]
        if traced:
            end_ns = time.time_ns()
            start_ns = max(taken_ns, end_ns - int(elapsed * 1e9))
            tracing.record_batch(traced, len(batch), taken_ns, start_ns, end_ns, self._name)
