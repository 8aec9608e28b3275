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

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit, log_softmax, softmax

from medlens.errors import ConfigError
from medlens.evaluate.metrics import _confidence_correct, _prepare

_LOG_T_BOUNDS = (-4.0, 4.0)  # T between 0.018 and 55: wider is never a sensible calibration


def _check_logits(logits: Any, y: Any, task: str) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or len(z) == 0:
        raise ConfigError(f"logits must have shape (N, K) with N > 0, got {z.shape}")
    if not np.isfinite(z).all():
        raise ConfigError(
            "logits contain NaN or infinity", hint="check the model output before calibrating"
        )
    y, _ = _prepare(y, probabilities(z, task), task)
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

    >>> brier_score(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), "binary")
    0.025
    """
    yy, s = _prepare(y, probs, task)
    if task == "binary":
        return float(np.mean((s[:, 1] - yy) ** 2))
    if task == "multi-label":
        return float(np.mean((s - yy) ** 2))
    return float(np.mean(((s - np.eye(s.shape[1])[yy]) ** 2).sum(axis=1)))


def reliability(y: Any, probs: Any, task: str, n_bins: int = 10) -> dict[str, list]:
    """Reliability diagram data: per equal-width confidence bin, mean confidence and accuracy."""
    yy, s = _prepare(y, probs, task)
    conf, correct = _confidence_correct(yy, s, task)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / np.maximum(count, 1)
    acc = np.bincount(idx, weights=correct, minlength=n_bins) / np.maximum(count, 1)
    return {
        "edges": edges.round(6).tolist(),
        "count": count.astype(int).tolist(),
        "confidence": [float(c) if n else None for c, n in zip(mean_conf, count, strict=True)],
        "accuracy": [float(a) if n else None for a, n in zip(acc, count, strict=True)],
    }


def calibration_summary(
    val_logits: np.ndarray,
    val_y: np.ndarray,
    test_logits: np.ndarray,
    test_y: np.ndarray,
    task: str,
) -> dict[str, Any]:
    """Fit T on val; ECE, MCE, Brier and NLL on test before and after, and reliability data."""
    from medlens.evaluate.metrics import expected_calibration_error, maximum_calibration_error

    t = fit_temperature(val_logits, val_y, task)

    def judged(temperature: float) -> dict[str, Any]:
        p = probabilities(test_logits, task, temperature)
        return {
            "ece": expected_calibration_error(test_y, p, task),
            "mce": maximum_calibration_error(test_y, p, task),
            "brier": brier_score(test_y, p, task),
            "nll": nll(test_logits, test_y, task, temperature),
            "reliability": reliability(test_y, p, task),
        }

    return {
        "method": "temperature scaling, fitted on val by NLL",
        "temperature": t,
        "val_nll": {
            "before": nll(val_logits, val_y, task),
            "after": nll(val_logits, val_y, task, t),
        },
        "test": {"before": judged(1.0), "after": judged(t)},
    }
