"""Token ids to text while streaming: incremental detokenisation and stop strings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Prompt tokens decoded ahead of the first generated one: tokenizers that drop a leading space at
# the start of a decode (SentencePiece) then render the first word as they would mid-text.
_CONTEXT_TOKENS = 6


class IncrementalDetokenizer:
    """Turns one token at a time into text deltas, never splitting a UTF-8 character.

    A byte-level BPE token can hold half a character; decoding it alone yields U+FFFD. The
    decoder keeps a short window of tokens and only emits text once the window decodes cleanly
    (the approach of TGI and vLLM).
    """

    __slots__ = ("_prefix", "_read", "_tokens", "tokenizer")

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self._tokens: list[int] = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix = 0
        self._read = len(self._tokens)

    def _decode(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def push(self, token: int) -> str:
        """Add one generated token; return the text it completes (possibly empty)."""
        self._tokens.append(token)
        before = self._decode(self._tokens[self._prefix : self._read])
        after = self._decode(self._tokens[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._tokens)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Text still held back at the end of generation (an incomplete character)."""
        before = self._decode(self._tokens[self._prefix : self._read])
        after = self._decode(self._tokens[self._prefix :])
        self._prefix = self._read = len(self._tokens)
        return after[len(before) :] if len(after) > len(before) else ""


class StopMatcher:
    """Finds stop strings across token boundaries, holding back text that may start one."""

    __slots__ = ("_held", "stops")

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, delta: str) -> tuple[str, bool]:
        """Return (text safe to emit, whether a stop string was hit).

        Text from the stop string on is dropped; so is anything after it.
        """
        if not self.stops:
            return delta, False
        buf = self._held + delta
        hit = -1
        for stop in self.stops:
            i = buf.find(stop)
            if i != -1 and (hit == -1 or i < hit):
                hit = i
        if hit != -1:
            self._held = ""
            return buf[:hit], True
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """Held-back text once generation ends without a stop string."""
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of some stop."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best
