"""A sentence-transformers encoder shared by the embedding and classification services."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modelfleet.devices import pick_device, torch_dtype
from modelfleet.packed import PackedBertEncoder, packed_encoder
from modelfleet.resolve import ModelSource, weights_fingerprint

log = logging.getLogger("modelfleet.encoder")

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Encoded:
    """L2-normalised embeddings with the token count of each input before truncation."""

    embeddings: FloatArray
    tokens: list[int]
    truncated: list[bool]
    model: str = ""  # the model that encoded them, when a service may swap models


class EncoderTokenizer:
    """An encoder's tokenisation without its weights: what an HTTP front-end process runs
    before it hands token ids to the model worker (:mod:`modelfleet.modelworker`). Picklable:
    the worker sends it to each front-end when they connect."""

    def __init__(self, tokenizer: Any, max_tokens: int, lock: threading.Lock | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.vocab_size = len(tokenizer)
        self.special = frozenset(int(i) for i in tokenizer.all_special_ids)
        self.lock = lock or threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer, "max_tokens": self.max_tokens}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["tokenizer"], state["max_tokens"])  # type: ignore[misc]

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids truncated to the model's limit, and each text's full token count.

        One tokenizer pass; only texts over the limit are tokenised again with truncation, so the
        ids match what the model's own tokenisation would give. Serialised: a fast tokenizer
        keeps its truncation settings in shared state, and forward passes run in several threads.
        """
        tok = self.tokenizer
        with self.lock:
            ids: list[list[int]] = tok(texts, add_special_tokens=True, truncation=False,
                                       verbose=False)["input_ids"]  # fmt: skip
            counts = [len(x) for x in ids]
            long = [i for i, c in enumerate(counts) if c > self.max_tokens]
            if long:
                cut = tok([texts[i] for i in long], add_special_tokens=True, truncation=True,
                          max_length=self.max_tokens)["input_ids"]  # fmt: skip
                for i, x in zip(long, cut, strict=True):
                    ids[i] = x
        return ids, counts

    def truncate_ids(self, given: list[list[int]]) -> list[list[int]]:
        """Token-id inputs cut to the model's limit as the tokenizer cuts text: a closing
        special token (``[SEP]``, ``</s>``) stays last."""
        out = []
        for ids in given:
            if len(ids) > self.max_tokens:
                keep = ids[-1] in self.special
                ids = [*ids[: self.max_tokens - 1], ids[-1]] if keep else ids[: self.max_tokens]
            out.append(ids)
        return out

    def token_ids(self, texts: Sequence[str | list[int]]) -> tuple[list[list[int]], list[int]]:
        """Every item (a text or token ids) as truncated token ids, and its count before."""
        strs = [t for t in texts if isinstance(t, str)]
        given = [t for t in texts if not isinstance(t, str)]
        ids, tokens = self.tokenize(strs) if strs else ([], [])
        it, cut = iter(zip(ids, tokens, strict=True)), iter(self.truncate_ids(given))
        pairs = [next(it) if isinstance(t, str) else (next(cut), len(t)) for t in texts]
        return [p[0] for p in pairs], [p[1] for p in pairs]


class SentenceEncoder:
    """Loads a sentence-transformers model and encodes batches of texts (thread-confined)."""

    def __init__(
        self,
        source: ModelSource,
        device: str = "auto",
        dtype: str = "auto",
        packed: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        self.source = source
        self.device = pick_device(device)
        self.dtype = dtype
        self.use_packed = packed
        self.trust_remote_code = trust_remote_code
        self.model: Any = None
        self.packed: PackedBertEncoder | None = None
        self._tok: EncoderTokenizer | None = None
        self._tokenizer_lock = threading.Lock()
        self.max_tokens = 0
        self.vocab_size = 0
        self.dimensions = 0
        self.revision = source.revision or "unknown"

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer

        kwargs: dict[str, Any] = {"device": self.device}
        if self.trust_remote_code:
            kwargs["trust_remote_code"] = True
        if self.source.local:
            kwargs["local_files_only"] = True
        if self.source.revision:
            kwargs["revision"] = self.source.revision
        dt = torch_dtype(self.dtype, self.device)
        kwargs["model_kwargs"] = {"torch_dtype": dt}
        self.model = SentenceTransformer(self.source.location, **kwargs)
        self.model.eval()
        self.max_tokens = int(self.model.max_seq_length)
        self.dimensions = int(self.model.get_embedding_dimension())
        self.vocab_size = len(self.model.tokenizer)
        self._tok = EncoderTokenizer(self.model.tokenizer, self.max_tokens, self._tokenizer_lock)
        if self.use_packed:
            self.packed = packed_encoder(self.model)
        if self.source.local and not self.source.revision:
            self.revision = "sha256:" + weights_fingerprint(self.source.path)
        log.info(
            "encoder loaded",
            extra={
                "model": self.source.name,
                "device": self.device,
                "dims": self.dimensions,
                "packed": self.packed is not None,
            },
        )

    def tokenizer(self) -> EncoderTokenizer:
        """What a front-end process needs to tokenise exactly as :meth:`encode` does."""
        assert self._tok is not None, "load() first"
        return self._tok

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        return self.tokenizer().tokenize(texts)

    def encode(self, texts: Sequence[str | list[int]]) -> Encoded:
        """One forward pass over ``texts`` (the caller sizes the batch); thread-safe.

        An item that is a list of ints is token ids, fed as they are (special tokens included
        when the caller included them, as ``/tokenize`` does by default).
        """
        strs = [t for t in texts if isinstance(t, str)]
        given = [t for t in texts if not isinstance(t, str)]
        if self.packed is not None or given:
            all_ids, tokens = self.tokenizer().token_ids(texts)
            if self.packed is not None:
                emb = self.packed.encode(all_ids)
            else:
                emb = self._encode_ids(all_ids)
        else:
            emb, tokens = self._encode_padded(strs)
        return Encoded(
            emb,
            [min(t, self.max_tokens) for t in tokens],
            [t > self.max_tokens for t in tokens],
        )

    def truncate_ids(self, given: list[list[int]]) -> list[list[int]]:
        return self.tokenizer().truncate_ids(given)

    def _encode_ids(self, ids: list[list[int]]) -> FloatArray:
        """The model's own modules on a padded batch of token ids."""
        import torch
        import torch.nn.functional as F

        longest = max(len(x) for x in ids)
        pad = self.model.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([x + [pad] * (longest - len(x)) for x in ids])
        mask = torch.tensor([[1] * len(x) + [0] * (longest - len(x)) for x in ids])
        features = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}
        if "token_type_ids" in self.model.tokenizer.model_input_names:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        with torch.inference_mode():
            out = self.model(features)["sentence_embedding"]
            return F.normalize(out.float(), p=2, dim=1).cpu().numpy()

    def _encode_padded(self, texts: list[str]) -> tuple[FloatArray, list[int]]:
        """The model's own pipeline on one padded batch."""
        import torch
        import torch.nn.functional as F

        with self._tokenizer_lock:
            full = self.model.tokenizer(texts, add_special_tokens=True, truncation=False,
                                        verbose=False)["input_ids"]  # fmt: skip
            counts = [len(x) for x in full]
            features = self.model.tokenize(texts)
        features = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in features.items()}
        with torch.inference_mode():
            out = self.model(features)["sentence_embedding"]
            emb = F.normalize(out.float(), p=2, dim=1).cpu().numpy()
        return emb, counts
