"""Classification metrics as plain functions of numpy arrays.

This module deliberately does not import torch: everything here works on numpy arrays of
labels and probabilities, so evaluation can run (and be tested) without a model. Tasks and
the shapes of ``y_true`` and ``y_score`` are described in :mod:`medlens.evaluate.validation`.

ACC and AUC follow MedMNIST v2's definitions (``medmnist.evaluator.getACC`` / ``getAUC``),
written out here over scikit-learn rather than imported: ``import medmnist.evaluator`` runs
medmnist's ``__init__``, which imports its torch dataset classes, and ``evaluate/`` must stay
free of torch. The tests check the two against medmnist's own functions for every task type.

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
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from medlens.errors import ConfigError
from medlens.evaluate.calibration import N_BINS, calibration_bins
from medlens.evaluate.validation import (
    TASKS,
    check_scores,
    check_task,
    check_threshold,
    confidence_correct,
    hard_labels,
    prepare,
)

__all__ = [
    "METRIC_LABELS",
    "TASKS",
    "classification_metrics",
    "confusion",
    "expected_calibration_error",
    "maximum_calibration_error",
    "medmnist_acc",
    "medmnist_auc",
    "nll",
    "predict_labels",
    "validation_scores",
]

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
# MedMNIST definitions
# ----------------------------------------------------------------------------------------------


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


def _label_mean(scores: list[float]) -> float:
    """Sum then divide, in label order, as medmnist's evaluator does (bit-for-bit equal)."""
    total = 0.0
    for value in scores:
        total += value
    return total / len(scores)


def medmnist_acc(y_true: Any, y_score: Any, task: str, threshold: float = 0.5) -> float:
    """Accuracy exactly as MedMNIST v2 defines it (``medmnist.evaluator.getACC``).

    binary: ``P(class 1) > threshold``; multi-class / ordinal: argmax; multi-label: the mean
    over labels of the per-label accuracy of ``p > threshold``.

    >>> medmnist_acc(np.array([0, 2]), np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]), "ordinal")
    0.5
    """
    threshold = check_threshold(threshold)
    y, s = prepare(y_true, y_score, task)
    pred = hard_labels(s, task, threshold)
    if task == "multi-label":
        return float(_label_mean([accuracy_score(y[:, j], pred[:, j]) for j in range(y.shape[1])]))
    return float(accuracy_score(y, pred))


def medmnist_auc(y_true: Any, y_score: Any, task: str) -> float:
    """AUC exactly as MedMNIST v2 defines it (``medmnist.evaluator.getAUC``).

    binary: ROC AUC of P(class 1); multi-class / ordinal: the unweighted mean of the
    one-vs-rest AUC of every class; multi-label: the mean of the per-label AUC.
    Raises ConfigError if a class (or a label's positive/negative) is absent from ``y_true``.

    >>> medmnist_auc(np.array([0, 1, 1]), np.array([0.2, 0.9, 0.4]), "binary")
    1.0
    """
    y, s = prepare(y_true, y_score, task)
    _check_auc_defined(y, task, s.shape[1])
    if task == "binary":
        return float(roc_auc_score(y, s[:, 1]))
    if task == "multi-label":
        return float(_label_mean([roc_auc_score(y[:, j], s[:, j]) for j in range(s.shape[1])]))
    return float(_label_mean([roc_auc_score(y == j, s[:, j]) for j in range(s.shape[1])]))


def validation_scores(probs: np.ndarray, labels: np.ndarray, task: str) -> tuple[float, float]:
    """(AUC, ACC) by MedMNIST's definitions; AUC is NaN when the labels lack a class.

    >>> validation_scores(np.array([[0.8, 0.2], [0.4, 0.6]]), np.array([0, 0]), "binary")
    (nan, 0.5)
    """
    try:
        auc = medmnist_auc(labels, probs, task)
    except ConfigError:
        auc = float("nan")
    return auc, medmnist_acc(labels, probs, task)


def nll(probs: np.ndarray, labels: np.ndarray, task: str) -> float:
    """Mean negative log-likelihood of the labels under ``probs`` (clipped to [1e-7, 1 - 1e-7]);
    multi-label: the mean Bernoulli NLL over every (sample, label). From logits, with a
    temperature, see :func:`medlens.evaluate.calibration.nll`.

    >>> round(nll(np.array([[0.5, 0.5], [0.9, 0.1]]), np.array([1, 0]), "binary"), 4)
    0.3993
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels)
    if task == "multi-label":
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    return float(-np.log(p[np.arange(len(y)), y.reshape(-1)]).mean())


# ----------------------------------------------------------------------------------------------
# predictions, calibration, confusion
# ----------------------------------------------------------------------------------------------


def predict_labels(y_score: Any, task: str, threshold: float = 0.5) -> np.ndarray:
    """Hard predictions, consistent with :func:`medmnist_acc`.

    binary: ``(P(class 1) > threshold)`` as int, shape (N,); multi-class / ordinal: argmax,
    shape (N,); multi-label: ``(p > threshold)`` as int, shape (N, K).

    >>> predict_labels(np.array([[0.4, 0.6], [0.5, 0.5]]), "binary").tolist()
    [1, 0]
    """
    check_task(task)
    threshold = check_threshold(threshold)
    return hard_labels(check_scores(y_score, task), task, threshold)


def expected_calibration_error(y_true: Any, y_score: Any, task: str, n_bins: int = N_BINS) -> float:
    """Expected calibration error (L1, equal-width bins on [0, 1]).

    ``sum_b |B_b|/N * |acc(B_b) - conf(B_b)|``. Single-label tasks use the top-label
    confidence (max probability) and whether the argmax is right; multi-label treats every
    (sample, label) pair as a binary prediction with confidence ``max(p, 1 - p)``.

    >>> p = np.array([[0.9, 0.1], [0.8, 0.2]])  # right at 0.9, wrong at 0.8
    >>> round(expected_calibration_error(np.array([0, 1]), p, "binary"), 6)
    0.45
    """
    y, s = prepare(y_true, y_score, task)
    return float(calibration_bins(*confidence_correct(y, s, task), n_bins).ece)


def maximum_calibration_error(y_true: Any, y_score: Any, task: str, n_bins: int = N_BINS) -> float:
    """Maximum calibration error: the largest ``|acc(B_b) - conf(B_b)|`` over non-empty bins.

    Same bins and confidences as :func:`expected_calibration_error`.
    """
    y, s = prepare(y_true, y_score, task)
    return float(calibration_bins(*confidence_correct(y, s, task), n_bins).mce)


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
    n_bins: int = N_BINS,
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
    threshold = check_threshold(threshold)
    y, s = prepare(y_true, y_score, task)
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

    y_pred = hard_labels(s, task, threshold)
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
    bins = calibration_bins(*confidence_correct(y, s, task), n_bins)
    out.update(
        ece=float(bins.ece),
        mce=float(bins.mce),
        n=int(n),
        per_class=per_class,
        confusion_matrix=np.asarray(cm).astype(int).tolist(),
        label_names=names,
    )
    return out
