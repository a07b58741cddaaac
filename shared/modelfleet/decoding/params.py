"""From an OpenAI request to the engine's :class:`SamplingParams`: defaults and limits.

Parameters a request omits come from the model's ``generation_config`` when it sets them (as
vLLM does: a Qwen instruct model samples with its recommended temperature, top-p, top-k and
repetition penalty), else from OpenAI's defaults. Every limit is a setting and every breach a
400 that names the parameter and the limit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from modelfleet.decoding.openai import SamplingFields
from modelfleet.decoding.sampling import SamplingParams
from modelfleet.decoding.settings import DecoderSettings
from modelfleet.errors import ContextLengthExceeded, InvalidRequest

_GENERATION_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty")


def generation_defaults(model: Any) -> dict[str, float]:
    """The sampling values the checkpoint's ``generation_config`` sets explicitly.

    transformers 5 leaves unset values ``None``; a config with ``do_sample: false`` asks for
    greedy decoding, which OpenAI clients express as temperature 0.
    """
    config = getattr(model, "generation_config", None)
    if config is None:
        return {}
    out = {k: float(v) for k in _GENERATION_KEYS if (v := getattr(config, k, None)) is not None}
    if getattr(config, "do_sample", None) is False:
        out["temperature"] = 0.0
    return out


def resolve_max_tokens(
    settings: DecoderSettings, window: int, prompt_tokens: int, requested: int | None, param: str
) -> int:
    """``max_tokens`` against the default, the cap and the context window."""
    if requested is None:
        max_tokens = min(
            settings.default_max_tokens, settings.max_tokens_cap, window - prompt_tokens
        )
        if max_tokens < 1:
            raise ContextLengthExceeded(
                f"the prompt has {prompt_tokens} tokens, which leaves no room in this "
                f"model's {window}-token context window",
                param="messages",
            )
        return max_tokens
    if requested > settings.max_tokens_cap:
        raise InvalidRequest(
            f"{param}={requested} is over this server's limit of {settings.max_tokens_cap}",
            param=param,
        )
    return requested


def logit_bias(body: SamplingFields, vocab: int, limit: int) -> tuple[tuple[int, float], ...]:
    """``logit_bias`` as (token id, bias) pairs; keys must be token ids of this model."""
    if not body.logit_bias:
        return ()
    if len(body.logit_bias) > limit:
        raise InvalidRequest(
            f"logit_bias has {len(body.logit_bias)} entries; this server takes at most {limit}",
            param="logit_bias",
        )
    out: list[tuple[int, float]] = []
    for key, value in body.logit_bias.items():
        if not key.isdigit() or not 0 <= int(key) < vocab:
            raise InvalidRequest(
                f"logit_bias keys must be token ids in [0, {vocab}); got {key!r}",
                param="logit_bias",
            )
        out.append((int(key), value))
    return tuple(sorted(out))


def check_n(n: int, settings: DecoderSettings) -> None:
    if n > settings.max_n:
        raise InvalidRequest(f"n={n} is over this server's limit of {settings.max_n}", param="n")


def sampling_params(
    body: SamplingFields,
    *,
    max_tokens: int,
    defaults: dict[str, float],
    vocab: int,
    settings: DecoderSettings,
    logprobs: int | None = None,
    grammar: Any = None,
) -> list[SamplingParams]:
    """One :class:`SamplingParams` per choice (``n``); choice i of a seeded request uses
    ``seed + i``, so the choices differ and each is reproducible."""
    n = body.choices()
    check_n(n, settings)

    def pick(value: float | None, key: str, fallback: float) -> float:
        return float(value) if value is not None else defaults.get(key, fallback)

    base = SamplingParams(
        max_tokens=max_tokens,
        temperature=pick(body.temperature, "temperature", 1.0),
        top_p=pick(body.top_p, "top_p", 1.0),
        top_k=int(pick(body.top_k, "top_k", 0)),
        seed=body.seed,
        stop=body.stops(),
        repetition_penalty=pick(body.repetition_penalty, "repetition_penalty", 1.0),
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=logit_bias(body, vocab, settings.max_logit_bias),
        logprobs=logprobs,
        grammar=grammar,
        ignore_eos=body.ignore_eos,
    )
    if n == 1:
        return [base]
    return [
        dataclasses.replace(base, seed=None if body.seed is None else body.seed + i)
        for i in range(n)
    ]
