"""Checked inputs and the conventions every ``evaluate`` module shares.

:func:`prepare` turns labels and probabilities into validated float/int arrays, or raises a
:class:`~medlens.errors.ConfigError` that says what is wrong with them. :func:`hard_labels`
is the decision rule of MedMNIST's accuracy and :func:`confidence_correct` the confidence
that calibration judges; metrics, bootstrap, calibration and conformal sets all use these.

Tasks are strings: ``"binary"``, ``"multi-class"``, ``"multi-label"`` and ``"ordinal"``
(ordinal is evaluated exactly as multi-class).

* ``y_true``: binary / multi-class / ordinal: int class indices of shape ``(N,)`` or ``(N, 1)``;
  multi-label: a ``(N, K)`` 0/1 array.
* ``y_score``: probabilities. binary: ``(N, 2)`` softmax probabilities, or ``(N,)`` = P(class 1);
  multi-class / ordinal: ``(N, K)`` softmax probabilities; multi-label: ``(N, K)`` sigmoid
  probabilities.

>>> import numpy as np
>>> y, s = prepare([[1], [0]], [0.8, 0.3], "binary")
>>> y.tolist(), s.tolist()
([1, 0], [[0.19999999999999996, 0.8], [0.7, 0.3]])
>>> hard_labels(s, "binary").tolist()
[1, 0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.errors import ConfigError

__all__ = [
    "TASKS",
    "check_labels",
    "check_scores",
    "check_task",
    "check_threshold",
    "confidence_correct",
    "hard_labels",
    "prepare",
]

TASKS: tuple[str, ...] = ("binary", "multi-class", "multi-label", "ordinal")

_SCORE_TOL = 1e-6  # a softmax may overshoot [0, 1] by rounding


def check_task(task: str) -> str:
    """``task`` itself, or a ConfigError naming the tasks there are.

    >>> check_task("ordinal")
    'ordinal'
    """
    if task not in TASKS:
        raise ConfigError(
            f"unknown task {task!r}",
            hint=f"use one of {', '.join(repr(t) for t in TASKS)}",
        )
    return task


def check_threshold(threshold: float) -> float:
    """A probability threshold in [0, 1] as a float."""
    if not (isinstance(threshold, (int, float)) and 0.0 <= float(threshold) <= 1.0):
        raise ConfigError(
            f"threshold must be a number in [0, 1], got {threshold!r}",
            hint="pass a probability threshold such as 0.5",
        )
    return float(threshold)


def check_scores(y_score: Any, task: str) -> np.ndarray:
    """Scores as float64: binary -> (N, 2), others -> (N, K); validated.

    >>> check_scores(np.array([0.25]), "binary").tolist()
    [[0.75, 0.25]]
    """
    s = np.asarray(y_score)
    if s.dtype == object or not (
        np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)
    ):
        raise ConfigError(
            f"y_score must be a numeric array of probabilities, got dtype {s.dtype}",
            hint="pass softmax/sigmoid probabilities as a float array",
        )
    s = s.astype(np.float64)
    if task == "binary":
        if s.ndim == 2 and s.shape[1] == 1:
            s = s[:, 0]
        if s.ndim == 1:
            s = np.stack([1.0 - s, s], axis=1)
        elif not (s.ndim == 2 and s.shape[1] == 2):
            raise ConfigError(
                f"binary y_score must have shape (N, 2) or (N,), got {s.shape} "
                f"({s.shape[-1] if s.ndim else 0} score columns, expected 2)",
                hint="pass the two softmax probabilities per sample, or P(class 1) as (N,)",
            )
    elif s.ndim != 2:
        raise ConfigError(
            f"{task} y_score must have shape (N, K), got {s.shape}",
            hint="pass one probability column per class (softmax for multi-class, "
            "sigmoid for multi-label)",
        )
    if s.shape[0] == 0:
        raise ConfigError("y_score has no samples (N = 0)", hint="evaluate on a non-empty split")
    if task in ("multi-class", "ordinal") and s.shape[1] < 2:
        raise ConfigError(
            f"{task} y_score needs at least 2 score columns, got {s.shape[1]}",
            hint="use task 'binary' for a single probability column",
        )
    if s.shape[1] == 0:
        raise ConfigError("y_score has no score columns", hint="pass one column per label")
    if np.isnan(s).any():
        rows = np.unique(np.nonzero(np.isnan(s))[0])
        raise ConfigError(
            f"y_score contains NaN in {rows.size} sample(s) (first at row {int(rows[0])})",
            hint="check the model output for NaN (diverged training, bad input) before evaluating",
        )
    if not np.isfinite(s).all() or s.min() < -_SCORE_TOL or s.max() > 1.0 + _SCORE_TOL:
        raise ConfigError(
            "y_score must be probabilities in [0, 1], got values in "
            f"[{s.min():.6g}, {s.max():.6g}]",
            hint="apply softmax (single-label) or sigmoid (multi-label) to logits first",
        )
    return s


def check_labels(y_true: Any, task: str, n_classes: int, n: int) -> np.ndarray:
    """Labels as int64: (N,) class indices, or (N, K) 0/1 for multi-label; validated against
    ``n_classes`` score columns and ``n`` samples."""
    y = np.asarray(y_true)
    if y.dtype == object or not (
        np.issubdtype(y.dtype, np.integer)
        or np.issubdtype(y.dtype, np.floating)
        or np.issubdtype(y.dtype, np.bool_)
    ):
        raise ConfigError(
            f"y_true must be a numeric label array, got dtype {y.dtype}",
            hint="pass integer class indices (or a 0/1 matrix for multi-label)",
        )
    if task == "multi-label":
        if y.ndim != 2:
            raise ConfigError(
                f"multi-label y_true must have shape (N, K), got {y.shape}",
                hint="pass a 0/1 indicator matrix with one column per label",
            )
        if y.shape[1] != n_classes:
            raise ConfigError(
                f"y_true has {y.shape[1]} label columns but y_score has {n_classes} columns",
                hint="y_score needs one sigmoid probability column per label",
            )
    else:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ConfigError(
                f"{task} y_true must be class indices of shape (N,) or (N, 1), got {y.shape}",
                hint="convert one-hot labels with y.argmax(1), or use task 'multi-label'",
            )
    if y.shape[0] != n:
        raise ConfigError(
            f"length mismatch: y_true has {y.shape[0]} samples but y_score has {n}",
            hint="y_true and y_score must describe the same samples in the same order",
        )
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise ConfigError("y_true contains NaN or inf", hint="labels must be integers")
        if (y != np.round(y)).any():
            raise ConfigError(
                "y_true contains non-integer values", hint="pass integer class indices"
            )
    y = y.astype(np.int64)
    if task == "multi-label":
        if not np.isin(y, (0, 1)).all():
            raise ConfigError(
                "multi-label y_true must contain only 0 and 1",
                hint="pass a 0/1 indicator matrix",
            )
    elif y.min() < 0 or y.max() >= n_classes:
        raise ConfigError(
            f"y_true has class indices in [{int(y.min())}, {int(y.max())}] but y_score has "
            f"{n_classes} columns (classes 0..{n_classes - 1})",
            hint="the number of score columns must match the number of classes",
        )
    return y


def prepare(y_true: Any, y_score: Any, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(labels, scores)`` as :func:`check_labels` and :func:`check_scores` give
    them; every metric starts here."""
    check_task(task)
    s = check_scores(y_score, task)
    y = check_labels(y_true, task, s.shape[1], s.shape[0])
    return y, s


def hard_labels(s: np.ndarray, task: str, threshold: float = 0.5) -> np.ndarray:
    """Hard predictions from checked scores ``s`` (as :func:`prepare` returns them).

    binary: ``P(class 1) > threshold``, (N,); multi-class / ordinal: argmax, (N,);
    multi-label: ``p > threshold`` per label, (N, K). The rule of MedMNIST's ACC.
    """
    if task == "binary":
        return (s[:, 1] > threshold).astype(np.int64)
    if task == "multi-label":
        return (s > threshold).astype(np.int64)
    return np.argmax(s, axis=1).astype(np.int64)


def confidence_correct(y: np.ndarray, s: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """The confidence calibration is judged on and whether each call was right (0/1 float).

    Single-label: the top-label confidence (max probability) and whether the argmax is the
    label; multi-label: every (sample, label) pair as a binary call with confidence
    ``max(p, 1 - p)``, flattened row by row to ``(N * K,)``.

    >>> conf, ok = confidence_correct(np.array([0, 1]), np.array([[0.9, 0.1], [0.8, 0.2]]),
    ...                               "binary")
    >>> conf.tolist(), ok.tolist()
    ([0.9, 0.8], [1.0, 0.0])
    """
    s = np.clip(s, 0.0, 1.0)  # values within the 1e-6 tolerance outside [0, 1]
    if task == "multi-label":
        p = s.ravel()
        conf = np.maximum(p, 1.0 - p)
        correct = (p > 0.5).astype(np.int64) == y.ravel()
    else:
        # Top-label: binary uses the argmax of its two columns, i.e. threshold 0.5.
        conf = s.max(axis=1)
        correct = np.argmax(s, axis=1) == y
    return conf, correct.astype(np.float64)
