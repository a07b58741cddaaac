"""The toolkit's shipped datasets: labels, sizes, and no leak from training into held-out.

Fast (no model): reads the CSVs the installed package ships and compares them with the
classification service's built-in tasks.
"""

from __future__ import annotations

import csv
import fnmatch
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from modelfleet_toolkit import datasets
from modelfleet_toolkit.datasets.overlap import find_leaks, normalise, tokens
from modelfleet_toolkit.datasets.overlap import main as overlap_main
from services.classification.embedding_classifier import load_tasks

REPO = Path(__file__).resolve().parents[2]
MIN_TRAIN_TOTAL = 600
MIN_TRAIN_PER_LABEL = 40
MIN_TEST_PER_LABEL = 10


@pytest.mark.parametrize("task", datasets.TASKS)
@pytest.mark.parametrize("split", datasets.SPLITS)
def test_columns_labels_and_sizes(task: str, split: str) -> None:
    with datasets.path(task, split).open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        assert next(reader) == ["text", "label"]
        assert all(len(row) == 2 for row in reader)
    texts, labels = datasets.read(task, split)
    assert all(t.strip() == t and t for t in texts), "empty or padded text"
    counts = Counter(labels)
    assert set(counts) == set(load_tasks()[task].labels), (task, split, sorted(counts))
    floor = MIN_TRAIN_PER_LABEL if split == "train" else MIN_TEST_PER_LABEL
    assert min(counts.values()) >= floor, (task, split, counts)
    assert len({normalise(t) for t in texts}) == len(texts), f"{task}/{split}: duplicate texts"


def test_enough_training_examples() -> None:
    total = sum(len(datasets.read(task, "train")[0]) for task in datasets.TASKS)
    assert total >= MIN_TRAIN_TOTAL


@pytest.mark.parametrize("task", datasets.TASKS)
def test_heldout_has_no_exact_or_near_copy_of_a_training_text(task: str) -> None:
    train, _ = datasets.read(task, "train")
    test, _ = datasets.read(task, "test")
    leaks = find_leaks(train, test)
    assert not leaks, "\n".join(f"{x.reason} {x.score}: {x.heldout!r} ~ {x.train!r}" for x in leaks)


@pytest.mark.parametrize("task", datasets.TASKS)
def test_shipped_examples_are_part_of_the_training_set(task: str) -> None:
    rows = set(zip(*datasets.read(task, "train"), strict=True))
    spec = load_tasks()[task]
    missing = [(t, lab) for lab, ex in spec.examples.items() for t in ex if (t, lab) not in rows]
    assert not missing, missing[:5]


def test_make_eval_measures_the_same_heldout_file() -> None:
    from services.classification.evaluate import DEFAULT_HELDOUT_DIR

    for task in datasets.TASKS:
        assert (DEFAULT_HELDOUT_DIR / task / "test.csv").resolve() == datasets.path(task, "test")
    # one copy: the old held-out files are gone
    assert not list((REPO / "tests" / "data" / "classification").glob("intent*"))
    assert not list((REPO / "tests" / "data" / "classification").glob("sentiment*"))


def test_csvs_are_declared_package_data() -> None:
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = conf["tool"]["setuptools"]["package-data"]["modelfleet_toolkit"]
    pkg = Path(datasets.__file__).resolve().parents[1]
    for task in datasets.TASKS:
        for split in datasets.SPLITS:
            rel = datasets.path(task, split).relative_to(pkg).as_posix()
            assert any(fnmatch.fnmatchcase(rel, p) for p in patterns), rel


def test_path_rejects_unknown_task_and_split() -> None:
    with pytest.raises(ValueError, match="unknown dataset task"):
        datasets.path("topic", "train")
    with pytest.raises(ValueError, match="unknown split"):
        datasets.path("intent", "validation")


# -- the leak check itself, on hand-checkable pairs ----------------------------------------------


@pytest.mark.parametrize(
    ("heldout", "train", "reason"),
    [
        ("Cancel my order!", "cancel my order", "exact"),
        # full-width letters and comma fold under NFKC
        (
            "\uff28\uff45\uff4c\uff4c\uff4f\uff0c\uff57\uff4f\uff52\uff4c\uff44",
            "hello world",
            "exact",
        ),
        (
            "The app crashes every time I open it",
            "The app crashes every time I open it now",
            "tokens",
        ),
        ("My laptop wont turn on", "My laptop won't turn on.", "trigrams"),
        ("The app keeps crashhing on startup", "The app keeps crashing on startup", "trigrams"),
        ("我想预订明天晚上的两人桌", "我想预订明天晚上的两人桌。", "exact"),
        ("我想预订明天晚上七点的桌子", "我想预订明天晚上的桌子", "tokens"),
    ],
)
def test_leaks_are_found(heldout: str, train: str, reason: str) -> None:
    leaks = find_leaks([train, "something else entirely"], [heldout])
    assert [(x.train, x.reason) for x in leaks] == [(train, reason)]


@pytest.mark.parametrize(
    ("heldout", "train"),
    [
        ("Hello hello", "Hello"),
        ("Please cancel my subscription.", "How do I cancel my subscription?"),
        ("我想预订明天晚上的两人桌", "帮我订一张去上海的火车票"),
    ],
)
def test_distinct_texts_are_not_leaks(heldout: str, train: str) -> None:
    assert find_leaks([train], [heldout]) == []


def test_cjk_is_tokenised_per_character() -> None:
    assert tokens("我要退款, OK") == Counter({"我": 1, "要": 1, "退": 1, "款": 1, "ok": 1})


def test_overlap_command_on_user_csvs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = tmp_path / "train.csv"
    test = tmp_path / "test.csv"
    train.write_text("sentence,label\nMy laptop won't turn on.,tech\nHi there,greeting\n")
    test.write_text("sentence,label\nmy laptop wont turn on,tech\nWhere is the shop?,question\n")
    assert overlap_main([str(train), str(test), "--text-column", "sentence"]) == 1
    out = capsys.readouterr().out
    assert "my laptop wont turn on" in out and "Where is the shop" not in out
    assert overlap_main([str(train), str(train), "--text-column", "sentence"]) == 1
    clean = tmp_path / "clean.csv"
    clean.write_text("sentence,label\nWhere is the shop?,question\n")
    assert overlap_main([str(train), str(clean), "--text-column", "sentence"]) == 0
    with pytest.raises(SystemExit, match="no column 'text'"):
        overlap_main([str(train), str(clean)])
