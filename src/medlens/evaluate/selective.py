"""Selective prediction: how accuracy grows when the least confident cases are handed back
(to a clinician) and only the rest are predicted.

>>> import numpy as np
>>> y = np.array([0, 1, 1, 0])
>>> p = np.array([[0.9, 0.1], [0.3, 0.7], [0.55, 0.45], [0.2, 0.8]])
>>> curve = selective_curve(y, p, "binary", n_points=4)
>>> curve["coverage"], curve["accuracy"]
([1.0, 0.75, 0.5, 0.25], [0.5, 0.6666666666666666, 0.5, 1.0])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medlens.errors import ConfigError
from medlens.evaluate.metrics import predict_labels
from medlens.evaluate.validation import TASKS

__all__ = ["ACCURACY_AT", "selective_curve"]

# Coverages reported in ``accuracy_at``.
ACCURACY_AT: tuple[float, ...] = (0.9, 0.8, 0.5)


def _confidence_and_correct(
    y_true: np.ndarray, probs: np.ndarray, task: str
) -> tuple[np.ndarray, np.ndarray]:
    """Default confidence and correctness per case (multi-label: the mean over labels)."""
    pred = predict_labels(probs, task)  # validates the scores
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(y_true)
    if task == "multi-label":
        if y.shape != pred.shape:
            raise ConfigError(
                f"multi-label labels must have shape {pred.shape}, got {y.shape}",
                hint="pass a 0/1 matrix with one column per label",
            )
        return np.maximum(p, 1.0 - p).mean(axis=1), (pred == y).mean(axis=1)
    y = y.reshape(-1)
    if y.shape[0] != pred.shape[0]:
        raise ConfigError(
            f"{y.shape[0]} labels but {pred.shape[0]} predictions",
            hint="pass labels and probabilities of the same cases",
        )
    if task == "binary":
        p1 = p[:, -1] if p.ndim == 2 else p
        conf = np.maximum(p1, 1.0 - p1)
    else:
        conf = p.max(axis=1)
    return conf, (pred == y).astype(np.float64)


def _kept(coverage: float, n: int) -> int:
    """The fewest cases that make up at least ``coverage`` of ``n`` (at least one)."""
    return max(1, math.ceil(coverage * n - 1e-9))


def selective_curve(
    y_true: np.ndarray,
    probs: np.ndarray,
    task: str,
    confidence: np.ndarray | None = None,
    n_points: int = 20,
) -> dict[str, Any]:
    """Accuracy when only the most confident cases are predicted (selective prediction).

    Cases are sorted by ``confidence`` (default: the max probability; binary: max(p, 1 - p);
    multi-label: the mean over labels of max(p, 1 - p)), ties kept in input order. At each
    coverage c of ``n_points`` from 1.0 down to 1 / n_points, the ceil(c N) most confident
    cases are kept. Accuracy is MedMNIST's (threshold 0.5 for binary and multi-label; for
    multi-label the mean per-label accuracy of each kept case).

    Returns ``coverage``, ``accuracy``, ``threshold`` (the lowest confidence kept) as lists,
    ``aurc``: the area under the risk-coverage curve, the mean over k = 1..N of the error of
    the k most confident cases (Geifman et al., 2019; lower is better; a random confidence
    gives about the overall error), and ``accuracy_at`` for coverages 0.9, 0.8 and 0.5.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}", hint=f"use one of {', '.join(TASKS)}")
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 1:
        raise ConfigError(f"n_points must be a positive integer, got {n_points!r}", hint="e.g. 20")
    conf, correct = _confidence_and_correct(y_true, probs, task)
    if confidence is not None:
        conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
        if conf.shape[0] != correct.shape[0] or not np.isfinite(conf).all():
            raise ConfigError(
                f"confidence must hold {correct.shape[0]} finite values, got {conf.shape[0]}",
                hint="one score per case, higher = more confident (e.g. -entropy)",
            )
    order = np.argsort(-conf, kind="stable")
    n = len(order)
    hits = np.cumsum(correct[order])
    accuracy_k = hits / np.arange(1, n + 1)  # accuracy of the k most confident, k = 1..N
    coverage = [1.0 - i / n_points for i in range(n_points)]
    kept = [_kept(c, n) for c in coverage]
    return {
        "coverage": coverage,
        "accuracy": [float(accuracy_k[k - 1]) for k in kept],
        "threshold": [float(conf[order[k - 1]]) for k in kept],
        "aurc": float(np.mean(1.0 - accuracy_k)),
        "accuracy_at": {f"{c:g}": float(accuracy_k[_kept(c, n) - 1]) for c in ACCURACY_AT},
        "n": n,
    }
