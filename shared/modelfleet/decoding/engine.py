"""The continuous-batching decoding engine.

One background thread owns the model. Each iteration ("step") it

1. drops sequences whose client went away and admits waiting ones into free batch slots,
   each reserving the KV-cache blocks its prompt and ``max_tokens`` may need
   (:mod:`modelfleet.decoding.kvcache`; no room: it waits);
2. packs one token for every decoding sequence and the next fixed-size chunk of every
   prefilling prompt (within a token budget) into a single row
   (:mod:`modelfleet.decoding.schedule`), runs one forward pass with ragged attention over the
   paged cache (:mod:`modelfleet.decoding.attention`) and computes logits only for the rows
   that end a sequence's input;
3. applies penalties, biases and grammar masks to the rows that ask for them (batched, in
   :mod:`modelfleet.decoding.sampling`), samples each sequence's next token, checks EOS /
   grammar end / ``max_tokens``, and hands the step's token ids (and logprobs) to the asyncio
   side in one thread-safe call; text and stop strings are made there
   (:mod:`modelfleet.decoding.handles`), off this loop. A request's ``n`` choices prefill
   once and fork the prompt's cache when its first token is sampled.

Sequences therefore join and leave the batch at token boundaries. A sequence's result does not
depend on its batch: a decode row's keys are padded to a length set by its own length only,
prefill attention is per sequence, prefill chunk boundaries depend only on the sequence itself,
sampling uses the sequence's own generator, and every step is padded to at least ``min_rows``
rows - the row count above which the CPU GEMM kernels compute each row the same way whatever
the row count (measured on MKL: 12 and up; fewer rows take other kernels and
round differently). On a CPU this also needs MKL's strict reproducibility mode
(:func:`modelfleet.devices.reproducible_cpu_math`), which keeps MKL from splitting the inner
dimension across threads for some row counts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

import torch

from modelfleet.decoding.attention import Segment, StepPlan, install
from modelfleet.decoding.handles import Generation, Tokens
from modelfleet.decoding.kvcache import BlockPool, BlockTable, KVSpec
from modelfleet.decoding.loader import LoadedModel
from modelfleet.decoding.metrics import EngineObserver
from modelfleet.decoding.sampling import Sampler, SamplingParams
from modelfleet.decoding.schedule import fork_choices, pack_step
from modelfleet.decoding.sequence import (
    SequenceState,
    draw_tokens,
    flush_events,
    heir_of,
    release,
    take_logprobs,
)
from modelfleet.devices import cpu_math_is_reproducible
from modelfleet.errors import (
    ContextLengthExceeded,
    DeadlineExceeded,
    FleetError,
    InvalidRequest,
    Overloaded,
    ServiceUnavailable,
)

log = logging.getLogger("modelfleet.decoding.engine")


class Engine:
    """Continuous batching over one loaded causal LM (see the module docstring)."""

    def __init__(
        self,
        lm: LoadedModel,
        *,
        max_batch_size: int = 16,
        max_queue: int = 64,
        max_step_tokens: int = 512,
        prefill_chunk: int = 256,
        batch_invariant: bool = True,
        queue_timeout_s: float = 120.0,
        observer: EngineObserver | None = None,
        kv_cache_blocks: int = 0,
        kv_block_size: int = 16,
        kv_cache_memory_fraction: float = 0.8,
    ) -> None:
        self.lm = lm
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.prefill_chunk = min(prefill_chunk, max_step_tokens)
        self.max_step_tokens = max_step_tokens
        self.min_rows = 16 if batch_invariant else 1
        if batch_invariant and lm.device == "cpu" and not cpu_math_is_reproducible():
            log.warning(
                "batch invariance asked for, but MKL_CBWR is not STRICT: greedy output may "
                "depend on the batch (set MKL_CBWR=AUTO,STRICT before the first tensor op)"
            )
        self.queue_timeout_s = queue_timeout_s
        self.observer = observer
        self.context_window = lm.context_window
        self.kv_spec = KVSpec.for_model(
            lm, kv_cache_blocks, kv_block_size, max_batch_size, kv_cache_memory_fraction
        )
        self.pool: BlockPool  # allocated by the engine thread (see _run)
        install(lm.model)
        self._lock = threading.Condition()
        self._waiting: collections.deque[SequenceState] = collections.deque()
        self._running: list[SequenceState] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._seq_seconds = 2.0  # moving average of a sequence's time in the batch (Retry-After)
        self.steps = itertools.count()

    # -- caller side (event loop) ---------------------------------------------------------
    def check_lengths(self, prompt_tokens: int, max_tokens: int) -> None:
        """Raise :class:`ContextLengthExceeded` if the request cannot fit the context window."""
        if prompt_tokens + max_tokens > self.context_window:
            raise ContextLengthExceeded(
                f"this model's context window is {self.context_window} tokens; the request has "
                f"{prompt_tokens} prompt tokens and asks for max_tokens={max_tokens} "
                f"({prompt_tokens + max_tokens} in all)",
                param="max_tokens" if prompt_tokens < self.context_window else "messages",
            )

    def submit(self, prompt: Sequence[int], params: SamplingParams, route: str = "") -> Generation:
        """Queue a sequence; raises at once if it can't fit or the queue is full."""
        return self.submit_n(prompt, [params], route)[0]

    def submit_n(
        self, prompt: Sequence[int], params: Sequence[SamplingParams], route: str = ""
    ) -> list[Generation]:
        """Queue ``len(params)`` sequences of one prompt that share its prefill (``n`` > 1).

        The first sequence prefills; when its prompt is in the cache the others get a copy of
        that cache and sample their first token from the same logits row, so the prompt is
        computed once and every choice still sees exactly what it would have alone.
        """
        if not prompt:
            raise InvalidRequest("the prompt is empty after tokenisation", param="prompt")
        for p in params:
            if p.max_tokens < 1:
                raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
            self.check_lengths(len(prompt), p.max_tokens)
        spec = self.kv_spec
        need = sum(spec.blocks_for(len(prompt) + p.max_tokens) for p in params)
        if need > spec.blocks:
            raise InvalidRequest(
                f"the request needs {need} KV-cache blocks ({spec.block_size} tokens each "
                f"for the prompt plus max_tokens, per choice) and this server's cache holds "
                f"{spec.blocks} (KV_CACHE_BLOCKS); lower max_tokens or n",
                param="max_tokens",
            )
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        seqs: list[SequenceState] = []
        for p in params:
            gen = Generation(self, list(prompt), loop, self.lm.tokenizer, p.stop)
            seq = SequenceState(
                prompt=list(prompt),
                params=p,
                route=route,
                generation=gen,
                sampler=Sampler(p, self.lm.device),  # draws where the logits are
                arrival=now,
                deadline=now + self.queue_timeout_s,
            )
            gen._seq = seq
            seqs.append(seq)
        seq = seqs[0]
        seq.forks = seqs[1:]
        with self._lock:
            if self._stopping or self._thread is None:
                raise ServiceUnavailable("the decoder is not running", retry_after=5)
            if len(self._waiting) >= self.max_queue:
                waves = len(self._waiting) / self.max_batch_size + 1
                raise Overloaded(
                    f"{len(self._waiting)} sequences are already waiting for a batch slot; "
                    "retry later",
                    retry_after=waves * self._seq_seconds,
                )
            self._waiting.append(seq)
            self._lock.notify()
        return [s.generation for s in seqs]

    def _cancel(self, seq: SequenceState) -> None:
        with self._lock:
            seq.cancelled = True
            self._lock.notify()

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine thread; returns once it has allocated the KV cache (or raises)."""
        if self._thread is None:
            self._stopping = False
            ready: Future[None] = Future()
            self._thread = threading.Thread(
                target=self._run, args=(ready,), name="decoder", daemon=True
            )
            self._thread.start()
            try:
                ready.result()
            except BaseException:
                self._thread = None
                raise

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        err = ServiceUnavailable("the decoder is shutting down", retry_after=5)
        for seq in [*self._running, *self._waiting]:
            self._fail(seq, err)
        self._running.clear()
        self._waiting.clear()

    # -- engine thread --------------------------------------------------------------------
    def _run(self, ready: Future[None]) -> None:
        # Every tensor op of the engine runs on this thread, the pool's first writes included:
        # an OpenMP parallel region on any other thread gives that thread its own team, and
        # with more OpenMP threads than cores libgomp stops spinning at barriers and sleeps in
        # futex instead (~80,000 context switches per 16 x 64 wave on 2 cores, 0.7x the speed).
        try:
            self.pool = self.kv_spec.allocate()
        except BaseException as exc:  # handed to start()'s caller
            ready.set_exception(exc)
            return
        ready.set_result(None)
        if self.observer is not None:
            self.observer.kv_blocks(self.pool.used, self.pool.free)
        with torch.inference_mode():
            while True:
                with self._lock:
                    while not (self._stopping or self._waiting or self._running):
                        self._lock.wait()
                    if self._stopping:
                        return
                try:
                    self._step()
                except Exception as exc:
                    log.exception("decoding step failed; failing the batch")
                    err = FleetError(f"generation failed: {exc}")
                    for seq in self._running:
                        self._fail(seq, err)
                    self._running.clear()

    def _admit(self, now: float) -> int:
        """Retire cancelled sequences, fill free slots; return how many still wait."""
        if any(s.cancelled for s in self._running):
            kept_running: list[SequenceState] = []
            for s in self._running:
                heir = heir_of(s) if s.cancelled else s
                if heir is not None:
                    kept_running.append(heir)
            self._running = kept_running
        with self._lock:
            if any(s.cancelled or s.deadline < now for s in self._waiting):
                kept: collections.deque[SequenceState] = collections.deque()
                for s in self._waiting:
                    if s.deadline < now:
                        self._fail(s, DeadlineExceeded("request waited too long for a slot"))
                        continue
                    heir = heir_of(s) if s.cancelled else s
                    if heir is not None:
                        kept.append(heir)
                self._waiting = kept
            # A request with n choices takes n slots (its forks join when its prefill ends);
            # one wider than the whole batch still runs, alone, rather than wait forever. It
            # also reserves the KV-cache blocks all its choices may need, or waits (FIFO).
            while self._waiting and (
                not self._running
                or len(self._running) + 1 + len(self._waiting[0].forks) <= self.max_batch_size
            ):
                if not self._reserve(self._waiting[0]):
                    break
                seq = self._waiting.popleft()
                self._running.append(seq)
                seq.admitted_at = now
                if self.observer is not None:
                    self.observer.admitted(seq.route, len(seq.prompt))
            return len(self._waiting)

    def _reserve(self, seq: SequenceState) -> bool:
        choices = [seq, *seq.forks]
        needs = [self.pool.blocks_for(len(s.prompt) + s.params.max_tokens) for s in choices]
        if not self.pool.try_reserve(sum(needs)):
            return False
        for s, need in zip(choices, needs, strict=True):
            s.table = BlockTable(self.pool, need)
        return True

    def _step(self) -> None:
        now = time.perf_counter()
        waiting = self._admit(now)
        if not self._running:
            if self.observer is not None:
                self.observer.step(0, 0, waiting)
                self.observer.kv_blocks(self.pool.used, self.pool.free)
            return
        step = pack_step(self._running, self.max_step_tokens, self.prefill_chunk)
        rows = [row for _, row in step.samplers]
        logits = self._forward(step.ids, step.positions, step.segments, rows)
        entries = fork_choices(step.samplers, self._running)
        self._sample(logits, entries, time.perf_counter())
        t = time.perf_counter()
        batch = self._running
        self._running = [s for s in batch if not s.done]
        for s in batch:
            if s.done:
                self._seq_seconds = 0.9 * self._seq_seconds + 0.1 * (t - s.arrival)
        flush_events(batch)
        if self.observer is not None:
            self.observer.step(len(step.segments), len(self._running), waiting)
            self.observer.kv_blocks(self.pool.used, self.pool.free)

    def _forward(
        self, ids: list[int], positions: list[int], segments: list[Segment], rows: list[int]
    ) -> torch.Tensor:
        pad = max(0, self.min_rows - len(ids))
        keep = rows + [0] * max(0, self.min_rows - len(rows))
        device = self.lm.device
        out = self.lm.model(
            input_ids=torch.tensor([ids + [0] * pad], device=device),
            position_ids=torch.tensor([positions + [0] * pad], device=device),
            logits_to_keep=torch.tensor(keep, device=device),
            use_cache=False,
            mf_plan=StepPlan(self.pool, segments, device),
        )
        # Logits stay on the device: every row is processed and drawn there and only token ids
        # cross to the host (draw_tokens).
        logits: torch.Tensor = out.logits[0, : len(rows)].float()
        return logits

    def _sample(
        self, logits: torch.Tensor, entries: list[tuple[SequenceState, int]], now: float
    ) -> None:
        if len(entries) != logits.shape[0]:  # forks share their parent's row
            logits = logits.index_select(0, torch.tensor([i for _, i in entries]))
        seqs = [s for s, _ in entries]
        for seq, token in zip(seqs, draw_tokens(logits, seqs, self.lm.eos_token_ids), strict=True):
            self._advance(seq, token, now)

    def _advance(self, seq: SequenceState, token: int, now: float) -> None:
        seq.generated += 1
        if seq.generated == 1:
            seq.first_token_at = now
            if self.observer is not None:
                self.observer.first_token(seq.route, now - seq.arrival)
        elif self.observer is not None:
            self.observer.next_token(seq.route, now - seq.last_token_at)
        seq.last_token_at = now
        seq.next_token = token
        matcher = seq.sampler.matcher
        if (token in self.lm.eos_token_ids and not seq.params.ignore_eos) or (
            matcher is not None and matcher.is_terminated()
        ):
            self._finish(seq, "stop", None)
        elif seq.generated >= seq.params.max_tokens:
            self._finish(seq, "length", token)
        else:  # text and stop strings: on the caller's event loop (handles.Generation)
            seq.events.append(Tokens(token, seq.generated, None, take_logprobs(seq)))

    def _finish(self, seq: SequenceState, reason: str, token: int | None) -> None:
        seq.done = True
        release(seq)
        seq.events.append(Tokens(token, seq.generated, reason, take_logprobs(seq)))

    def _fail(self, seq: SequenceState, err: BaseException) -> None:
        """End ``seq`` and the choices forked from it (if not yet forked) with ``err``."""
        for s in [seq, *seq.forks]:
            s.done, gen = True, s.generation
            release(s)
            with contextlib.suppress(RuntimeError):  # loop already closed
                gen._loop.call_soon_threadsafe(gen._deliver, err)
