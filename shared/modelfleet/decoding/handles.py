"""What a caller of the engine holds: a :class:`Generation` yielding :class:`Chunk` objects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from modelfleet.decoding.sampling import TokenLogprob
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
        self, engine: _Canceller, prompt_tokens: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._engine = engine
        self._loop = loop
        self._queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        self._seq: Any = None
        self.prompt_tokens = prompt_tokens
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

    def _deliver(self, item: Chunk | BaseException) -> None:
        self._queue.put_nowait(item)


def deliver_all(items: list[tuple[Generation, Chunk]]) -> None:
    """Runs on a generation's event loop: hand over one step's chunks."""
    for gen, chunk in items:
        gen._deliver(chunk)
