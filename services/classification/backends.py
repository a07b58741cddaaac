"""Two classifier backends behind one interface.

- :class:`EmbeddingBackend`: the packaged (or any sentence-transformers) embedding model with
  :class:`~services.classification.embedding_classifier.EmbeddingClassifier`: built-in tasks from
  shipped labelled examples, custom labels zero-shot.
- :class:`SequenceClassificationBackend`: any Hugging Face ``*ForSequenceClassification``
  checkpoint; its labels come from the model config and it serves one task.

Both run in the micro-batcher's worker thread: :meth:`classify_batch` gets many requests' texts
at once and does one forward pass for all of them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from modelfleet import flavours as fl
from modelfleet.devices import pick_device, torch_dtype
from modelfleet.encoder import SentenceEncoder
from modelfleet.errors import InvalidRequest
from modelfleet.flavours import Feats, Runner
from modelfleet.resolve import ModelSource, weights_fingerprint

Labels = tuple[str, ...] | tuple[tuple[str, str], ...]
# what FLAVOUR=auto times each candidate flavour on, 8 at a time
_SAMPLE = "I ordered the blue one last week and it still has not arrived, can you check?"


@dataclass(frozen=True, slots=True)
class ClassifyItem:
    text: str
    task: str | None
    labels: Labels | None
    top_k: int | None

    @property
    def group(self) -> tuple[str | None, Labels | None, int | None]:
        return (self.task, self.labels, self.top_k)


@dataclass(frozen=True, slots=True)
class ClassifyResult:
    labels: list[tuple[str, float]]
    tokens: int
    truncated: bool
    model: str = ""  # the model that answered (set by the service: a swap may come between)


class ClassifierBackend(Protocol):
    kind: str
    revision: str
    device: str

    def load(self) -> None: ...
    def tasks(self) -> dict[str, dict[str, str]]: ...
    def validate(self, task: str | None, labels: Labels | None) -> None: ...
    def classify_batch(self, items: list[ClassifyItem]) -> list[ClassifyResult]: ...


def is_sequence_classifier(source: ModelSource) -> bool:
    """True when a local checkpoint's config names a ``*ForSequenceClassification`` head."""
    cfg = source.path / "config.json"
    if not source.local or not cfg.exists():
        return False
    archs = json.loads(cfg.read_text()).get("architectures") or []
    return any(str(a).endswith("ForSequenceClassification") for a in archs)


def _label_arg(labels: Labels | None) -> list[str] | dict[str, str] | None:
    if labels is None:
        return None
    if labels and isinstance(labels[0], tuple):
        return {str(k): str(v) for k, v in labels}
    return [str(x) for x in labels]


def _groups(items: list[ClassifyItem]) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.group, []).append(i)
    return groups


class EmbeddingBackend:
    kind = "embedding"

    def __init__(
        self,
        source: ModelSource,
        device: str,
        dtype: str,
        tasks_dir: Path | None,
        packed: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        self.encoder = SentenceEncoder(source, device, dtype, packed, trust_remote_code)
        self.device = self.encoder.device
        self.tasks_dir = tasks_dir
        self.revision = "unknown"
        self.classifier: Any = None

    def load(self) -> None:
        from services.classification.embedding_classifier import EmbeddingClassifier

        self.encoder.load()
        self.revision = self.encoder.revision

        def encode(texts: list[str]) -> np.ndarray:
            return self.encoder.encode(texts).embeddings

        self.classifier = EmbeddingClassifier(encode, self.tasks_dir)
        self.classifier.prepare()

    def tasks(self) -> dict[str, dict[str, str]]:
        result: dict[str, dict[str, str]] = self.classifier.tasks()
        return result

    def validate(self, task: str | None, labels: Labels | None) -> None:
        if task is None and labels is None:
            raise InvalidRequest(
                f"give `task` (one of {sorted(self.tasks())}) or custom `labels`", param="task"
            )
        if task is not None and task not in self.tasks():
            raise InvalidRequest(
                f"unknown task {task!r}; built-in tasks: {sorted(self.tasks())}", param="task"
            )
        try:  # everything else the classifier would refuse, before the item joins a batch
            self.classifier.check_request(task=task, labels=_label_arg(labels))
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="labels" if labels else "task") from None

    def classify_batch(self, items: list[ClassifyItem]) -> list[ClassifyResult]:
        enc = self.encoder.encode([it.text for it in items])
        out: list[ClassifyResult | None] = [None] * len(items)
        for (task, labels, top_k), idx in _groups(items).items():
            ranked = self.classifier.classify(
                enc.embeddings[idx], task=task, labels=_label_arg(labels), top_k=top_k
            )
            for i, r in zip(idx, ranked, strict=True):
                out[i] = ClassifyResult(
                    [(str(lbl), float(s)) for lbl, s in r], enc.tokens[i], enc.truncated[i]
                )
        return [r for r in out if r is not None]


class SequenceClassificationBackend:
    """A ``*ForSequenceClassification`` model run in one of its flavours (float, int8, ONNX).

    ``flavour="auto"`` times every flavour the model card says stays within its quality budget
    on this machine and keeps the fastest; a directory without a card's ``flavours`` section
    runs float, as before. See :mod:`modelfleet.flavours`.
    """

    kind = "sequence-classification"

    def __init__(
        self,
        source: ModelSource,
        device: str,
        dtype: str,
        flavour: str = "auto",
        threads: int = 0,
        trust_remote_code: bool = False,
    ) -> None:
        self.source = source
        self.trust = {"trust_remote_code": True} if trust_remote_code else {}
        self.device = pick_device(device)
        self.dtype = dtype
        self.flavour = flavour
        self.threads = threads
        self.revision = source.revision or "unknown"
        self.task_name = "default"
        self.id2label: dict[int, str] = {}
        self.max_tokens = 512
        self.runner: Runner | None = None
        self.tokenizer: Any = None
        self.timings: dict[str, float] = {}
        self._tokenizer_lock = threading.Lock()

    def _features(self, texts: list[str]) -> Feats:
        enc = self.tokenizer(
            texts, truncation=True, max_length=self.max_tokens, padding=True, return_tensors="np"
        )
        return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}

    def load(self) -> None:
        from transformers import AutoConfig, AutoTokenizer

        if not self.source.local:  # a hub id: float only (flavours live in exported dirs)
            self._load_hub()
            return
        path = self.source.path
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, **self.trust)
        cfg = AutoConfig.from_pretrained(path, local_files_only=True, **self.trust)
        remote = bool(self.trust)
        card = fl.model_card(path)
        self.id2label = {int(k): str(v) for k, v in cfg.id2label.items()}
        task = card.get("task")
        if not task or task == "text-classification":  # the toolkit's generic card value
            task = getattr(cfg, "finetuning_task", None) or "default"
        self.task_name = str(task)
        limit = getattr(self.tokenizer, "model_max_length", 512) or 512
        self.max_tokens = int(min(limit, getattr(cfg, "max_position_embeddings", limit)))
        if self.flavour == "auto":
            candidates = fl.eligible(card, fl.available(path))
            if self.device != "cpu":
                candidates = [c for c in candidates if c == fl.FLOAT]
            if len(candidates) == 1:
                self.runner = fl.load_runner(
                    path, fl.FLOAT, device=self.device,
                    dtype=torch_dtype(self.dtype, self.device), trust_remote_code=remote,
                )  # fmt: skip
            else:
                sample = self._features([_SAMPLE] * 8)
                self.runner, self.timings = fl.pick_fastest(
                    path, candidates, sample, threads=self.threads, trust_remote_code=remote
                )
        else:
            self.runner = fl.load_runner(
                path, self.flavour, device=self.device,
                dtype=torch_dtype(self.dtype, self.device), threads=self.threads,
                trust_remote_code=remote,
            )  # fmt: skip
        if not self.source.revision:
            self.revision = "sha256:" + weights_fingerprint(path)
        if self.runner.flavour != fl.FLOAT:
            self.revision += f"+{self.runner.flavour}"

    def _load_hub(self) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        kw: dict[str, Any] = {"local_files_only": False, **self.trust}
        if self.source.revision:
            kw["revision"] = self.source.revision
        self.tokenizer = AutoTokenizer.from_pretrained(self.source.location, **kw)
        model = AutoModelForSequenceClassification.from_pretrained(
            self.source.location, dtype=torch_dtype(self.dtype, self.device), **kw
        ).to(self.device)
        model.eval()
        self.runner = fl.TorchRunner(model, fl.FLOAT, self.device)
        cfg = model.config
        self.id2label = {int(k): str(v) for k, v in cfg.id2label.items()}
        self.task_name = str(getattr(cfg, "finetuning_task", None) or "default")
        limit = getattr(self.tokenizer, "model_max_length", 512) or 512
        self.max_tokens = int(min(limit, getattr(cfg, "max_position_embeddings", limit)))

    def tasks(self) -> dict[str, dict[str, str]]:
        return {self.task_name: {lbl: lbl for lbl in self.id2label.values()}}

    def validate(self, task: str | None, labels: Labels | None) -> None:
        if labels is not None:
            raise InvalidRequest(
                "this classification model has a fixed label set; custom `labels` need the "
                "embedding backend",
                param="labels",
            )
        if task is not None and task != self.task_name:
            raise InvalidRequest(
                f"unknown task {task!r}; this model serves {self.task_name!r}", param="task"
            )

    def classify_batch(self, items: list[ClassifyItem]) -> list[ClassifyResult]:
        assert self.runner is not None, "load() first"
        texts = [it.text for it in items]
        with self._tokenizer_lock:  # fast tokenizers keep truncation settings in shared state
            full = self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]
            feats = self._features(texts)
        logits = self.runner.logits(feats)
        z = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        out = []
        for it, p, ids in zip(items, probs, full, strict=True):
            order = np.argsort(-p)[: it.top_k] if it.top_k else np.argsort(-p)
            out.append(
                ClassifyResult(
                    [(self.id2label[int(j)], float(p[j])) for j in order],
                    min(len(ids), self.max_tokens),
                    len(ids) > self.max_tokens,
                )
            )
        return out
