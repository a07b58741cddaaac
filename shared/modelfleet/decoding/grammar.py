"""Constrained decoding with xgrammar: JSON objects, JSON schemas and tool calls.

A :class:`Grammars` is built once per loaded model from its tokenizer. Each request that needs
structure compiles its grammar here (off the event loop: a schema takes milliseconds to a
second), and the compiled grammar is cached by its canonical JSON so a schema sent again costs
a dictionary lookup. The engine then creates one ``GrammarMatcher`` per sequence, masks each
step's logits with the matcher's token bitmask and advances the matcher per accepted token
(:mod:`modelfleet.decoding.sampling`). The output therefore always parses, unless it is cut
short by ``max_tokens`` (``finish_reason: "length"``).
"""

from __future__ import annotations

import asyncio
import collections
import re
import threading
from typing import Any

import orjson

from modelfleet.errors import InvalidRequest

# Tool calls are written the way Hermes, Qwen2.5 and Qwen3 templates write them:
# <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>
TOOL_CALL_FORMAT = "qwen_3"
_SOURCE_PREFIX = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*")


class Grammars:
    """Compiles and caches grammars for one tokenizer."""

    def __init__(
        self, tokenizer: Any, vocab_size: int, stop_ids: list[int], cache_size: int = 256
    ) -> None:
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_ids
        )
        self.info = info
        self._compiler = xgr.GrammarCompiler(info, max_threads=1)
        self._cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._size = cache_size
        self._lock = threading.Lock()

    def token_bytes(self, token: int) -> bytes:
        """The bytes a token stands for (what OpenAI reports in ``logprobs[].bytes``)."""
        vocab: list[bytes] = self.info.decoded_vocab
        return vocab[token] if 0 <= token < len(vocab) else b""

    async def json_schema(self, schema: dict[str, Any] | None, param: str) -> Any:
        """A grammar for one JSON value matching ``schema`` (None: any JSON object)."""
        spec = {"type": "object"} if schema is None else schema
        return await self._get(("schema", spec), param)

    async def tool_calls(
        self, tools: list[dict[str, Any]], choice: Any, parallel: bool, param: str
    ) -> Any:
        """A grammar for text and/or tool calls whose arguments match each function's schema."""
        spec = {"tools": tools, "choice": choice, "parallel": parallel}
        return await self._get(("tools", spec), param)

    async def _get(self, key: tuple[str, Any], param: str) -> Any:
        canonical = key[0] + orjson.dumps(key[1], option=orjson.OPT_SORT_KEYS).decode()
        with self._lock:
            hit = self._cache.get(canonical)
            if hit is not None:
                self._cache.move_to_end(canonical)
                return hit
        compiled = await asyncio.to_thread(self._compile, key, param)
        with self._lock:
            self._cache[canonical] = compiled
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return compiled

    def _compile(self, key: tuple[str, Any], param: str) -> Any:
        import xgrammar as xgr

        kind, spec = key
        try:
            if kind == "schema":
                # No free whitespace: a small model otherwise pads with newlines until
                # max_tokens instead of closing the object.
                return self._compiler.compile_json_schema(
                    orjson.dumps(spec).decode(), any_whitespace=False, strict_mode=True
                )
            tag = xgr.get_model_structural_tag(
                TOOL_CALL_FORMAT,
                tools=spec["tools"],
                tool_choice=spec["choice"],
                reasoning="disabled",
                max_whitespace_cnt=2,
                parallel_tool_calls=spec["parallel"],
            )
            return self._compiler.compile_structural_tag(tag)
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError on bad schemas
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            first = _SOURCE_PREFIX.sub("", text)  # "[06:40:17] /project/cpp/x.cc:4944: ..."
            raise InvalidRequest(f"{param}: cannot build a grammar: {first}", param=param) from exc
