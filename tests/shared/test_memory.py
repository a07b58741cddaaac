"""The allocator settings of modelfleet.memory, in this (glibc) process."""

from __future__ import annotations

import asyncio
import platform
import threading

import pytest

from modelfleet import memory
from modelfleet.memory import release_free_memory, trim_periodically, tune_allocator
from tests.support.procs import await_until

glibc = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not glibc, reason="mallopt/malloc_trim are glibc's")
def test_settings_are_applied_and_zero_leaves_glibc_defaults() -> None:
    assert tune_allocator(0, 0) == {}
    applied = tune_allocator(0, 2)
    assert applied == {"arena_max": 2}


@pytest.mark.skipif(not glibc, reason="mallopt/malloc_trim are glibc's")
def test_free_pages_go_back_to_the_os() -> None:
    blocks = [bytearray(64 << 10) for _ in range(2000)]  # ~128 MiB from the heap
    del blocks
    assert isinstance(release_free_memory(), bool)


@pytest.mark.skipif(not glibc, reason="mallopt/malloc_trim are glibc's")
def test_trimming_runs_off_the_loop_until_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []

    def trim() -> bool:
        threads.append(threading.current_thread())
        return release_free_memory()

    monkeypatch.setattr(memory, "release_free_memory", trim)

    async def main() -> None:
        task = asyncio.create_task(trim_periodically(0.01))
        await await_until(lambda: len(threads) >= 3, what="three trims")
        assert not task.done()
        assert threading.main_thread() not in threads  # off the event loop's thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # 0 disables it: the coroutine returns at once.
        await asyncio.wait_for(trim_periodically(0), 1)

    asyncio.run(main())
