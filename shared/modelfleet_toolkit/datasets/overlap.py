"""Leak check between a training and a held-out split: exact and near-duplicate texts.

Two texts count as the same example when, after normalisation (NFKC, case-folded, punctuation
dropped), they are equal, or their word multisets or their character-trigram sets overlap by at
least a threshold (Jaccard). Words are whitespace/punctuation-separated runs, except that CJK
text has no spaces, so each CJK character is a token of its own; trigrams cover both scripts and
catch typos and re-punctuated copies that the word view misses. Multisets rather than sets so
that "Hello hello" is not a copy of "Hello".

For your own data: ``python -m modelfleet_toolkit.datasets.overlap train.csv test.csv`` lists
the leaks and exits 1 if there are any (``--text-column`` when the column is not ``text``).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# CJK ideographs, kana and hangul: scripts written without spaces between words.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
_NON_WORD = re.compile(r"[\W_]+")

TOKEN_THRESHOLD = 0.8
CHAR_THRESHOLD = 0.7


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation and runs of whitespace reduced to one space."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def tokens(text: str) -> Counter[str]:
    """The multiset of words of ``text`` (each CJK character is a word)."""
    return Counter(_TOKEN.findall(normalise(text)))


def trigrams(text: str) -> frozenset[str]:
    """Character trigrams of the normalised text (the text itself when shorter)."""
    n = normalise(text)
    if len(n) < 3:
        return frozenset([n])
    return frozenset(n[i : i + 3] for i in range(len(n) - 2))


def multiset_jaccard(a: Counter[str], b: Counter[str]) -> float:
    union = sum((a | b).values())
    return sum((a & b).values()) / union if union else 1.0


def set_jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 1.0


@dataclass(frozen=True)
class Leak:
    """A held-out text that (nearly) repeats a training text."""

    heldout: str
    train: str
    reason: str  # "exact", "tokens" or "trigrams"
    score: float


def find_leaks(
    train: Iterable[str],
    heldout: Sequence[str],
    *,
    token_threshold: float = TOKEN_THRESHOLD,
    char_threshold: float = CHAR_THRESHOLD,
) -> list[Leak]:
    """Every (held-out, training) pair that is the same example by the rules above."""
    train_feats = [(t, normalise(t), tokens(t), trigrams(t)) for t in train]
    exact = {n: t for t, n, _, _ in train_feats}
    leaks: list[Leak] = []
    for h in heldout:
        hn, ht, hg = normalise(h), tokens(h), trigrams(h)
        if hn in exact:
            leaks.append(Leak(h, exact[hn], "exact", 1.0))
            continue
        for t, _, tt, tg in train_feats:
            tok = multiset_jaccard(ht, tt)
            if tok >= token_threshold:
                leaks.append(Leak(h, t, "tokens", round(tok, 3)))
                continue
            chars = set_jaccard(hg, tg)
            if chars >= char_threshold:
                leaks.append(Leak(h, t, "trigrams", round(chars, 3)))
    return leaks


def _column(path: Path, column: str) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise SystemExit(f"{path}: no column {column!r} (columns: {reader.fieldnames})")
        return [row[column] for row in reader]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m modelfleet_toolkit.datasets.overlap",
        description="List held-out texts that repeat or nearly repeat a training text.",
    )
    ap.add_argument("train", type=Path, help="training CSV")
    ap.add_argument("heldout", type=Path, help="held-out CSV")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--token-threshold", type=float, default=TOKEN_THRESHOLD)
    ap.add_argument("--char-threshold", type=float, default=CHAR_THRESHOLD)
    args = ap.parse_args(argv)
    leaks = find_leaks(
        _column(args.train, args.text_column),
        _column(args.heldout, args.text_column),
        token_threshold=args.token_threshold,
        char_threshold=args.char_threshold,
    )
    for leak in leaks:
        print(f"{leak.reason}\t{leak.score:.3f}\t{leak.heldout!r}\t~ {leak.train!r}")
    print(f"{len(leaks)} leak(s)", file=sys.stderr)
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
