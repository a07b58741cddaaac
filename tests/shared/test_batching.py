"""The micro-batcher with a real worker thread: grouping, order, back-pressure, deadlines."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from modelfleet.batching import MicroBatcher
from modelfleet.errors import DeadlineExceeded, Overloaded
from modelfleet.metrics import Metrics
from tests.support.procs import await_until


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_concurrent_callers_share_forward_passes_and_keep_order() -> None:
    sizes: list[int] = []

    def fn(items: list[int]) -> list[int]:
        sizes.append(len(items))
        time.sleep(0.01)
        return [x * 10 for x in items]

    async def main() -> list[list[int]]:
        b = MicroBatcher(fn, max_batch_size=16, max_wait_ms=5, max_queue=100,
                         metrics=Metrics("t"))  # fmt: skip
        b.start()
        try:
            return await asyncio.gather(*(b.submit([i, i + 100]) for i in range(20)))
        finally:
            await b.close()

    results = run(main())
    assert results == [[i * 10, (i + 100) * 10] for i in range(20)]
    assert max(sizes) <= 16 and len(sizes) < 20  # batched, capped


def test_full_queue_answers_overloaded_with_retry_after() -> None:
    started = threading.Event()
    release = threading.Event()

    def fn(items: list[int]) -> list[int]:
        started.set()
        release.wait(5)
        return items

    async def main() -> None:
        b = MicroBatcher(fn, max_batch_size=2, max_wait_ms=0, max_queue=4)
        b.start()
        first = asyncio.ensure_future(b.submit([1, 2]))
        assert await asyncio.to_thread(started.wait, 5)  # the worker holds [1, 2]
        queued = asyncio.ensure_future(b.submit([3, 4, 5, 6]))
        await await_until(lambda: b.depth == 4, what="[3, 4, 5, 6] queued")
        with pytest.raises(Overloaded) as exc:
            await b.submit([7])
        assert exc.value.status_code == 429 and exc.value.headers()["Retry-After"]
        release.set()
        assert await first == [1, 2] and await queued == [3, 4, 5, 6]
        await b.close()

    run(main())


def test_deadline_answers_504_and_drops_unstarted_items() -> None:
    calls: list[list[int]] = []
    started = threading.Event()
    release = threading.Event()

    def fn(items: list[int]) -> list[int]:
        calls.append(items)
        if items == [1]:  # a forward pass that outlasts the next request's deadline
            started.set()
            release.wait(5)
        return items

    async def main() -> None:
        b = MicroBatcher(fn, max_batch_size=1, max_wait_ms=0, max_queue=10)
        b.start()
        slow = asyncio.ensure_future(b.submit([1]))
        assert await asyncio.to_thread(started.wait, 5)
        with pytest.raises(DeadlineExceeded) as exc:
            await b.submit([2], timeout=0.1)
        assert exc.value.status_code == 504
        release.set()
        assert await slow == [1]
        # One worker, one item a pass: [3] is computed after whatever became of [2].
        assert await b.submit([3]) == [3]
        await b.close()

    run(main())
    assert calls == [[1], [3]]  # [2] expired before it started: never computed


def test_a_failing_batch_fails_its_callers_only() -> None:
    def fn(items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("unlucky")
        return items

    async def main() -> None:
        b = MicroBatcher(fn, max_batch_size=1, max_wait_ms=0, max_queue=10)
        b.start()
        with pytest.raises(ValueError):
            await b.submit([13])
        assert await b.submit([7]) == [7]
        await b.close()

    run(main())


def test_workers_run_forward_passes_at_once_and_share_the_queue() -> None:
    active = 0
    peak = 0
    sizes: list[int] = []
    threads: set[str] = set()
    inits: list[str] = []
    lock = threading.Lock()

    def fn(items: list[int]) -> list[int]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            sizes.append(len(items))
            threads.add(threading.current_thread().name)
        time.sleep(0.05)
        with lock:
            active -= 1
        return [x + 1 for x in items]

    async def main() -> list[list[int]]:
        def init() -> None:
            inits.append(threading.current_thread().name)

        b = MicroBatcher(fn, max_batch_size=64, max_wait_ms=5, max_queue=1000, workers=2,
                         thread_init=init)  # fmt: skip
        b.start()
        try:
            return await asyncio.gather(*(b.submit([i]) for i in range(64)))
        finally:
            await b.close()

    assert run(main()) == [[i + 1] for i in range(64)]
    assert peak == 2 and len(threads) == 2
    assert sorted(inits) == sorted(threads)  # each worker thread initialised itself
    # 64 queued items and two idle workers: each takes half, not the first one all of them.
    assert sizes[:2] == [32, 32]


def test_stragglers_after_a_forward_pass_wait_for_company() -> None:
    started = threading.Event()
    release = threading.Event()
    sizes: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        sizes.append(list(items))
        if items == [0]:
            started.set()
            release.wait(5)
        return items

    async def main() -> None:
        b = MicroBatcher(fn, max_batch_size=8, max_wait_ms=200, max_queue=100)
        b.start()
        try:
            first = asyncio.ensure_future(b.submit([0]))
            await asyncio.to_thread(started.wait, 5)
            straggler = asyncio.ensure_future(b.submit([1]))  # queued during the pass
            await await_until(lambda: b.depth == 1, what="[1] queued")
            release.set()
            await first  # the pass is over; [1] alone must not go yet
            late = asyncio.ensure_future(b.submit([2, 3]))
            await asyncio.gather(first, straggler, late)
        finally:
            await b.close()

    run(main())
    assert sizes == [[0], [1, 2, 3]]
