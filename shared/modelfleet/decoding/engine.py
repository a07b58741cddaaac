"""The continuous-batching decoding engine.

One background thread owns the model. Each iteration ("step") it

1. drops sequences whose client went away and admits waiting ones into free batch slots;
2. packs one token for every decoding sequence and the next fixed-size chunk of every
   prefilling prompt (within a token budget) into a single row, runs one forward pass with
   ragged attention (:mod:`modelfleet.decoding.attention`) and computes logits only for the
   rows that end a sequence's input;
3. samples each sequence's next token, turns it into text, checks EOS / stop strings /
   ``max_tokens``, and hands the step's text to the asyncio side in one thread-safe call.

Sequences therefore join and leave the batch at token boundaries. A sequence's result does not
depend on its batch: attention is per sequence, prefill chunk boundaries depend only on the
sequence itself, sampling uses the sequence's own generator, and every step is padded to at
least ``min_rows`` rows - the row count above which the CPU GEMM kernels compute each row the
same way whatever the row count (measured on MKL: 12 and up; fewer rows take other kernels and
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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import torch

from modelfleet.decoding.attention import Segment, SequenceCache, install
from modelfleet.decoding.loader import LoadedModel
from modelfleet.decoding.metrics import EngineObserver
from modelfleet.decoding.sampling import Sampler, SamplingParams
from modelfleet.decoding.text import IncrementalDetokenizer, StopMatcher
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

_CACHE_HEADROOM = 256  # decode tokens reserved up front; the cache doubles past that


@dataclass(frozen=True, slots=True)
class Chunk:
    """Text produced by one step for one sequence; the last chunk carries ``finish_reason``."""

    text: str
    completion_tokens: int
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished generation, collected."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(eq=False, slots=True)
class _Sequence:
    prompt: list[int]
    params: SamplingParams
    route: str
    generation: Generation
    sampler: Sampler
    detok: IncrementalDetokenizer
    stops: StopMatcher
    arrival: float
    deadline: float
    cache: SequenceCache | None = None
    pos: int = 0  # tokens whose keys/values are cached
    next_token: int = -1  # sampled, not yet fed back
    generated: int = 0
    last_token_at: float = 0.0
    cancelled: bool = False
    done: bool = False
    events: list[Chunk] = field(default_factory=list)

    @property
    def prefilling(self) -> bool:
        return self.pos < len(self.prompt)


class Generation:
    """The caller's handle on one sequence: an async iterator of :class:`Chunk`."""

    def __init__(self, engine: Engine, prompt_tokens: int, loop: asyncio.AbstractEventLoop) -> None:
        self._engine = engine
        self._loop = loop
        self._queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        self._seq: _Sequence | None = None
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Chunk]:
        try:
            while self.finish_reason is None:
                item = await self._queue.get()
                if isinstance(item, BaseException):
                    raise item
                self.completion_tokens = item.completion_tokens
                if item.finish_reason is not None:
                    self.finish_reason = item.finish_reason
                yield item
        finally:
            if self.finish_reason is None:
                self.cancel()

    async def collect(self) -> Completion:
        """Wait for the whole text."""
        parts = [chunk.text async for chunk in self]
        return Completion(
            "".join(parts), self.finish_reason or "stop", self.prompt_tokens, self.completion_tokens
        )

    def cancel(self) -> None:
        """Stop generating (client gone); frees the batch slot at the next step."""
        if self._seq is not None and not self._seq.done:
            self._engine._cancel(self._seq)

    def _deliver(self, item: Chunk | BaseException) -> None:
        self._queue.put_nowait(item)


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
        cfg = lm.model.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self._layers = int(text_cfg.num_hidden_layers)
        heads = int(text_cfg.num_attention_heads)
        self._kv_heads = int(getattr(text_cfg, "num_key_value_heads", None) or heads)
        self._head_dim = int(getattr(text_cfg, "head_dim", None) or text_cfg.hidden_size // heads)
        self._cache_dtype = next(
            (p.dtype for p in lm.model.parameters() if p.is_floating_point()), torch.float32
        )
        install(lm.model)
        self._lock = threading.Condition()
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._running: list[_Sequence] = []
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
        if not prompt:
            raise InvalidRequest("the prompt is empty after tokenisation", param="prompt")
        if params.max_tokens < 1:
            raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
        self.check_lengths(len(prompt), params.max_tokens)
        loop = asyncio.get_running_loop()
        gen = Generation(self, len(prompt), loop)
        now = time.perf_counter()
        seq = _Sequence(
            prompt=list(prompt),
            params=params,
            route=route,
            generation=gen,
            sampler=Sampler(params),  # logits come back to the CPU for sampling
            detok=IncrementalDetokenizer(self.lm.tokenizer, prompt),
            stops=StopMatcher(params.stop),
            arrival=now,
            deadline=now + self.queue_timeout_s,
        )
        gen._seq = seq
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
        return gen

    def _cancel(self, seq: _Sequence) -> None:
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
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="decoder", daemon=True)
            self._thread.start()

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
    def _run(self) -> None:
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
            for s in self._running:
                if s.cancelled:
                    s.done = True
                    s.cache = None
            self._running = [s for s in self._running if not s.done]
        with self._lock:
            if any(s.cancelled or s.deadline < now for s in self._waiting):
                kept: collections.deque[_Sequence] = collections.deque()
                for s in self._waiting:
                    if s.cancelled:
                        continue
                    if s.deadline < now:
                        self._fail(s, DeadlineExceeded("request waited too long for a slot"))
                        continue
                    kept.append(s)
                self._waiting = kept
            while self._waiting and len(self._running) < self.max_batch_size:
                seq = self._waiting.popleft()
                self._running.append(seq)
                if self.observer is not None:
                    self.observer.admitted(seq.route, len(seq.prompt))
            return len(self._waiting)

    def _step(self) -> None:
        now = time.perf_counter()
        waiting = self._admit(now)
        if not self._running:
            if self.observer is not None:
                self.observer.step(0, 0, waiting)
            return
        ids: list[int] = []
        positions: list[int] = []
        segments: list[Segment] = []
        samplers: list[tuple[_Sequence, int]] = []  # sequence, row of its last input token
        budget = self.max_step_tokens
        for seq in self._running:
            if not seq.prefilling:
                self._schedule(seq, [seq.next_token], ids, positions, segments)
                samplers.append((seq, len(ids) - 1))
                budget -= 1
        for seq in self._running:
            if seq.prefilling:
                n = min(self.prefill_chunk, len(seq.prompt) - seq.pos)
                if n > budget and ids:
                    break  # FIFO: later prompts wait for the next step
                self._schedule(seq, seq.prompt[seq.pos : seq.pos + n], ids, positions, segments)
                budget -= n
                if not seq.prefilling:
                    samplers.append((seq, len(ids) - 1))
        logits = self._forward(ids, positions, segments, [row for _, row in samplers])
        t = time.perf_counter()
        for i, (seq, _) in enumerate(samplers):
            self._advance(seq, seq.sampler(logits[i]), t)
        batch = self._running
        self._running = [s for s in batch if not s.done]
        for s in batch:
            if s.done:
                self._seq_seconds = 0.9 * self._seq_seconds + 0.1 * (t - s.arrival)
        self._flush_events(batch)
        if self.observer is not None:
            self.observer.step(len(segments), len(self._running), waiting)

    def _schedule(
        self,
        seq: _Sequence,
        tokens: list[int],
        ids: list[int],
        positions: list[int],
        segments: list[Segment],
    ) -> None:
        if seq.cache is None:
            seq.cache = SequenceCache(
                self._layers,
                self._kv_heads,
                self._head_dim,
                len(seq.prompt) + min(seq.params.max_tokens, _CACHE_HEADROOM),
                dtype=self._cache_dtype,
                device=self.lm.device,
            )
        seq.cache.reserve(seq.pos + len(tokens))
        segments.append(Segment(seq.cache, len(ids), len(tokens), seq.pos))
        ids.extend(tokens)
        positions.extend(range(seq.pos, seq.pos + len(tokens)))
        seq.pos += len(tokens)

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
            mf_segments=segments,
        )
        logits: torch.Tensor = out.logits[0, : len(rows)].float()
        return logits.cpu() if device != "cpu" else logits

    def _advance(self, seq: _Sequence, token: int, now: float) -> None:
        seq.generated += 1
        if seq.generated == 1:
            if self.observer is not None:
                self.observer.first_token(seq.route, now - seq.arrival)
        elif self.observer is not None:
            self.observer.next_token(seq.route, now - seq.last_token_at)
        seq.last_token_at = now
        seq.next_token = token
        if token in self.lm.eos_token_ids and not seq.params.ignore_eos:
            self._finish(seq, "stop", seq.stops.flush())
            return
        text, hit = seq.stops.feed(seq.detok.push(token))
        if hit:
            self._finish(seq, "stop", text)
        elif seq.generated >= seq.params.max_tokens:
            tail, _ = seq.stops.feed(seq.detok.flush())
            self._finish(seq, "length", text + tail + seq.stops.flush())
        elif text:
            seq.events.append(Chunk(text, seq.generated))

    def _finish(self, seq: _Sequence, reason: str, text: str) -> None:
        seq.done = True
        seq.cache = None
        seq.events.append(Chunk(text, seq.generated, reason))

    def _fail(self, seq: _Sequence, err: BaseException) -> None:
        seq.done = True
        seq.cache = None
        gen = seq.generation
        with contextlib.suppress(RuntimeError):  # loop already closed
            gen._loop.call_soon_threadsafe(gen._deliver, err)

    def _flush_events(self, batch: list[_Sequence]) -> None:
        """Hand this step's chunks to their event loops, one thread-safe call per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Generation, Chunk]]] = {}
        for seq in batch:
            if seq.events:
                gen = seq.generation
                by_loop.setdefault(gen._loop, []).extend((gen, ev) for ev in seq.events)
                seq.events = []
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver_all, items)


def _deliver_all(items: list[tuple[Generation, Chunk]]) -> None:
    for gen, chunk in items:
        gen._deliver(chunk)
