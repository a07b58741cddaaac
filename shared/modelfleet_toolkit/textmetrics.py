"""Generation and summary metrics: ROUGE-1/2/L, BLEU and embedding similarity.

ROUGE comes from Google's ``rouge-score`` and BLEU from ``sacrebleu``, configured per language:

- ``en``: rouge-score's own tokenizer with the Porter stemmer, sacrebleu's ``13a`` tokenizer
  (its default, the WMT convention);
- ``zh``: Chinese has no spaces and rouge-score's tokenizer drops every non-ASCII character, so
  ROUGE runs on jieba's word segmentation, and BLEU on sacrebleu's ``zh`` tokenizer (one token
  per CJK character, 13a for the rest; the convention of WMT's Chinese tasks);
- any other code: Unicode words (``\\w+``, lower-cased, no stemmer) and sacrebleu's ``intl``.

``lang="auto"`` picks ``zh`` when the references contain CJK ideographs, else ``en``. ROUGE
figures are the mean F-measure over pairs (0..1, max over references where a pair has several),
BLEU is sacrebleu's corpus score (0..100).

Semantic similarity is the cosine between sentence embeddings of output and reference, from the
packaged MiniLM by default, any sentence-transformers model id or directory, or a running
embedding endpoint (``/v1/embeddings``), so a fleet measures with the model it serves.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

Embed = Callable[[list[str]], np.ndarray]
References = Sequence[str] | Sequence[Sequence[str]]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"\w+")
_SACREBLEU_TOKENIZER = {"en": "13a", "zh": "zh"}


def detect_lang(texts: Sequence[str]) -> str:
    """``zh`` when any text contains CJK ideographs, else ``en``."""
    return "zh" if any(_CJK.search(t) for t in texts) else "en"


class JiebaTokenizer:
    """rouge-score tokenizer for Chinese: jieba words, lower-cased, punctuation dropped."""

    def __init__(self) -> None:
        import jieba

        # jieba announces loading its dictionary on the root logger's level otherwise.
        jieba.setLogLevel(logging.WARNING)
        self._cut = jieba.lcut

    def tokenize(self, text: str) -> list[str]:
        return [w for w in (t.strip().lower() for t in self._cut(text)) if _WORD.search(w)]


class UnicodeTokenizer:
    """rouge-score tokenizer for languages other than English: lower-cased ``\\w+`` runs."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())


def rouge_scorer(lang: str) -> Any:
    """The ``rouge_score.rouge_scorer.RougeScorer`` this module uses for ``lang``."""
    from rouge_score import rouge_scorer as rs

    if lang == "en":
        return rs.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    tokenizer = JiebaTokenizer() if lang == "zh" else UnicodeTokenizer()
    return rs.RougeScorer(list(ROUGE_TYPES), tokenizer=tokenizer)


def sacrebleu_tokenizer(lang: str) -> str:
    """The sacrebleu ``tokenize=`` value this module uses for ``lang``."""
    return _SACREBLEU_TOKENIZER.get(lang, "intl")


def _as_lists(predictions: Sequence[str], references: References) -> list[list[str]]:
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references are sequences of texts, not one string")
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references; "
            "they pair up one to one"
        )
    if not predictions:
        raise ValueError("no predictions to score")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if any(not r for r in refs):
        raise ValueError("every prediction needs at least one reference")
    return refs


def generation_metrics(
    predictions: Sequence[str], references: References, lang: str = "auto"
) -> dict[str, Any]:
    """ROUGE-1/2/L (mean F-measure, 0..1) and corpus BLEU (0..100) of ``predictions``.

    ``references[i]`` is one reference text or a list of them for ``predictions[i]``.
    """
    import sacrebleu

    refs = _as_lists(predictions, references)
    if lang == "auto":
        lang = detect_lang([r for rs in refs for r in rs])
    scorer = rouge_scorer(lang)
    sums = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, rs in zip(predictions, refs, strict=True):
        scores = scorer.score_multi(rs, pred)
        for key in ROUGE_TYPES:
            sums[key] += scores[key].fmeasure
    # sacrebleu takes reference *streams*; a pair with fewer references pads with None.
    width = max(len(rs) for rs in refs)
    streams = [[rs[k] if k < len(rs) else None for rs in refs] for k in range(width)]
    # sacrebleu skips None references at run time; its annotation does not say so.
    bleu = sacrebleu.corpus_bleu(
        list(predictions),
        cast(Sequence[Sequence[str]], streams),
        tokenize=sacrebleu_tokenizer(lang),
    )
    n = len(predictions)
    return {
        "lang": lang,
        "n": n,
        **{key: sums[key] / n for key in ROUGE_TYPES},
        "bleu": float(bleu.score),
    }


# -- semantic similarity ---------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _sentence_transformer(model: str, device: str) -> Embed:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model, device=device)

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(
            st.encode(texts, batch_size=64, convert_to_numpy=True, show_progress_bar=False)
        )

    return embed


def embedder(
    model: str | Embed | None = None, *, device: str = "cpu", api_key: str | None = None
) -> Embed:
    """A texts -> embeddings callable for ``model``.

    ``None``: the packaged all-MiniLM-L6-v2; an ``http(s)://`` URL: a running embedding service
    or the gateway (``/v1/embeddings``); any other string: a sentence-transformers model id or
    directory; a callable is used as it is.
    """
    if callable(model):
        return model
    if model is None:
        from modelfleet.resolve import packaged_embedding_dir

        return _sentence_transformer(str(packaged_embedding_dir()), device)
    if model.startswith(("http://", "https://")):
        from modelfleet_toolkit.endpoint import embed_endpoint

        url = model

        def remote(texts: list[str]) -> np.ndarray:
            return np.asarray(embed_endpoint(url, texts, api_key=api_key), dtype=np.float32)

        return remote
    return _sentence_transformer(model, device)


def semantic_similarity(
    preds: Sequence[str],
    refs: Sequence[str],
    model: str | Embed | None = None,
    *,
    api_key: str | None = None,
) -> list[float]:
    """Cosine similarity of each prediction's embedding with its reference's (-1..1).

    ``model`` as for :func:`embedder`; ``api_key`` for an endpoint URL behind the gateway.
    """
    refs_lists = _as_lists(preds, refs)
    if any(len(r) != 1 for r in refs_lists):
        raise ValueError("semantic_similarity takes exactly one reference per prediction")
    embed = embedder(model, api_key=api_key)
    vecs = embed([*preds, *(r[0] for r in refs_lists)])
    a, b = vecs[: len(preds)], vecs[len(preds) :]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)
    return [float(x) for x in cos]
