"""Chunking and summary extraction of the map-reduce summariser (no model)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from services.generation.summarize import Piece, extract_summary, split_into_chunks, summarise


def words(texts: Sequence[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def test_chunks_respect_the_budget_and_keep_every_sentence() -> None:
    text = " ".join(f"Sentence number {i} has five words." for i in range(40))
    chunks = split_into_chunks(text, 30, words)
    assert len(chunks) > 1
    assert all(len(c.split()) <= 30 for c in chunks)
    assert " ".join(chunks).split() == text.split()


def test_an_overlong_sentence_is_cut_on_whitespace() -> None:
    text = " ".join(["word"] * 500)
    chunks = split_into_chunks(text, 64, words)
    assert all(len(c.split()) <= 64 for c in chunks)
    assert sum(len(c.split()) for c in chunks) == 500


def test_extract_summary_strips_preambles_and_normalises_bullets() -> None:
    assert extract_summary("Here is a summary of the text:\nCats sleep.", "paragraph") == (
        "Cats sleep."
    )
    assert extract_summary("Summary: A.\nB.", "paragraph") == "A. B."
    raw = "Here are the key points:\n* one\n2. two\n\u2022 three"
    assert extract_summary(raw, "bullets") == "- one\n- two\n- three"
    assert extract_summary("First fact. Second fact.", "bullets") == "- First fact.\n- Second fact."


def test_long_input_is_mapped_then_reduced() -> None:
    calls: list[tuple[int, str, int]] = []

    async def once(text: str, style: str, limit: int) -> Piece:
        calls.append((len(text.split()), style, limit))
        return Piece("short partial.", "stop", len(text.split()), 2)

    text = " ".join(f"Fact {i} is stated here." for i in range(100))
    result = asyncio.run(
        summarise(
            text,
            style="bullets",
            max_tokens=50,
            chunk_tokens=60,
            map_tokens=10,
            once=once,
            count=words,
        )
    )
    assert result.chunks == len(calls) - 1 > 1
    assert all(c[1] == "paragraph" and c[2] == 10 for c in calls[:-1])
    assert calls[-1][1:] == ("bullets", 50)
    assert result.text == "- short partial."
    assert result.prompt_tokens == sum(c[0] for c in calls)
