"""Packed (unpadded) forward pass for BERT-family sentence encoders.

A padded batch costs ``batch x longest`` tokens in every projection and feed-forward layer, which
is where nearly all of an encoder's time goes. A server cannot sort its traffic by length the way
an offline ``encode()`` over a corpus does, so a micro-batch of mixed lengths wastes a quarter to
a half of its compute on padding. Here every linear layer, layer norm and activation runs on the
batch's real tokens concatenated into one ``[tokens, hidden]`` matrix, as Text Embeddings
Inference does; only the attention scores, a small share of the work at sentence lengths, use a
padded view with a key mask.

Supported: a sentence-transformers pipeline of ``Transformer`` (a ``BertModel`` with absolute
positions) -> ``Pooling`` (mean or CLS) -> optional ``Normalize``; embeddings always come out
L2-normalised, as the fleet serves them. :func:`packed_encoder` returns
``None`` for anything else, and the caller keeps the model's own ``encode``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger("modelfleet.packed")


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_weight: Any
    qkv_bias: Any
    attn_out: Any
    attn_norm: Any
    intermediate: Any
    act: Any
    out: Any
    out_norm: Any


class PackedBertEncoder:
    """Encode token-id lists with no padding in the dense layers (thread-confined, inference)."""

    def __init__(self, bert: Any, pooling: str) -> None:
        import torch

        self.bert = bert
        self.pooling = pooling
        cfg = bert.config
        self.heads = int(cfg.num_attention_heads)
        self.hidden = int(cfg.hidden_size)
        self.head_dim = self.hidden // self.heads
        emb = bert.embeddings
        self.word = emb.word_embeddings
        self.position = emb.position_embeddings
        # Every input is a single segment: token type 0 everywhere.
        self.type0 = emb.token_type_embeddings.weight[0]
        self.emb_norm = emb.LayerNorm
        self.layers = []
        with torch.no_grad():
            for layer in bert.encoder.layer:
                sa = layer.attention.self
                self.layers.append(
                    _Layer(
                        # One [3h, h] projection instead of three [h, h] ones.
                        torch.cat([sa.query.weight, sa.key.weight, sa.value.weight]).contiguous(),
                        torch.cat([sa.query.bias, sa.key.bias, sa.value.bias]).contiguous(),
                        layer.attention.output.dense,
                        layer.attention.output.LayerNorm,
                        layer.intermediate.dense,
                        layer.intermediate.intermediate_act_fn,
                        layer.output.dense,
                        layer.output.LayerNorm,
                    )
                )
        self.device = self.type0.device
        self._local = threading.local()  # a CUDA stream per forward thread

    def encode(self, ids: list[list[int]]) -> npt.NDArray[np.float32]:
        """L2-normalised sentence embeddings of already-truncated token-id lists, one per list."""
        import torch

        flat = torch.tensor([t for x in ids for t in x], dtype=torch.long)
        lens = torch.tensor([len(x) for x in ids], dtype=torch.long)
        longest = max(len(x) for x in ids)
        if self.device.type != "cuda":
            return self._forward(flat, lens, longest).cpu().numpy()  # type: ignore[no-any-return]
        # On a GPU each forward thread has its own stream, its inputs go up from pinned memory
        # without blocking and its result comes down the same way: with FORWARD_WORKERS=2 one
        # batch's copies and Python-side launches overlap the other's kernels.
        stream = self._stream()
        with torch.cuda.stream(stream):
            out = self._forward(
                flat.pin_memory().to(self.device, non_blocking=True),
                lens.pin_memory().to(self.device, non_blocking=True),
                longest,
            )
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
        stream.synchronize()
        return host.numpy().copy()  # the pinned block goes back to the cache now

    def _stream(self) -> Any:
        import torch

        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
            stream.wait_stream(torch.cuda.current_stream(self.device))  # weights are in place
        return stream

    def _forward(self, flat: Any, lens: Any, longest: int) -> Any:
        """Embeddings ([n, hidden] float32, normalised) of the packed ids on the device."""
        import torch
        import torch.nn.functional as F

        dev = flat.device
        n, total = int(lens.shape[0]), int(flat.shape[0])
        starts = torch.cumsum(lens, 0) - lens
        seq = torch.repeat_interleave(torch.arange(n, device=dev), lens, output_size=total)
        pos = torch.arange(total, device=dev) - starts[seq]
        # Where each real token sits in the padded [n * longest] view used for attention.
        slot = seq * longest + pos
        key_mask = (torch.arange(longest, device=dev)[None, :] < lens[:, None])[:, None, None, :]
        h, d = self.heads, self.head_dim

        with torch.inference_mode():
            x = self.emb_norm(self.word(flat) + self.position(pos) + self.type0)
            for ly in self.layers:
                qkv = F.linear(x, ly.qkv_weight, ly.qkv_bias)
                padded = qkv.new_zeros(n * longest, 3 * self.hidden)
                padded[slot] = qkv
                q, k, v = padded.view(n, longest, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
                ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
                ctx = ctx.transpose(1, 2).reshape(n * longest, self.hidden)[slot]
                x = ly.attn_norm(ly.attn_out(ctx) + x)
                x = ly.out_norm(ly.out(ly.act(ly.intermediate(x))) + x)
            x = x.float()  # pool in fp32: a bf16 running sum over 256 tokens loses digits
            if self.pooling == "cls":
                pooled = x[starts]
            else:
                summed = x.new_zeros(n, self.hidden).index_add_(0, seq, x)
                pooled = summed / lens[:, None].to(x.dtype)
            return F.normalize(pooled, p=2, dim=1)


def packed_encoder(model: Any) -> PackedBertEncoder | None:
    """A packed encoder for ``model`` (a SentenceTransformer), or None where unsupported."""
    why = _unsupported(model)
    if why is not None:
        log.info("packed encoder not used: %s; padded batches instead", why)
        return None
    return PackedBertEncoder(model[0].auto_model, _pooling_mode(model[1]) or "mean")


def _pooling_mode(pooling: Any) -> str | None:
    cfg = pooling.get_config_dict()
    if not cfg.get("include_prompt", True):
        return None
    mode = cfg.get("pooling_mode")
    if mode is None:  # older sentence-transformers: one boolean per mode
        on = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
        mode = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}.get(
            on[0] if len(on) == 1 else ""
        )
    return mode if mode in ("mean", "cls") else None


def _unsupported(model: Any) -> str | None:
    """Why ``model`` can't run packed, or None if it can."""
    modules = list(model)
    names = [type(m).__name__ for m in modules]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return f"pipeline {names}"
    transformer = modules[0]
    bert = getattr(transformer, "auto_model", None)
    cfg = getattr(bert, "config", None)
    if type(bert).__name__ != "BertModel" or cfg is None:
        return f"architecture {type(bert).__name__}"
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute" or cfg.is_decoder:
        return "relative position embeddings or a decoder config"
    if getattr(transformer, "do_lower_case", False):
        return "do_lower_case preprocessing"
    if _pooling_mode(modules[1]) is None:
        return f"pooling {modules[1].get_config_dict()}"
    return None
