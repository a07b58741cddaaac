"""What a caller of the engine holds: a :class:`Generation` yielding :class:`Chunk` objects.

The engine thread hands over token ids (:class:`Tokens`); turning them into text and finding
stop strings happens here, on the caller's event loop, off the engine's step loop (as vLLM's
output processor does). A stop string found here cancels the sequence in the engine, which
drops it at its next step; tokens it produced meanwhile are discarded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from modelfleet.decoding.sampling import TokenLogprob
from modelfleet.decoding.text import IncrementalDetokenizer, StopMatcher
from modelfleet.tracing import record_sequence


@dataclass(frozen=True, slots=True)
class Chunk:
    """Text produced by one step for one sequence; the last chunk carries ``finish_reason``.

    ``logprobs`` holds the tokens generated since the previous chunk (when asked for): text is
    held back until it forms whole characters, so a chunk may cover several tokens, or none.
    """

    text: str
    completion_tokens: int
    finish_reason: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Tokens:
    """One step's output for one sequence, from the engine thread.

    ``token`` is None when the step ended the sequence without text (end-of-sequence, grammar
    end); ``finish_reason`` is set on the sequence's last step.
    """

    token: int | None
    completion_tokens: int
    finish_reason: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished generation, collected."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] = ()


class _Canceller(Protocol):
    def _cancel(self, seq: Any) -> None: ...


class Generation:
    """The caller's handle on one sequence: an async iterator of :class:`Chunk`."""

    def __init__(
        self,
        engine: _Canceller,
        prompt: list[int],
        loop: asyncio.AbstractEventLoop,
        tokenizer: Any,
        stops: tuple[str, ...] = (),
    ) -> None:
        self._engine = engine
        self._loop = loop
        self._queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        self._seq: Any = None
        self._detok = IncrementalDetokenizer(tokenizer, prompt)
        self._stops = StopMatcher(stops)
        self._logprobs: list[TokenLogprob] = []  # of tokens whose text is still held back
        self._ended = False  # the last chunk (or an error) is queued; later tokens are dropped
        self.prompt_tokens = len(prompt)
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Chunk]:
        error: BaseException | None = None
        try:
            while self.finish_reason is None:
                item = await self._queue.get()
                if isinstance(item, BaseException):
                    error = item
                    raise item
                self.completion_tokens = item.completion_tokens
                if item.finish_reason is not None:
                    self.finish_reason = item.finish_reason
                yield item
        finally:
            if self.finish_reason is None:
                self.cancel()
            if self._seq is not None and self._seq.trace is not None:
                record_sequence(self._seq, error)

    async def collect(self) -> Completion:
        """Wait for the whole text."""
        parts: list[str] = []
        logprobs: list[TokenLogprob] = []
        async for chunk in self:
            parts.append(chunk.text)
            logprobs.extend(chunk.logprobs)
        return Completion(
            "".join(parts),
            self.finish_reason or "stop",
            self.prompt_tokens,
            self.completion_tokens,
            tuple(logprobs),
        )

    def cancel(self) -> None:
        """Stop generating (client gone); frees the batch slot at the next step."""
        if self._seq is not None and not self._seq.done:
            self._engine._cancel(self._seq)

    def _deliver(self, item: Tokens | BaseException) -> None:
        """Runs on the event loop: turn the engine's tokens into a chunk of text (or none)."""
        if self._ended:
            return
        if isinstance(item, BaseException):
            self._ended = True
            self._queue.put_nowait(item)
            return
        self._logprobs.extend(item.logprobs)
        reason, text = item.finish_reason, ""
        if item.token is None:
            text = self._stops.flush()
        else:
            text, hit = self._stops.feed(self._detok.push(item.token))
            if hit:
                reason = "stop"
                if item.finish_reason is None:
                    self.cancel()  # the engine would go on to max_tokens
            elif reason is not None:
                tail, _ = self._stops.feed(self._detok.flush())
                text += tail + self._stops.flush()
        if reason is None and not text:
            return  # held back: part of a character, or maybe the start of a stop string
        self._ended = reason is not None
        logprobs, self._logprobs = tuple(self._logprobs), []
        self._queue.put_nowait(Chunk(text, item.completion_tokens, reason, logprobs))


def deliver_all(items: list[tuple[Generation, Tokens]]) -> None:
    """Runs on a generation's event loop: hand over one step's tokens."""
    for gen, tokens in items:
        gen._deliver(tokens)
