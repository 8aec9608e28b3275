"""Paired tests of two models' test AUC on the same cases.

Binary tasks with independent cases use DeLong's test (:mod:`.delong`). Multi-class and
multi-label tasks (MedMNIST's AUC is the mean over classes or labels), and any task whose cases
come in patient clusters, use a paired bootstrap instead: both models are scored on the same
resamples (of patients, when ids are known), with the resampling of
:mod:`medlens.evaluate.bootstrap`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm

from medlens.compare.delong import delong_test
from medlens.errors import ConfigError
from medlens.evaluate.bootstrap import percentile_interval, resample_weights, weighted_auc

_CHUNK = 250  # resamples per block, as in evaluate.bootstrap


def _truth(y: np.ndarray, task: str, k: int) -> np.ndarray:
    """(N, K) 0/1 truth: one-hot classes, or the multi-label matrix itself."""
    return y.astype(np.float64) if task == "multi-label" else np.eye(k)[y.astype(np.int64)]


def macro_auc(truth: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean one-vs-rest AUC over the columns, per row of ``weights`` (B, N)."""
    return np.stack(
        [weighted_auc(truth[:, j], probs[:, j], weights) for j in range(truth.shape[1])], axis=1
    ).mean(axis=1)


def paired_bootstrap_auc(
    y: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    task: str,
    *,
    positive: int = 1,
    groups: np.ndarray | None = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """AUC(a) - AUC(b) with a percentile interval from paired resamples; the p-value is the
    two-sided normal one from the bootstrap standard error (like DeLong's Wald test)."""
    y = np.asarray(y)
    a, b = np.asarray(probs_a, np.float64), np.asarray(probs_b, np.float64)
    if task == "binary":
        truth = (y.ravel() == positive).astype(np.float64)[:, None]
        a, b = a[:, [positive]], b[:, [positive]]
    else:
        truth = _truth(y, task, a.shape[1])
    ones = np.ones((1, len(truth)))
    auc_a, auc_b = float(macro_auc(truth, a, ones)[0]), float(macro_auc(truth, b, ones)[0])
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_boot, _CHUNK):
        w = resample_weights(len(truth), min(_CHUNK, n_boot - start), rng, groups)
        diffs.append(macro_auc(truth, a, w) - macro_auc(truth, b, w))
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]  # resamples that lost a class have no AUC
    if d.size < 2:
        raise ConfigError(
            "the paired bootstrap found no resample with every class",
            hint="compare on a larger test split",
        )
    diff = auc_a - auc_b
    low, high = percentile_interval(d, ci)
    se = float(d.std(ddof=1))
    z = diff / se if se > 0 else 0.0
    return {
        "method": "paired bootstrap" + (" (patients)" if groups is not None else ""),
        "auc_a": auc_a,
        "auc_b": auc_b,
        "difference": diff,
        "se": se,
        "low": low,
        "high": high,
        "ci": ci,
        "z": float(z),
        "p_value": float(2 * norm.sf(abs(z))) if se > 0 else 1.0,
        "n_boot": int(d.size),
    }


def paired_auc_test(
    y: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    task: str,
    *,
    positive: int = 1,
    groups: np.ndarray | None = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """DeLong for binary tasks with independent cases, else the paired bootstrap.

    ``probs_*`` are (N, K) probabilities (binary: both columns), ``y`` class indices (N,) or a
    multi-label (N, K) 0/1 matrix, ``groups`` patient ids (cluster resampling) or None.
    """
    if task == "binary" and groups is None:
        y = np.asarray(y).ravel()
        pos = y == positive
        out = delong_test(
            pos, np.asarray(probs_a)[:, positive], np.asarray(probs_b)[:, positive], ci
        )
        out.pop("n_positive"), out.pop("n_negative")
        return out
    return paired_bootstrap_auc(
        y, probs_a, probs_b, task, positive=positive, groups=groups, n_boot=n_boot, ci=ci, seed=seed
    )
