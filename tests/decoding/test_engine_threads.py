"""All of the engine's tensor work runs on its own thread.

An OpenMP parallel region on any other thread (the caller's, or the event loop's) gives that
thread a team of its own; with more OpenMP threads than cores, libgomp stops spinning at
barriers and sleeps in futex instead, and the engine ran at 0.7x on 2 cores (~80,000 context
switches per 16 x 64 wave instead of ~70). The check counts the process's threads: building,
starting and running an engine adds the engine thread and its team, never a team for the
caller. The control shows the count does see a team appear on the caller's thread.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import asyncio, os, torch
    torch.set_num_threads(2)
    from modelfleet.decoding.engine import Engine
    from modelfleet.decoding.loader import load_causal_lm
    from modelfleet.decoding.sampling import SamplingParams
    from modelfleet.decoding.settings import DecoderSettings
    from modelfleet.resolve import PACKAGED_LLM, packaged_llm_gguf, resolve

    def threads():
        return len(os.listdir("/proc/self/task"))

    source = resolve("", packaged=packaged_llm_gguf, packaged_name=PACKAGED_LLM)
    lm = load_causal_lm(source, cache_dir=DecoderSettings().cache_dir, context_window=512)
    before = threads()
    eng = Engine(lm, max_batch_size=4, kv_cache_blocks=256)
    eng.start()
    params = SamplingParams(max_tokens=4, temperature=0.0)

    async def run():
        await asyncio.gather(*(eng.submit([1, 2, 3, i], params).collect() for i in range(4)))

    asyncio.run(run())
    engine_threads = threads() - before  # the engine thread and its team, while it runs
    torch.ones(1 << 20).mul_(2)  # the control: a parallel region on this thread
    print(engine_threads, threads() - before - engine_threads, torch.get_num_threads())
    eng.stop()
    """
)


def test_the_engine_runs_no_openmp_team_on_the_callers_thread() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300, check=True
    ).stdout.split()
    engine_threads, caller_team, team = (int(x) for x in out[-3:])
    assert caller_team == team - 1, "the control saw no team start on the caller's thread"
    assert engine_threads == team, f"{engine_threads} threads for an engine and its team of {team}"
