"""Text classification on top of a sentence-embedding model (numpy only at run time).

Two modes behind one call, :meth:`EmbeddingClassifier.classify`:

- **Built-in tasks** (``task="sentiment"`` / ``task="intent"``, one JSON file per task in
  ``tasks/``): a multinomial logistic-regression head (softmax regression, L2-regularised) is
  trained on the embeddings of the task's shipped labelled examples when the service starts
  (:meth:`EmbeddingClassifier.prepare`, well under a second of numpy after encoding the examples).
  Its softmax temperature is calibrated on out-of-fold predictions of a stratified k-fold split of
  those same examples, so scores behave like probabilities on unseen text. Training at start-up
  (rather than shipping weights) keeps the head valid for whatever encoder ``MODEL`` selects.
- **Custom labels** (``labels=[...]`` or ``labels={name: description}``), zero-shot: every label
  is embedded through a small ensemble of templates (the mean of the normalised template
  embeddings), a text scores by cosine similarity to each label and a softmax with a calibrated
  temperature turns the similarities into a distribution. The templates were chosen on the
  built-in tasks' training examples used as a development set (never on the evaluation sets); the
  zero-shot temperature is fitted on the same examples at :meth:`prepare`. Label embeddings are
  kept in an LRU cache so a repeated label set is not re-encoded.

Scores: for every input, the labels sorted by score (descending, ties in label order), the scores
a softmax distribution over *all* the labels of the task or label set, which sums to 1. ``top_k``
truncates that sorted list *after* normalising and does not renormalise, so a truncated list sums
to at most 1 (its scores stay the full-distribution probabilities, comparable across calls).

Invalid arguments raise :class:`ValueError` with a message meant for the API caller.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from services.classification.training import (
    TaskHead,
    fit_temperature,
    normalise,
    softmax,
    train_head,
)

FloatArray = npt.NDArray[np.floating]
Encode = Callable[[list[str]], np.ndarray]
Ranked = list[tuple[str, float]]

DEFAULT_TASKS_DIR = Path(__file__).resolve().parent / "tasks"

# Zero-shot templates, chosen by accuracy on the built-in tasks' training examples treated as
# custom-label tasks (label names: mean 0.59 over sentiment+intent vs 0.57 for the bare name;
# name -> description: 0.69 vs 0.67 for the bare description). ``{name}`` is the label name with
# ``_``/``-`` turned into spaces, ``{description}`` the caller's description.
NAME_TEMPLATES: tuple[str, ...] = (
    "{name}",
    "This text is about {name}.",
    "This is an example of {name}.",
    "A message about {name}.",
    "The topic is {name}.",
)
DESCRIPTION_TEMPLATES: tuple[str, ...] = (
    "{description}",
    "This text is about {name}: {description}.",
    "This is an example of {name}.",
)

#: zero-shot softmax temperature used before :meth:`prepare` calibrates it, or when no built-in
#: task ships examples to calibrate on (the value calibrated for all-MiniLM-L6-v2, rounded).
DEFAULT_ZERO_SHOT_TEMPERATURE = 0.05
MAX_LABELS = 1024  # the service enforces its own (configurable, lower) limit first
MAX_LABEL_CHARS = 1000


# --------------------------------------------------------------------------------------------
# task files


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One built-in task: its labels (name -> one-line description) and labelled examples."""

    name: str
    description: str
    labels: dict[str, str]
    examples: dict[str, list[str]]

    @classmethod
    def from_file(cls, path: Path) -> TaskSpec:
        data = json.loads(path.read_text(encoding="utf-8"))
        name = str(data.get("task") or path.stem)
        labels = data.get("labels")
        examples = data.get("examples")
        if not isinstance(labels, dict) or len(labels) < 2:
            raise ValueError(f"{path}: `labels` must map at least two label names to descriptions")
        if not isinstance(examples, dict) or set(examples) != set(labels):
            raise ValueError(f"{path}: `examples` must have exactly one list per label")
        for label, texts in examples.items():
            if not isinstance(texts, list) or len(texts) < 2:
                raise ValueError(f"{path}: label {label!r} needs at least two examples")
            if not all(isinstance(t, str) and t.strip() for t in texts):
                raise ValueError(f"{path}: label {label!r} has an empty or non-string example")
        return cls(
            name=name,
            description=str(data.get("description", "")),
            labels={str(k): str(v) for k, v in labels.items()},
            examples={str(k): [str(t) for t in v] for k, v in examples.items()},
        )


def load_tasks(tasks_dir: str | Path = DEFAULT_TASKS_DIR) -> dict[str, TaskSpec]:
    """Every ``<task>.json`` in ``tasks_dir``, by task name (sorted by file name)."""
    tasks: dict[str, TaskSpec] = {}
    for path in sorted(Path(tasks_dir).glob("*.json")):
        spec = TaskSpec.from_file(path)
        if spec.name in tasks:
            raise ValueError(f"{path}: task {spec.name!r} is defined twice")
        tasks[spec.name] = spec
    return tasks


def _template_name(label: str) -> str:
    return " ".join(label.replace("_", " ").replace("-", " ").split())


def label_texts(name: str, description: str | None = None) -> list[str]:
    """The texts embedded (and averaged) for one zero-shot label."""
    if description and description.strip():
        desc = description.strip().rstrip(".")
        return [
            t.format(name=_template_name(name), description=desc) for t in DESCRIPTION_TEMPLATES
        ]
    return [t.format(name=_template_name(name)) for t in NAME_TEMPLATES]


class EmbeddingClassifier:
    """Built-in tasks from shipped examples and zero-shot custom labels over one encoder.

    ``encode`` turns a list of texts into L2-normalised embeddings of shape ``(n, d)``; it is only
    called for the task examples (at :meth:`prepare`) and for custom label texts (cached). The
    texts to classify are embedded by the caller, who passes the embeddings to :meth:`classify`.

    Thread-safe: :meth:`classify` may run concurrently from several threads.
    """

    def __init__(
        self,
        encode: Encode,
        tasks_dir: str | Path | None = None,
        *,
        l2: float = 3e-3,
        cv_folds: int = 5,
        seed: int = 0,
        label_cache_size: int = 4096,
        max_labels: int = MAX_LABELS,
    ) -> None:
        self._encode = encode
        self.tasks_dir = Path(tasks_dir) if tasks_dir is not None else DEFAULT_TASKS_DIR
        self.l2 = l2
        self.cv_folds = cv_folds
        self.seed = seed
        self.max_labels = max_labels
        self.specs: dict[str, TaskSpec] = load_tasks(self.tasks_dir)
        self.heads: dict[str, TaskHead] = {}
        self.zero_shot_temperature = DEFAULT_ZERO_SHOT_TEMPERATURE
        self.dimensions: int | None = None
        self._cache: OrderedDict[tuple[str, str], npt.NDArray[np.float64]] = OrderedDict()
        self._cache_size = label_cache_size
        self._cache_lock = threading.Lock()
        self._prepare_lock = threading.Lock()
        self._prepared = False
        self.cache_hits = 0
        self.cache_misses = 0

    # -- set-up ----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Embed the shipped examples, train each task's head and calibrate the temperatures.

        Idempotent; :meth:`classify` calls it on first use if the service did not.
        """
        if self._prepared:
            return
        with self._prepare_lock:
            if self._prepared:
                return
            texts: list[str] = []
            spans: dict[str, tuple[int, int]] = {}
            for name, spec in self.specs.items():
                start = len(texts)
                for label in spec.labels:
                    texts.extend(spec.examples[label])
                spans[name] = (start, len(texts))
            embeddings = self._encode_texts(texts) if texts else None
            zs_logits: list[npt.NDArray[np.float64]] = []
            zs_targets: list[npt.NDArray[np.int_]] = []
            for name, spec in self.specs.items():
                assert embeddings is not None
                lo, hi = spans[name]
                x = embeddings[lo:hi]
                y = np.concatenate(
                    [np.full(len(spec.examples[lab]), i) for i, lab in enumerate(spec.labels)]
                )
                labels = list(spec.labels)
                self.heads[name] = train_head(
                    x, y, labels, l2=self.l2, folds=self.cv_folds, seed=self.seed
                )
                # zero-shot calibration data: the same examples against the task's labels given
                # as names alone and as name -> description
                for label_arg in (labels, dict(spec.labels)):
                    _, matrix = self._label_matrix(label_arg)
                    zs_logits.append(x @ matrix.T)
                    zs_targets.append(y)
            if zs_logits:
                self.zero_shot_temperature = fit_temperature(zs_logits, zs_targets)
            self._prepared = True

    def tasks(self) -> dict[str, dict[str, str]]:
        """Built-in task -> {label: one-line description}."""
        return {name: dict(spec.labels) for name, spec in self.specs.items()}

    # -- validation ------------------------------------------------------------------------

    def check_request(
        self,
        *,
        task: str | None = None,
        labels: Sequence[str] | Mapping[str, str] | None = None,
        top_k: int | None = None,
    ) -> None:
        """Validate the arguments of :meth:`classify` without classifying (raises ValueError).

        Cheap: no encoding. Lets a caller reject a bad request before it joins a batch.
        """
        if task is not None and labels is not None:
            raise ValueError("give either `task` or `labels`, not both")
        if task is None and labels is None:
            raise ValueError(
                f"give a built-in `task` ({', '.join(sorted(self.specs))}) or custom `labels`"
            )
        if task is not None:
            if not isinstance(task, str) or task not in self.specs:
                raise ValueError(
                    f"unknown task {task!r}; built-in tasks: {', '.join(sorted(self.specs))}"
                )
        else:
            assert labels is not None
            _label_pairs(labels, self.max_labels)
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1
        ):
            raise ValueError(f"`top_k` must be a positive integer, got {top_k!r}")

    # -- classification --------------------------------------------------------------------

    def classify(
        self,
        embeddings: np.ndarray,
        *,
        task: str | None = None,
        labels: Sequence[str] | Mapping[str, str] | None = None,
        top_k: int | None = None,
    ) -> list[Ranked]:
        """Rank the labels for each embedding row.

        Exactly one of ``task`` (a built-in task) or ``labels`` (custom, zero-shot: a list of
        names, or a mapping name -> description; an empty description falls back to the name).
        Returns, per row, ``[(label, score), ...]`` sorted by score descending; the scores are the
        full softmax distribution over all labels (summing to 1), cut to the first ``top_k``
        entries when ``top_k`` is given (not renormalised).
        """
        self.check_request(task=task, labels=labels, top_k=top_k)
        x = np.asarray(embeddings)
        if x.ndim != 2:
            raise ValueError(f"embeddings must be a 2-D array (n, d), got shape {x.shape}")
        if x.shape[0] == 0:
            return []
        x = normalise(x)
        if task is not None:
            self.prepare()
            head = self.heads[task]
            names: tuple[str, ...] = head.labels
            self._check_dimensions(x, head.weights.shape[0])
            probs = softmax(head.logits(x))
        else:
            assert labels is not None
            names, matrix = self._label_matrix(labels)
            self._check_dimensions(x, matrix.shape[1])
            probs = softmax((x @ matrix.T) / self.zero_shot_temperature)
        k = len(names) if top_k is None else min(int(top_k), len(names))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(names[j], float(p[j])) for j in row] for p, row in zip(probs, order, strict=True)]

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _check_dimensions(x: np.ndarray, expected: int) -> None:
        if x.shape[1] != expected:
            raise ValueError(
                f"embeddings have {x.shape[1]} dimensions, the classifier expects {expected} "
                "(embed the texts with the classifier's encoder)"
            )

    def _encode_texts(self, texts: list[str]) -> npt.NDArray[np.float64]:
        out = np.asarray(self._encode(list(texts)))
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise RuntimeError(
                f"encode returned shape {out.shape} for {len(texts)} texts; expected (n, d)"
            )
        if self.dimensions is None:
            self.dimensions = int(out.shape[1])
        return normalise(out)

    def _label_matrix(
        self, labels: Sequence[str] | Mapping[str, str]
    ) -> tuple[tuple[str, ...], npt.NDArray[np.float64]]:
        """Label names and their (cached) zero-shot embeddings, one row per label."""
        pairs = _label_pairs(labels, self.max_labels)
        vectors: dict[tuple[str, str], npt.NDArray[np.float64]] = {}
        with self._cache_lock:
            for key in pairs:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    vectors[key] = hit
                    self.cache_hits += 1
        missing = [key for key in pairs if key not in vectors]
        if missing:
            texts: list[str] = []
            for name, desc in missing:
                texts.extend(label_texts(name, desc))
            emb = self._encode_texts(texts)
            offset = 0
            computed: dict[tuple[str, str], npt.NDArray[np.float64]] = {}
            for key in missing:
                n = len(label_texts(*key))
                computed[key] = normalise(emb[offset : offset + n].mean(axis=0))
                offset += n
            with self._cache_lock:
                for key, vec in computed.items():
                    self._cache[key] = vec
                    self._cache.move_to_end(key)
                    self.cache_misses += 1
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            vectors.update(computed)
        names = tuple(name for name, _ in pairs)
        return names, np.stack([vectors[key] for key in pairs])


def _label_pairs(
    labels: Sequence[str] | Mapping[str, str], max_labels: int = MAX_LABELS
) -> list[tuple[str, str]]:
    """Validate custom labels; return ``[(name, description), ...]`` in the caller's order."""
    if isinstance(labels, str):
        raise ValueError("`labels` must be a list of label names or a mapping name -> description")
    if isinstance(labels, Mapping):
        items = list(labels.items())
    elif isinstance(labels, Sequence):
        items = [(name, "") for name in labels]
    else:
        raise ValueError("`labels` must be a list of label names or a mapping name -> description")
    if not items:
        raise ValueError("`labels` must not be empty")
    if len(items) < 2:
        raise ValueError("give at least two `labels` (one label always scores 1)")
    if len(items) > max_labels:
        raise ValueError(f"too many `labels`: {len(items)} (at most {max_labels})")
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, desc in items:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"every label must be a non-empty string, got {name!r}")
        if desc is None:
            desc = ""
        if not isinstance(desc, str):
            raise ValueError(f"the description of label {name!r} must be a string")
        if len(name) > MAX_LABEL_CHARS or len(desc) > MAX_LABEL_CHARS:
            raise ValueError(
                f"label {name[:40]!r}...: names and descriptions are limited to "
                f"{MAX_LABEL_CHARS} characters"
            )
        key = name.strip().casefold()  # "Sports" and "sports " embed alike: one label
        if key in seen:
            raise ValueError(
                f"duplicate label {name.strip()!r} (labels compare case-insensitively)"
            )
        seen.add(key)
        pairs.append((name, desc.strip()))
    return pairs
