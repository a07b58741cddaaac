"""Labelled text data: loading (CSV, JSONL, a ``datasets`` directory), a content fingerprint,
cleaning, the design document's augmentations, and a stratified split.

Augmentation is applied by :func:`augment` to training rows only; nothing here is called on
evaluation data by the commands (``prepare_splits`` augments after splitting).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# NFKC folds full-width ASCII forms (U+FF01-FF5E) to ASCII; these CJK marks have no compatibility
# decomposition, so they are mapped by hand.
_CJK_PUNCT = str.maketrans({"。": ".", "、": ",", "「": '"', "」": '"', "『": '"', "』": '"'})
_SPACES = re.compile(r"\s+")


class DataError(ValueError):
    """Data that cannot be used: missing file or column, empty set, unknown label."""


@dataclass(frozen=True)
class Examples:
    """Texts with their labels (strings), plus where they came from."""

    texts: list[str]
    labels: list[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)


def _read_rows(path: Path) -> list[dict[str, object]]:
    if path.is_dir():
        import datasets  # a datasets directory is the one case that needs the library

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            split = "train" if "train" in loaded else next(iter(loaded))
            loaded = loaded[split]
        return [dict(row) for row in loaded]
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    if suffix in (".jsonl", ".json"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    raise DataError(f"{path}: unsupported data format {suffix!r} (use .csv, .jsonl or a dir)")


def load_examples(
    path: str | Path, text_column: str = "text", label_column: str = "label"
) -> Examples:
    """Rows of ``path`` as :class:`Examples`; every row needs a text and a label."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data not found: {p}")
    rows = _read_rows(p)
    if not rows:
        raise DataError(f"{p}: no rows")
    for col in (text_column, label_column):
        if col not in rows[0]:
            raise DataError(f"{p}: no column {col!r} (columns: {sorted(rows[0])})")
    texts, labels = [], []
    for i, row in enumerate(rows):
        text, label = row.get(text_column), row.get(label_column)
        if text is None or label is None or str(text).strip() == "" or str(label) == "":
            raise DataError(f"{p}: row {i + 1} has an empty {text_column!r} or {label_column!r}")
        texts.append(str(text))
        labels.append(str(label))
    return Examples(texts, labels, str(p))


def fingerprint(examples: Examples) -> str:
    """SHA-256 of the (text, label) rows in order: the same data in CSV or JSONL hashes alike."""
    h = hashlib.sha256()
    for text, label in zip(examples.texts, examples.labels, strict=True):
        h.update(json.dumps([text, label], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def clean_text(text: str) -> str:
    """Full-width forms folded to ASCII, whitespace collapsed; CJK characters kept as they are."""
    text = unicodedata.normalize("NFKC", text).translate(_CJK_PUNCT)
    return _SPACES.sub(" ", text).strip()


def _tokens(text: str) -> tuple[list[str], str]:
    # Chinese has no spaces between words: augment by characters there.
    if " " not in text and _CJK.search(text):
        return list(text), ""
    return text.split(" "), " "


def random_deletion(text: str, p: float, rng: random.Random) -> str:
    """Drop each word (CJK: character) with probability ``p``; at least one survives."""
    toks, sep = _tokens(text)
    if len(toks) <= 1:
        return text
    kept = [t for t in toks if rng.random() >= p]
    return sep.join(kept or [rng.choice(toks)])


def random_swap(text: str, n: int, rng: random.Random) -> str:
    """Swap two random words (CJK: characters) ``n`` times."""
    toks, sep = _tokens(text)
    if len(toks) < 2:
        return text
    for _ in range(n):
        i, j = rng.sample(range(len(toks)), 2)
        toks[i], toks[j] = toks[j], toks[i]
    return sep.join(toks)


def clean(examples: Examples) -> Examples:
    """Every text cleaned; rows whose text cleans to nothing are dropped."""
    pairs = [(clean_text(t), lab) for t, lab in zip(examples.texts, examples.labels, strict=True)]
    pairs = [(t, lab) for t, lab in pairs if t]
    return Examples([t for t, _ in pairs], [lab for _, lab in pairs], examples.source)


def augment(examples: Examples, copies: int, delete_p: float, swaps: int, seed: int) -> Examples:
    """The originals plus ``copies`` augmented variants of each (training data only)."""
    if copies <= 0 or (delete_p <= 0 and swaps <= 0):
        return examples
    rng = random.Random(seed)
    texts, labels = list(examples.texts), list(examples.labels)
    for text, label in zip(examples.texts, examples.labels, strict=True):
        for _ in range(copies):
            new = random_deletion(text, delete_p, rng) if delete_p > 0 else text
            new = random_swap(new, swaps, rng) if swaps > 0 else new
            texts.append(new)
            labels.append(label)
    return Examples(texts, labels, examples.source)


def stratified_split(examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """A stratified (train, eval) split with scikit-learn."""
    from sklearn.model_selection import train_test_split

    idx = list(range(len(examples)))
    n_labels = len(set(examples.labels))
    # At least one evaluation row per label: small data sets would otherwise fail to split.
    n_eval = max(math.ceil(fraction * len(idx)), n_labels)
    if len(idx) - n_eval < n_labels:
        raise DataError(f"{len(idx)} rows are too few to split off an evaluation set")
    train_idx, eval_idx = train_test_split(
        idx, test_size=n_eval, random_state=seed, stratify=examples.labels
    )
    return subset(examples, train_idx), subset(examples, eval_idx)


def subset(examples: Examples, idx: Sequence[int]) -> Examples:
    """The rows at ``idx``."""
    return Examples(
        [examples.texts[i] for i in idx], [examples.labels[i] for i in idx], examples.source
    )
