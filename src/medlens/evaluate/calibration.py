"""Temperature scaling (Guo et al., 2017) and the numbers that judge calibration.

One scalar T divides the logits; it is fitted by minimising the negative log-likelihood on the
validation split. Dividing by T > 0 keeps the arg-max, so accuracy and (single-label) AUC do not
move; only the confidence does. Multi-label tasks share one T over every label's sigmoid.

>>> import numpy as np
>>> logits = np.array([[4.0, -4.0], [3.0, -3.0], [-2.0, 2.0], [5.0, -5.0]])
>>> y = np.array([0, 1, 1, 0])  # one confident mistake: the fitted T softens every case
>>> fit_temperature(logits, y, "binary") > 1
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit, log_softmax, softmax

from medlens.errors import ConfigError
from medlens.evaluate.validation import confidence_correct, prepare

_LOG_T_BOUNDS = (-4.0, 4.0)  # T between 0.018 and 55: wider is never a sensible calibration
N_BINS = 15  # equal-width bins for the ECE, the MCE and the reliability diagram alike


def _check_logits(logits: Any, y: Any, task: str) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or len(z) == 0:
        raise ConfigError(f"logits must have shape (N, K) with N > 0, got {z.shape}")
    if not np.isfinite(z).all():
        raise ConfigError(
            "logits contain NaN or infinity", hint="check the model output before calibrating"
        )
    y, _ = prepare(y, probabilities(z, task), task)
    return z, y


def probabilities(logits: np.ndarray, task: str, temperature: float = 1.0) -> np.ndarray:
    """Softmax (sigmoid for multi-label) of ``logits / temperature``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    return expit(z) if task == "multi-label" else softmax(z, axis=1)


def nll(logits: np.ndarray, y: np.ndarray, task: str, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels (per label for multi-label tasks)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if task == "multi-label":
        yy = np.asarray(y, dtype=np.float64)
        return float(-(yy * log_expit(z) + (1 - yy) * log_expit(-z)).mean())
    return float(-log_softmax(z, axis=1)[np.arange(len(z)), np.asarray(y).ravel()].mean())


def fit_temperature(logits: Any, y: Any, task: str) -> float:
    """The temperature that minimises the NLL of ``y`` (a bounded 1-D search over log T)."""
    z, yy = _check_logits(logits, y, task)
    result = minimize_scalar(
        lambda log_t: nll(z, yy, task, float(np.exp(log_t))),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(result.x))


def brier_score(y: Any, probs: Any, task: str) -> float:
    """Brier score: binary on P(class 1), multi-class summed over classes, multi-label per label.

    >>> round(brier_score(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), "binary"), 6)
    0.025
    """
    yy, s = prepare(y, probs, task)
    if task == "binary":
        return float(np.mean((s[:, 1] - yy) ** 2))
    if task == "multi-label":
        return float(np.mean((s - yy) ** 2))
    return float(np.mean(((s - np.eye(s.shape[1])[yy]) ** 2).sum(axis=1)))


@dataclass(frozen=True)
class CalibrationBins:
    """Per equal-width confidence bin on [0, 1]: the weight of the cases in it, and their
    summed confidence and summed correctness. Arrays are ``(n_bins,)``, or ``(B, n_bins)``
    for B weightings of the same cases (bootstrap resamples)."""

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    correct: np.ndarray

    @property
    def ece(self) -> np.ndarray:
        """Expected calibration error ``sum_b |B_b|/N * |acc(B_b) - conf(B_b)|``."""
        return np.abs(self.correct - self.confidence).sum(axis=-1) / self.count.sum(axis=-1)

    @property
    def mce(self) -> np.ndarray:
        """Maximum calibration error: the largest ``|acc(B_b) - conf(B_b)|`` of a non-empty bin."""
        full = self.count > 0
        gap = np.abs(self.correct - self.confidence) / np.where(full, self.count, 1.0)
        return np.where(full, gap, -np.inf).max(axis=-1)

    def diagram(self) -> dict[str, Any]:
        """The reliability diagram with the ECE and MCE it shows (one weighting only).

        ``accuracy``, ``confidence`` and ``gap`` (``accuracy - confidence``) are None for an
        empty bin; ``sum(count * |gap|) / sum(count)`` is ``ece``.
        """
        if self.count.ndim != 1:
            raise ConfigError("a reliability diagram shows one weighting of the cases")
        full = self.count > 0
        mean_conf = self.confidence / np.where(full, self.count, 1.0)
        acc = self.correct / np.where(full, self.count, 1.0)

        def listed(values: np.ndarray) -> list[float | None]:
            return [float(v) if f else None for v, f in zip(values, full, strict=True)]

        return {
            "edges": self.edges.round(6).tolist(),
            "count": self.count.astype(int).tolist(),
            "confidence": listed(mean_conf),
            "accuracy": listed(acc),
            "gap": listed(acc - mean_conf),
            "ece": float(self.ece),
            "mce": float(self.mce),
        }


def calibration_bins(
    confidence: np.ndarray,
    correct: np.ndarray,
    n_bins: int = N_BINS,
    weights: np.ndarray | None = None,
) -> CalibrationBins:
    """Bin confidences (M,) and 0/1 correctness (M,), optionally weighted by ``weights``
    (B, M); the one place ECE, MCE and reliability diagrams are computed.

    Bins are (lo, hi] as in Guo et al. 2017; a confidence of exactly 0 goes in the first bin.
    scikit-learn has no ECE; a few lines of numpy keep ``evaluate/`` free of torch.

    >>> bins = calibration_bins(np.array([0.9, 0.8]), np.array([1.0, 0.0]), n_bins=10)
    >>> round(float(bins.ece), 6), round(float(bins.mce), 6)
    (0.45, 0.8)
    """
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {n_bins!r}", hint="e.g. 15")
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    if weights is None:
        count = np.bincount(idx, minlength=n_bins).astype(np.float64)
        conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
        ok_sum = np.bincount(idx, weights=ok, minlength=n_bins)
    else:
        onehot = np.zeros((conf.size, n_bins))
        onehot[np.arange(conf.size), idx] = 1.0
        count = weights @ onehot
        conf_sum = weights @ (onehot * conf[:, None])
        ok_sum = weights @ (onehot * ok[:, None])
    return CalibrationBins(edges, count, conf_sum, ok_sum)


def reliability(y: Any, probs: Any, task: str, n_bins: int = N_BINS) -> dict[str, Any]:
    """Reliability diagram data with its ECE and MCE (see :meth:`CalibrationBins.diagram`).

    >>> r = reliability(np.array([0, 1]), np.array([[0.9, 0.1], [0.8, 0.2]]), "binary", 10)
    >>> r["count"][7:], r["gap"][7:], round(r["ece"], 6)
    ([1, 1, 0], [-0.8, 0.09999999999999998, None], 0.45)
    """
    yy, s = prepare(y, probs, task)
    conf, correct = confidence_correct(yy, s, task)
    return calibration_bins(conf, correct, n_bins).diagram()


def judge_calibration(
    logits: np.ndarray, y: np.ndarray, task: str, temperature: float = 1.0
) -> dict[str, Any]:
    """ECE, MCE, Brier and NLL of ``logits / temperature`` against ``y``, with the reliability
    diagram (the same bins as the ECE)."""
    p = probabilities(logits, task, temperature)
    diagram = reliability(y, p, task)
    return {
        "ece": diagram["ece"],
        "mce": diagram["mce"],
        "brier": brier_score(y, p, task),
        "nll": nll(logits, y, task, temperature),
        "reliability": diagram,
    }


def calibration_summary(
    val_logits: np.ndarray,
    val_y: np.ndarray,
    test_logits: np.ndarray,
    test_y: np.ndarray,
    task: str,
) -> dict[str, Any]:
    """Fit T on val; ECE, MCE, Brier and NLL on test before and after, and the reliability
    diagram (the same bins as the ECE)."""
    t = fit_temperature(val_logits, val_y, task)

    def judged(temperature: float) -> dict[str, Any]:
        return judge_calibration(test_logits, test_y, task, temperature)

    return {
        "method": "temperature scaling, fitted on val by NLL",
        "temperature": t,
        "val_nll": {
            "before": nll(val_logits, val_y, task),
            "after": nll(val_logits, val_y, task, t),
        },
        "test": {"before": judged(1.0), "after": judged(t)},
    }
