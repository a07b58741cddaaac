"""Token log-probabilities in OpenAI's two shapes (chat's ``content`` list, completions' arrays)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from modelfleet.decoding.sampling import TokenLogprob

TokenBytes = Callable[[int], bytes]


def _entry(token: int, logprob: float, token_bytes: TokenBytes) -> dict[str, Any]:
    raw = token_bytes(token)
    # A token may hold part of a UTF-8 character: the text shows U+FFFD, ``bytes`` the truth.
    return {"token": raw.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(raw)}


def chat_logprobs(lps: Sequence[TokenLogprob], token_bytes: TokenBytes) -> dict[str, Any]:
    """``choices[].logprobs`` of a chat completion (or of one stream chunk)."""
    return {
        "content": [
            {
                **_entry(lp.token, lp.logprob, token_bytes),
                "top_logprobs": [_entry(t, v, token_bytes) for t, v in lp.top],
            }
            for lp in lps
        ],
        "refusal": None,
    }


def completion_logprobs(
    lps: Sequence[TokenLogprob], token_bytes: TokenBytes, offset: int = 0
) -> dict[str, Any]:
    """``choices[].logprobs`` of a text completion; ``offset``: characters before this chunk."""
    tokens, offsets = [], []
    for lp in lps:
        text = token_bytes(lp.token).decode("utf-8", "replace")
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [lp.logprob for lp in lps],
        "top_logprobs": [
            {token_bytes(t).decode("utf-8", "replace"): v for t, v in lp.top} for lp in lps
        ],
        "text_offset": offsets,
    }
