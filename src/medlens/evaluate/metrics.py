"""Classification metrics as plain functions of numpy arrays.

This module deliberately does not import torch: everything here works on numpy arrays of
labels and probabilities, so evaluation can run (and be tested) without a model.

Tasks are strings: ``"binary"``, ``"multi-class"``, ``"multi-label"`` and ``"ordinal"``
(ordinal is evaluated exactly as multi-class).

Input convention:

* ``y_true``: binary / multi-class / ordinal: int class indices of shape ``(N,)`` or ``(N, 1)``;
  multi-label: a ``(N, K)`` 0/1 array.
* ``y_score``: probabilities. binary: ``(N, 2)`` softmax probabilities, or ``(N,)`` = P(class 1);
  multi-class / ordinal: ``(N, K)`` softmax probabilities; multi-label: ``(N, K)`` sigmoid
  probabilities.

>>> import numpy as np
>>> y = np.array([0, 1, 1, 0])
>>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
>>> medmnist_acc(y, p, "binary")
0.5
>>> medmnist_auc(y, p, "binary")
0.75
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from medlens.errors import ConfigError

__all__ = [
    "METRIC_LABELS",
    "TASKS",
    "classification_metrics",
    "confusion",
    "expected_calibration_error",
    "maximum_calibration_error",
    "medmnist_acc",
    "medmnist_auc",
    "predict_labels",
]

TASKS: tuple[str, ...] = ("binary", "multi-class", "multi-label", "ordinal")

# Our task names -> the task strings medmnist.evaluator.getACC / getAUC understand.
_MEDMNIST_TASK = {
    "binary": "binary-class",
    "multi-class": "multi-class",
    "ordinal": "multi-class",
    "multi-label": "multi-label, binary-class",
}

_SCORE_TOL = 1e-6

METRIC_LABELS: dict[str, str] = {
    "acc": "ACC (MedMNIST)",
    "auc": "AUC (MedMNIST)",
    "balanced_accuracy": "Balanced accuracy",
    "precision_macro": "Precision (macro)",
    "recall_macro": "Sensitivity / recall (macro)",
    "specificity_macro": "Specificity (macro)",
    "f1_macro": "F1 (macro)",
    "sensitivity": "Sensitivity (positive class)",
    "specificity": "Specificity (positive class)",
    "precision": "Precision (positive class)",
    "f1": "F1 (positive class)",
    "ece": "Expected calibration error",
    "mce": "Maximum calibration error",
    "brier": "Brier score",
    "n": "Samples",
}


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ConfigError(
            f"unknown task {task!r}",
            hint=f"use one of {', '.join(repr(t) for t in TASKS)}",
        )
    return task


def _check_threshold(threshold: float) -> float:
    if not (isinstance(threshold, (int, float)) and 0.0 <= float(threshold) <= 1.0):
        raise ConfigError(
            f"threshold must be a number in [0, 1], got {threshold!r}",
            hint="pass a probability threshold such as 0.5",
        )
    return float(threshold)


def _check_scores(y_score: Any, task: str) -> np.ndarray:
    """Return scores as float64: binary -> (N, 2), others -> (N, K); validated."""
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


def _check_labels(y_true: Any, task: str, n_classes: int, n: int) -> np.ndarray:
    """Return labels as int64: (N,) class indices, or (N, K) 0/1 for multi-label."""
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


def _prepare(y_true: Any, y_score: Any, task: str) -> tuple[np.ndarray, np.ndarray]:
    _check_task(task)
    s = _check_scores(y_score, task)
    y = _check_labels(y_true, task, s.shape[1], s.shape[0])
    return y, s


# ----------------------------------------------------------------------------------------------
# MedMNIST definitions
# ----------------------------------------------------------------------------------------------


def _medmnist_inputs(y: np.ndarray, s: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Make arrays survive medmnist's ``squeeze()`` of every size-1 axis.

    N = 1 repeats the sample and a single multi-label column is repeated; both leave the
    per-label mean unchanged.
    """
    if task == "binary":
        s = s[:, 1]  # medmnist uses the last column, i.e. P(class 1)
    if y.shape[0] == 1:
        y = np.repeat(y, 2, axis=0)
        s = np.repeat(s, 2, axis=0)
    if task == "multi-label" and y.shape[1] == 1:
        y = np.repeat(y, 2, axis=1)
        s = np.repeat(s, 2, axis=1)
    return y, s


def _check_auc_defined(y: np.ndarray, task: str, n_classes: int) -> None:
    """Raise ConfigError naming the class (or label) for which AUC is undefined."""
    if task == "multi-label":
        counts = y.sum(axis=0)
        bad = [j for j in range(y.shape[1]) if counts[j] in (0, y.shape[0])]
        if bad:
            what = ", ".join(f"label {j} is {'always' if counts[j] else 'never'} 1" for j in bad)
            raise ConfigError(
                f"AUC is undefined: {what} in y_true (a label needs positives and negatives)",
                hint="evaluate on a larger split, or drop that label",
            )
        return
    present = set(np.unique(y).tolist())
    absent = [j for j in range(n_classes) if j not in present]
    if absent:
        names = ", ".join(str(j) for j in absent)
        raise ConfigError(
            f"AUC is undefined: class{'es' if len(absent) > 1 else ''} {names} absent from "
            "y_true (one-vs-rest AUC needs samples of every class)",
            hint="evaluate on a split that contains every class",
        )


def medmnist_acc(y_true: Any, y_score: Any, task: str, threshold: float = 0.5) -> float:
    """Accuracy exactly as MedMNIST v2 defines it (``medmnist.evaluator.getACC``).

    binary: ``P(class 1) > threshold``; multi-class / ordinal: argmax; multi-label: the mean
    over labels of the per-label accuracy of ``p > threshold``.

    >>> medmnist_acc(np.array([0, 2]), np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]), "ordinal")
    0.5
    """
    from medlens.data.medmnist import import_medmnist

    getACC = import_medmnist("evaluator").getACC

    threshold = _check_threshold(threshold)
    y, s = _prepare(y_true, y_score, task)
    y, s = _medmnist_inputs(y, s, task)
    return float(getACC(y, s, _MEDMNIST_TASK[task], threshold=threshold))


def medmnist_auc(y_true: Any, y_score: Any, task: str) -> float:
    """AUC exactly as MedMNIST v2 defines it (``medmnist.evaluator.getAUC``).

    binary: ROC AUC of P(class 1); multi-class / ordinal: the unweighted mean of the
    one-vs-rest AUC of every class; multi-label: the mean of the per-label AUC.
    Raises ConfigError if a class (or a label's positive/negative) is absent from ``y_true``.

    >>> medmnist_auc(np.array([0, 1, 1]), np.array([0.2, 0.9, 0.4]), "binary")
    1.0
    """
    from medlens.data.medmnist import import_medmnist

    getAUC = import_medmnist("evaluator").getAUC

    y, s = _prepare(y_true, y_score, task)
    _check_auc_defined(y, task, s.shape[1])
    y, s = _medmnist_inputs(y, s, task)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            auc = float(getAUC(y, s, _MEDMNIST_TASK[task]))
    except ValueError as exc:  # older scikit-learn raises when a class is absent
        raise ConfigError(
            f"AUC is undefined: {exc}", hint="evaluate on a split that contains every class"
        ) from exc
    if math.isnan(auc):  # newer scikit-learn warns and returns NaN instead
        raise ConfigError(
            "AUC is undefined for these labels", hint="evaluate on a split with every class"
        )
    return auc


# ----------------------------------------------------------------------------------------------
# predictions, calibration, confusion
# ----------------------------------------------------------------------------------------------


def _predict(s: np.ndarray, task: str, threshold: float) -> np.ndarray:
    if task == "binary":
        return (s[:, 1] > threshold).astype(np.int64)
    if task == "multi-label":
        return (s > threshold).astype(np.int64)
    return np.argmax(s, axis=1).astype(np.int64)


def predict_labels(y_score: Any, task: str, threshold: float = 0.5) -> np.ndarray:
    """Hard predictions, consistent with :func:`medmnist_acc`.

    binary: ``(P(class 1) > threshold)`` as int, shape (N,); multi-class / ordinal: argmax,
    shape (N,); multi-label: ``(p > threshold)`` as int, shape (N, K).

    >>> predict_labels(np.array([[0.4, 0.6], [0.5, 0.5]]), "binary").tolist()
    [1, 0]
    """
    _check_task(task)
    threshold = _check_threshold(threshold)
    return _predict(_check_scores(y_score, task), task, threshold)


def _confidence_correct(y: np.ndarray, s: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
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


def _calibration_bins(
    conf: np.ndarray, correct: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (count, sum of confidence, sum of correct) over equal-width bins on [0, 1].

    Bins are (lo, hi] as in Guo et al. 2017; a confidence of exactly 0 goes in the first bin.
    """
    # scikit-learn has no ECE; a few lines of numpy keep evaluate/ free of torch.
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {n_bins!r}", hint="e.g. 15")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    return count, conf_sum, acc_sum


def expected_calibration_error(y_true: Any, y_score: Any, task: str, n_bins: int = 15) -> float:
    """Expected calibration error (L1, equal-width bins on [0, 1]).

    ``sum_b |B_b|/N * |acc(B_b) - conf(B_b)|``. Single-label tasks use the top-label
    confidence (max probability) and whether the argmax is right; multi-label treats every
    (sample, label) pair as a binary prediction with confidence ``max(p, 1 - p)``.

    >>> p = np.array([[0.9, 0.1], [0.8, 0.2]])  # right at 0.9, wrong at 0.8
    >>> round(expected_calibration_error(np.array([0, 1]), p, "binary"), 6)
    0.45
    """
    y, s = _prepare(y_true, y_score, task)
    conf, correct = _confidence_correct(y, s, task)
    count, conf_sum, acc_sum = _calibration_bins(conf, correct, n_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / count.sum())


def maximum_calibration_error(y_true: Any, y_score: Any, task: str, n_bins: int = 15) -> float:
    """Maximum calibration error: the largest ``|acc(B_b) - conf(B_b)|`` over non-empty bins.

    Same bins and confidences as :func:`expected_calibration_error`.
    """
    y, s = _prepare(y_true, y_score, task)
    conf, correct = _confidence_correct(y, s, task)
    count, conf_sum, acc_sum = _calibration_bins(conf, correct, n_bins)
    full = count > 0
    return float(np.max(np.abs(acc_sum[full] - conf_sum[full]) / count[full]))


def confusion(
    y_true: Any, y_pred: Any, n_classes: int, *, multilabel: bool | None = None
) -> np.ndarray:
    """Confusion matrix with rows = true class, columns = predicted class.

    Single-label: (K, K) over classes ``0..K-1`` (absent classes give zero rows/columns).
    Multi-label: (K, 2, 2) one-vs-rest matrices ``[[TN, FP], [FN, TP]]`` per label.
    ``multilabel=None`` guesses multi-label when ``y_pred`` is 2-D with more than one column.

    >>> confusion([0, 1, 2], [0, 2, 2], 3).tolist()
    [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    """
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if multilabel is None:
        multilabel = yp.ndim == 2 and yp.shape[1] > 1
    if yt.shape[0] != yp.shape[0]:
        raise ConfigError(
            f"length mismatch: y_true has {yt.shape[0]} samples but y_pred has {yp.shape[0]}",
            hint="y_true and y_pred must describe the same samples in the same order",
        )
    if multilabel:
        if yt.ndim != 2 or yp.shape != yt.shape or yt.shape[1] != n_classes:
            raise ConfigError(
                f"multi-label confusion needs y_true and y_pred of shape (N, {n_classes}), got "
                f"{yt.shape} and {yp.shape}",
                hint="pass 0/1 indicator matrices with one column per label",
            )
        return multilabel_confusion_matrix(yt, yp, labels=list(range(n_classes)))
    yt, yp = yt.reshape(yt.shape[0], -1), yp.reshape(yp.shape[0], -1)
    if yt.shape[1] != 1 or yp.shape[1] != 1:
        raise ConfigError(
            "single-label confusion needs class indices of shape (N,) or (N, 1)",
            hint="convert scores with predict_labels() first, or pass multilabel=True",
        )
    return confusion_matrix(yt[:, 0], yp[:, 0], labels=list(range(n_classes)))


# ----------------------------------------------------------------------------------------------
# the full report
# ----------------------------------------------------------------------------------------------


def _num(x: Any) -> float | None:
    """A plain python float, or None for NaN/None."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _per_class_auc(y_bin: np.ndarray, score: np.ndarray) -> float | None:
    if y_bin.min() == y_bin.max():
        return None
    return float(roc_auc_score(y_bin, score))


def classification_metrics(
    y_true: Any,
    y_score: Any,
    task: str,
    label_names: list[str] | None = None,
    threshold: float = 0.5,
    n_bins: int = 15,
    positive: int = 1,
) -> dict[str, Any]:
    """Every metric of one evaluation as a JSON-serialisable dict.

    Keys: ``acc``, ``auc`` (MedMNIST definitions; ``auc`` is None when a class is absent),
    ``balanced_accuracy``, ``precision_macro``, ``recall_macro``, ``specificity_macro``,
    ``f1_macro``, (binary only: ``sensitivity``, ``specificity``, ``precision``, ``f1`` of
    class ``positive``, named in ``positive_class``), ``ece``, ``mce``, ``n``, ``per_class``
    (list of ``{name, support, precision, recall, specificity, f1, auc}``), ``confusion_matrix`` and
    ``label_names``. Metric titles for display are in :data:`METRIC_LABELS`.

    >>> m = classification_metrics([0, 1, 1], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], "binary")
    >>> round(m["acc"], 3), m["auc"], m["sensitivity"], m["per_class"][1]["support"]
    (0.667, 1.0, 0.5, 2)
    """
    threshold = _check_threshold(threshold)
    y, s = _prepare(y_true, y_score, task)
    n, k = s.shape[0], s.shape[1]
    if label_names is None:
        names = [str(i) for i in range(k)]
    else:
        names = [str(x) for x in label_names]
        if len(names) != k:
            raise ConfigError(
                f"label_names has {len(names)} names but there are {k} classes/labels",
                hint="give exactly one name per score column",
            )

    y_pred = _predict(s, task, threshold)
    multilabel = task == "multi-label"
    labels = list(range(k))

    acc = medmnist_acc(y, s, task, threshold=threshold)
    try:
        auc: float | None = medmnist_auc(y, s, task)
    except ConfigError:
        auc = None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # absent classes: sklearn warns, zero_division=0 rules
        prec, rec, f1, _ = precision_recall_fscore_support(
            y, y_pred, labels=labels, average=None, zero_division=0
        )
        if multilabel:
            bal = float(np.mean([balanced_accuracy_score(y[:, j], y_pred[:, j]) for j in range(k)]))
        else:
            bal = float(balanced_accuracy_score(y, y_pred))

    ovr = multilabel_confusion_matrix(y, y_pred, labels=labels)  # (K, 2, 2): [[TN, FP], [FN, TP]]
    tn, fp = ovr[:, 0, 0].astype(np.float64), ovr[:, 0, 1].astype(np.float64)
    spec = np.divide(tn, tn + fp, out=np.zeros(k), where=(tn + fp) > 0)

    if multilabel:
        support = y.sum(axis=0)
        cm = ovr
        y_bin = y
    else:
        support = np.bincount(y, minlength=k)
        cm = confusion_matrix(y, y_pred, labels=labels)
        y_bin = (y[:, None] == np.arange(k)[None, :]).astype(np.int64)

    per_class = [
        {
            "name": names[j],
            "support": int(support[j]),
            "precision": float(prec[j]),
            "recall": float(rec[j]),
            "specificity": float(spec[j]),
            "f1": float(f1[j]),
            "auc": _per_class_auc(y_bin[:, j], s[:, j]),
        }
        for j in range(k)
    ]

    out: dict[str, Any] = {
        "acc": float(acc),
        "auc": _num(auc),
        "balanced_accuracy": _num(bal),
        "precision_macro": float(np.mean(prec)),
        "recall_macro": float(np.mean(rec)),
        "specificity_macro": float(np.mean(spec)),
        "f1_macro": float(np.mean(f1)),
    }
    if task == "binary":
        if positive not in (0, 1):
            raise ConfigError(f"positive must be class 0 or 1, got {positive!r}")
        out.update(
            positive_class=names[positive],
            sensitivity=float(rec[positive]),
            specificity=float(spec[positive]),
            precision=float(prec[positive]),
            f1=float(f1[positive]),
        )
    conf, correct = _confidence_correct(y, s, task)
    count, conf_sum, acc_sum = _calibration_bins(conf, correct, n_bins)
    full = count > 0
    out.update(
        ece=float(np.abs(acc_sum - conf_sum).sum() / count.sum()),
        mce=float(np.max(np.abs(acc_sum[full] - conf_sum[full]) / count[full])),
        n=int(n),
        per_class=per_class,
        confusion_matrix=np.asarray(cm).astype(int).tolist(),
        label_names=names,
    )
    return out
