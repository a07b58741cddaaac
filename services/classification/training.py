"""The numpy training behind the embedding classifier's built-in tasks: softmax regression
(FISTA), temperature calibration on out-of-fold predictions, stratified folds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


def normalise(x: np.ndarray) -> npt.NDArray[np.float64]:
    a: npt.NDArray[np.float64] = np.asarray(x, dtype=np.float64)
    out: npt.NDArray[np.float64] = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    return out


def softmax(logits: np.ndarray) -> npt.NDArray[np.float64]:
    z: npt.NDArray[np.float64] = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    out: npt.NDArray[np.float64] = e / e.sum(axis=-1, keepdims=True)
    return out


def fit_softmax_regression(
    x: FloatArray,
    y: npt.NDArray[np.integer],
    n_classes: int,
    *,
    l2: float = 3e-3,
    max_iter: int = 3000,
    tol: float = 1e-6,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Multinomial logistic regression by accelerated gradient descent (FISTA).

    Minimises mean cross-entropy + ``l2/2 * ||W||^2`` (the bias is not penalised); the objective
    is smooth and strongly convex, so a fixed step of 1/L converges. Returns ``(W, b)`` with
    logits ``x @ W + b``.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    targets = np.eye(n_classes)[np.asarray(y)]
    # Lipschitz constant of the gradient: the softmax Hessian is bounded by 1/2 * Xb^T Xb / n.
    lipschitz = 0.5 * float(np.linalg.norm(xb, 2)) ** 2 / n + l2
    step = 1.0 / lipschitz
    reg = np.full((d + 1, 1), l2)
    reg[-1] = 0.0
    w = np.zeros((d + 1, n_classes))
    v = w.copy()
    t = 1.0
    for _ in range(max_iter):
        grad = xb.T @ (softmax(xb @ v) - targets) / n + reg * v
        w_next = v - step * grad
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        v = w_next + ((t - 1.0) / t_next) * (w_next - w)
        done = float(np.abs(w_next - w).max()) < tol
        w, t = w_next, t_next
        if done:
            break
    return w[:-1], w[-1]


def fit_temperature(
    logits: np.ndarray | Sequence[np.ndarray],
    targets: np.ndarray | Sequence[np.ndarray],
) -> float:
    """The temperature T minimising the mean negative log-likelihood of ``softmax(logits / T)``.

    ``logits``/``targets`` may be lists of blocks with different label counts (pooled NLL).
    """
    blocks = [
        np.asarray(z, dtype=np.float64)
        for z in ([logits] if isinstance(logits, np.ndarray) else logits)
    ]
    ys = [np.asarray(y) for y in ([targets] if isinstance(targets, np.ndarray) else targets)]
    count = sum(len(y) for y in ys)

    def nll(temp: float) -> float:
        total = 0.0
        for z, y in zip(blocks, ys, strict=True):
            s = z / temp
            s = s - s.max(axis=1, keepdims=True)
            lse = np.log(np.exp(s).sum(axis=1))
            total += float((lse - s[np.arange(len(y)), y]).sum())
        return total / max(count, 1)

    grid = np.logspace(-3, 2, 101)  # 0.001 .. 100, 20 steps per decade
    best = float(grid[int(np.argmin([nll(float(g)) for g in grid]))])
    fine = best * np.logspace(-0.05, 0.05, 21)  # refine within one grid step either side
    return float(fine[int(np.argmin([nll(float(g)) for g in fine]))])


def stratified_folds(y: npt.NDArray[np.integer], k: int, seed: int = 0) -> npt.NDArray[np.int_]:
    """Fold index per example: each class spread round-robin over k folds after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(y), dtype=np.int_)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        folds[members] = np.arange(len(members)) % k
    return folds


@dataclass(frozen=True, slots=True)
class TaskHead:
    """A trained built-in task: ``softmax((x @ weights + bias) / temperature)``."""

    labels: tuple[str, ...]
    weights: npt.NDArray[np.float64]
    bias: npt.NDArray[np.float64]
    temperature: float
    cv_accuracy: float  # out-of-fold accuracy on the training examples (a sanity figure)

    def logits(self, x: FloatArray) -> npt.NDArray[np.float64]:
        return (normalise(x) @ self.weights + self.bias) / self.temperature


def train_head(
    x: FloatArray,
    y: npt.NDArray[np.integer],
    labels: Sequence[str],
    *,
    l2: float = 3e-3,
    folds: int = 5,
    seed: int = 0,
) -> TaskHead:
    """Fit the head on all examples; calibrate its temperature on k-fold out-of-fold logits."""
    x = normalise(x)
    y = np.asarray(y)
    n_classes = len(labels)
    k = int(min(folds, np.bincount(y, minlength=n_classes).min()))
    temperature, cv_accuracy = 1.0, float("nan")
    if k >= 2:
        fold = stratified_folds(y, k, seed)
        oof = np.zeros((len(y), n_classes))
        for f in range(k):
            train, held = fold != f, fold == f
            w, b = fit_softmax_regression(x[train], y[train], n_classes, l2=l2)
            oof[held] = x[held] @ w + b
        temperature = fit_temperature(oof, y)
        cv_accuracy = float((oof.argmax(axis=1) == y).mean())
    w, b = fit_softmax_regression(x, y, n_classes, l2=l2)
    return TaskHead(tuple(labels), w, b, temperature, cv_accuracy)


# --------------------------------------------------------------------------------------------
# the classifier
