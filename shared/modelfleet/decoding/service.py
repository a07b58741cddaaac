"""``DecoderService``: the ModelService base of the llm and generation services.

It loads the causal LM, runs the engine for the service's lifetime, and turns requests into
engine sequences: prompt encoding (chat template or plain text), ``max_tokens`` defaults and
limits, sampling parameters. Subclasses only add their routes.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from modelfleet.decoding.engine import Engine
from modelfleet.decoding.grammar import Grammars
from modelfleet.decoding.handles import Generation
from modelfleet.decoding.loader import LoadedModel, load_causal_lm
from modelfleet.decoding.metrics import DecoderMetrics
from modelfleet.decoding.openai import SamplingFields
from modelfleet.decoding.params import generation_defaults, resolve_max_tokens, sampling_params
from modelfleet.decoding.sampling import SamplingParams
from modelfleet.decoding.settings import DecoderSettings
from modelfleet.decoding.tools import template_knows_tools, transcript
from modelfleet.errors import InvalidRequest, PayloadTooLarge
from modelfleet.resolve import PACKAGED_LLM, ModelSource, packaged_llm_gguf, resolve
from modelfleet.service import ModelService
from modelfleet.tokenize import TokenizerRef

log = logging.getLogger("modelfleet.decoding.service")

# Tokenising this much text takes a few milliseconds: do it off the event loop.
_INLINE_TOKENIZE_CHARS = 8_000


def resolve_decoder_model(settings: DecoderSettings) -> ModelSource:
    """The MODEL setting: empty = packaged SmolLM2 GGUF; a .gguf file; a directory; a hub id."""
    spec = settings.model.strip()
    path = Path(spec).expanduser()
    if spec and path.suffix == ".gguf" and path.is_file():
        return ModelSource(str(path.resolve()), path.stem, local=True, revision=None)
    return resolve(
        spec,
        packaged=packaged_llm_gguf,
        packaged_name=PACKAGED_LLM,
        revision=settings.model_revision,
    )


class DecoderService(ModelService):
    """A causal LM behind the continuous-batching engine."""

    settings: DecoderSettings

    def __init__(self, settings: DecoderSettings) -> None:
        super().__init__(settings)
        self.source = resolve_decoder_model(settings)
        self.model_id = self.source.name
        self.decoder_metrics = DecoderMetrics(self.metrics)
        self._lm: LoadedModel | None = None
        self._engine: Engine | None = None
        self._grammars: Grammars | None = None
        self.generation_defaults: dict[str, float] = {}
        self.vocab_size = 0

    @property
    def engine(self) -> Engine:
        self.ensure_ready()
        assert self._engine is not None
        return self._engine

    @property
    def lm(self) -> LoadedModel:
        self.ensure_ready()
        assert self._lm is not None
        return self._lm

    # -- life cycle -----------------------------------------------------------------------
    def load(self) -> None:
        s = self.settings
        lm = load_causal_lm(
            self.source,
            cache_dir=s.cache_dir,
            device=s.device,
            dtype=s.dtype,
            quantize=s.quantize,
            context_window=s.context_window,
            trust_remote_code=s.trust_remote_code,
        )
        engine = Engine(
            lm,
            max_batch_size=s.max_batch_size,
            max_queue=s.max_queue,
            max_step_tokens=s.max_step_tokens,
            prefill_chunk=s.prefill_chunk,
            batch_invariant=s.batch_invariant,
            queue_timeout_s=s.request_timeout_s,
            kv_cache_blocks=s.kv_cache_blocks,
            kv_block_size=s.kv_block_size,
            kv_cache_memory_fraction=s.kv_cache_memory_fraction,
        )
        engine.start()
        self.vocab_size = int(lm.model.get_output_embeddings().weight.shape[0])
        # Tokenizer info for xgrammar takes a couple of seconds: once, at start-up.
        self._grammars = Grammars(
            lm.tokenizer, self.vocab_size, sorted(lm.eos_token_ids), s.grammar_cache_size
        )
        self.generation_defaults = generation_defaults(lm.model)
        self._lm, self._engine = lm, engine
        self.model_revision = lm.revision
        log.info(
            "decoder loaded",
            extra={
                "model": self.model_id,
                "device": lm.device,
                "dtype": str(lm.dtype),
                "context_window": lm.context_window,
                "generation_defaults": self.generation_defaults,
            },
        )

    def tokenizers(self) -> dict[str, TokenizerRef]:
        return {self.model_id: TokenizerRef(self.lm.tokenizer, self.engine.context_window)}

    def warmup(self) -> None:
        asyncio.run(self._warm())
        # Metrics start after warm-up so dashboards see only real traffic.
        assert self._engine is not None
        self._engine.observer = self.decoder_metrics

    async def _warm(self) -> None:
        assert self._engine is not None and self._lm is not None
        tok = self._lm.tokenizer
        prompts = [tok.encode("Hello"), tok.encode("Warm up the decoder: " + "tokens " * 40)]
        params = SamplingParams(max_tokens=3, temperature=0.0)
        await asyncio.gather(*(self._engine.submit(p, params).collect() for p in prompts))

    async def on_stop(self) -> None:
        if self._engine is not None:
            await asyncio.to_thread(self._engine.stop)

    # -- request helpers ------------------------------------------------------------------
    def _check_chars(self, n: int, param: str) -> None:
        if n > self.settings.max_input_chars:
            raise PayloadTooLarge(
                f"{param} has {n} characters, over this server's {self.settings.max_input_chars}",
                param=param,
            )

    async def encode_text(self, text: str, param: str = "prompt") -> list[int]:
        """Token ids of ``text`` as a raw prompt (with the tokenizer's own special tokens)."""
        self._check_chars(len(text), param)
        _check_unicode([text], param)
        return await self._tokenize(lambda: list(self.lm.tokenizer.encode(text)), len(text))

    async def encode_chat(
        self,
        messages: list[dict[str, Any]],
        *,
        check_chars: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        """Token ids of a conversation through the model's chat template, ready for a reply.

        ``tools`` go through the template when it knows tools, else into a system message
        (:mod:`modelfleet.decoding.tools`).
        """
        size = sum(len(m["content"] or "") for m in messages)
        if check_chars:
            self._check_chars(size, "messages")
        tok = self.lm.tokenizer
        native = template_knows_tools(tok)
        convo = transcript(messages, tools, native)

        def run() -> list[int]:
            if getattr(tok, "chat_template", None):
                ids: Any = tok.apply_chat_template(
                    convo,
                    tools=tools if native else None,
                    add_generation_prompt=True,
                    tokenize=True,
                    return_dict=False,
                )
                return list(ids)
            # No template (a base model): a plain transcript the model can continue.
            text = "".join(f"{m['role']}: {m['content']}\n" for m in convo) + "assistant:"
            return list(tok.encode(text))

        _check_unicode([m["content"] or "" for m in messages], "messages")
        return await self._tokenize(run, size)

    async def _tokenize(self, fn: Any, size: int) -> list[int]:
        if size <= _INLINE_TOKENIZE_CHARS:
            result: list[int] = fn()
            return result
        return await asyncio.to_thread(fn)

    def sampling(
        self,
        body: SamplingFields,
        prompt_tokens: int,
        requested_max: int | None,
        *,
        param: str = "max_tokens",
        logprobs: int | None = None,
        grammar: Any = None,
    ) -> list[SamplingParams]:
        """One :class:`SamplingParams` per choice, every limit checked (see ``params``)."""
        window = self.engine.context_window
        max_tokens = resolve_max_tokens(self.settings, window, prompt_tokens, requested_max, param)
        self.engine.check_lengths(prompt_tokens, max_tokens)
        return sampling_params(
            body,
            max_tokens=max_tokens,
            defaults=self.generation_defaults,
            vocab=self.vocab_size,
            settings=self.settings,
            logprobs=logprobs,
            grammar=grammar,
        )

    @property
    def grammars(self) -> Grammars:
        self.ensure_ready()
        assert self._grammars is not None
        return self._grammars

    def generate(self, prompt: list[int], params: SamplingParams, route: str) -> Generation:
        """Queue one sequence (raises 429 when the queue is full)."""
        return self.engine.submit(prompt, params, route)

    def generate_n(
        self, prompt: list[int], params: list[SamplingParams], route: str
    ) -> list[Generation]:
        """Queue the choices of one prompt; they share its prefill."""
        return self.engine.submit_n(prompt, params, route)

    def system_fingerprint(self) -> str:
        return f"modelfleet-{self.model_revision.removeprefix('sha256:')[:12]}"


def _check_unicode(texts: list[str], param: str) -> None:
    """400 for text a UTF-8 tokenizer cannot take: JSON may carry a lone surrogate (\\ud800)."""
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(
                "text is not valid Unicode (it holds a lone surrogate such as \\ud800)",
                param=param,
            ) from None
