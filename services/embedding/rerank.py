"""``POST /v1/rerank``: documents ranked by relevance to a query.

Scored by the embedding model (cosine similarity of the query's and each document's embedding,
with the configured query and document prefixes), or by a sentence-transformers
``CrossEncoder`` when ``RERANK_MODEL`` names one (its score, a sigmoid in 0..1 for the usual
one-logit rerankers). The answer has the shape Cohere and Jina share::

    {"object": "list", "model": ..., "results": [{"index", "relevance_score", "document"?}],
     "usage": {"prompt_tokens", "total_tokens"}}
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from modelfleet.devices import pick_device
from modelfleet.errors import InvalidRequest
from modelfleet.resolve import resolve_encoder, weights_fingerprint
from modelfleet.schemas import RerankRequest
from modelfleet.tokenize import TokenizerRef

log = logging.getLogger("modelfleet.embedding.rerank")

Pair = tuple[str, str]


class CrossEncoderScorer:
    """A CrossEncoder scoring (query, document) pairs; runs in a micro-batcher's threads."""

    def __init__(self, spec: str, device: str, trust_remote_code: bool) -> None:
        self.source = resolve_encoder(spec)
        self.device = pick_device(device)
        self.trust_remote_code = trust_remote_code
        self.model: Any = None
        self.revision = self.source.revision or "unknown"
        self.max_tokens = 512
        self.lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.source.name

    def load(self) -> None:
        from sentence_transformers import CrossEncoder

        kw: dict[str, Any] = {"device": self.device}
        if self.source.local:
            kw["local_files_only"] = True
        if self.trust_remote_code:
            kw["trust_remote_code"] = True
        self.model = CrossEncoder(self.source.location, **kw)
        self.max_tokens = int(self.model.max_length or self.model.tokenizer.model_max_length)
        if self.source.local and not self.source.revision:
            self.revision = "sha256:" + weights_fingerprint(self.source.path)
        log.info("cross-encoder loaded", extra={"model": self.model_id, "device": self.device})

    def score(self, pairs: list[Pair]) -> list[tuple[float, int]]:
        """(score, tokens of the pair, before truncation) for each pair."""
        tok = self.model.tokenizer
        with self.lock:
            ids = tok([q for q, _ in pairs], [d for _, d in pairs], truncation=False,
                      verbose=False)["input_ids"]  # fmt: skip
        scores = self.model.predict(pairs, batch_size=len(pairs), show_progress_bar=False)
        return [(float(s), min(len(x), self.max_tokens)) for s, x in zip(scores, ids, strict=True)]

    def tokenizer(self) -> TokenizerRef:
        return TokenizerRef(self.model.tokenizer, self.max_tokens, self.lock)


def check_limits(body: RerankRequest, max_documents: int) -> None:
    if len(body.documents) > max_documents:
        raise InvalidRequest(
            f"too many documents: {len(body.documents)} > {max_documents}", param="documents"
        )
    if body.top_n is not None and body.top_n > max_documents:
        raise InvalidRequest(f"top_n={body.top_n} is over this server's {max_documents}",
                             param="top_n")  # fmt: skip


def results(body: RerankRequest, scores: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
    """The ranked results, best first (ties keep the documents' order), cut to ``top_n``."""
    order = np.argsort(-scores, kind="stable")
    if body.top_n is not None:
        order = order[: body.top_n]
    texts = body.texts()
    out = []
    for i in order:
        item: dict[str, Any] = {"index": int(i), "relevance_score": float(scores[i])}
        if body.return_documents:
            item["document"] = {"text": texts[i]}
        out.append(item)
    return out
