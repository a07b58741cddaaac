"""Summaries of any length of input: chunk to fit the context window, map, then reduce.

An input that fits one prompt is summarised in one pass. A longer one is split on paragraph and
sentence boundaries into chunks of at most ``chunk_tokens`` tokens; every chunk is summarised
concurrently (so the engine batches them), the partial summaries are joined and summarised
again - recursively, should they still not fit - in the requested style.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

INSTRUCTIONS = {
    "paragraph": "Summarize the following text in one short paragraph. "
    "Reply with the summary only.",
    "bullets": "Summarize the following text as a few short bullet points, one per line, "
    "each starting with '- '. Reply with the bullet points only.",
}
_PARTIAL = "paragraph"
_MAX_DEPTH = 4

_SPLIT = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
# "Here are the key points:", "Summary:", "TL;DR -": a lead-in line, not the summary.
_PREAMBLE = re.compile(
    r"^\s*(?:[^\n]{0,80}:[ \t]*\n|(?:in )?summary\s*[:,-]|tl;?dr\s*[:,-])\s*",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^\s*(?:[-*\u2022\u2013]|\d+[.)])\s+")


@dataclass(frozen=True, slots=True)
class Piece:
    """One model call's result, as the summariser needs it."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(slots=True)
class Summary:
    text: str
    finish_reason: str
    chunks: int
    calls: int
    prompt_tokens: int
    completion_tokens: int


# (text to summarise, style, max_tokens) -> one model call
SummariseOnce = Callable[[str, str, int], Awaitable[Piece]]
CountTokens = Callable[[Sequence[str]], list[int]]


def split_into_chunks(text: str, budget: int, count: CountTokens) -> list[str]:
    """Greedy packing of sentences/paragraphs into chunks of at most ``budget`` tokens."""
    units = [u for u in _SPLIT.split(text) if u and u.strip()]
    sizes = count(units)
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for unit, size in zip(units, sizes, strict=True):
        if size > budget:
            if current:
                chunks.append(" ".join(current))
                current, used = [], 0
            chunks.extend(_split_long(unit, size, budget))
            continue
        if used + size > budget and current:
            chunks.append(" ".join(current))
            current, used = [], 0
        current.append(unit)
        used += size + 1
    if current:
        chunks.append(" ".join(current))
    return chunks


def _split_long(unit: str, size: int, budget: int) -> list[str]:
    # A sentence longer than a chunk (a table, a log dump): cut it on whitespace, sized by its
    # average characters per token, with some slack for the estimate.
    words = unit.split()
    per_chunk = max(1, int(len(words) * budget * 0.8 / size))
    return [" ".join(words[i : i + per_chunk]) for i in range(0, len(words), per_chunk)]


def extract_summary(text: str, style: str) -> str:
    """Strip preambles ("Here is a summary:") and normalise bullets to ``- ``."""
    text = _PREAMBLE.sub("", text.strip(), count=1).strip()
    if style != "bullets":
        return " ".join(line.strip() for line in text.splitlines() if line.strip())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) == 1 and not _BULLET.match(lines[0]):
        lines = [s for s in _SPLIT.split(lines[0]) if s.strip()]
    out = []
    for line in lines:
        body = _BULLET.sub("", line).strip()
        if body:
            out.append(f"- {body}")
    return "\n".join(out)


async def summarise(
    text: str,
    *,
    style: str,
    max_tokens: int,
    chunk_tokens: int,
    map_tokens: int,
    once: SummariseOnce,
    count: CountTokens,
) -> Summary:
    """Map-reduce summary of ``text`` (see the module docstring)."""
    result = Summary("", "stop", 1, 0, 0, 0)

    async def call(part: str, part_style: str, limit: int) -> Piece:
        piece = await once(part, part_style, limit)
        result.calls += 1
        result.prompt_tokens += piece.prompt_tokens
        result.completion_tokens += piece.completion_tokens
        return piece

    current = text
    for depth in range(_MAX_DEPTH):
        chunks = split_into_chunks(current, chunk_tokens, count)
        if depth == 0:
            result.chunks = len(chunks)
        if len(chunks) <= 1:
            break
        partials = await asyncio.gather(*(call(c, _PARTIAL, map_tokens) for c in chunks))
        current = "\n\n".join(extract_summary(p.text, _PARTIAL) for p in partials)
    final = await call(current, style, max_tokens)
    result.text = extract_summary(final.text, style)
    result.finish_reason = final.finish_reason
    return result
