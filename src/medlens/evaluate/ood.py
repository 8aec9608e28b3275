"""Out-of-distribution scores from a model's penultimate features and logits; higher means
less like the training data.

* ``mahalanobis`` (Lee et al., 2018, "A simple unified framework for detecting
  out-of-distribution samples"): the smallest Mahalanobis distance of a case's features to a
  class mean, with one covariance shared by the classes. It is the default: it looks at the
  whole feature vector, so an image from another modality is far from every class even when
  the classifier happens to be confident about it, which is the failure that matters here
  (a breast ultrasound sent to a chest X-ray model gets a confident "pneumonia").
* ``energy`` (Liu et al., 2020, "Energy-based out-of-distribution detection"):
  ``-logsumexp(logits)``. Needs no fitted statistics, but sees only the K logits.
* ``msp`` (Hendrycks and Gimpel, 2017): ``1 - max softmax``, the baseline both papers beat.

The statistics (class means and the shared covariance) are fitted on training features and
the threshold on validation features: a threshold set on the cases the statistics were fitted
to would under-state the false-alarm rate on new in-distribution images.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> feats, y = rng.normal(0, 1, (200, 4)), np.arange(200) % 2
>>> stats = fit_mahalanobis(feats, y)
>>> near = mahalanobis_score(stats, np.zeros((1, 4)))
>>> far = mahalanobis_score(stats, np.full((1, 4), 9.0))
>>> bool(far[0] > near[0])
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp, softmax
from sklearn.covariance import LedoitWolf

from medlens.errors import ConfigError

METHODS = ("mahalanobis", "energy", "msp")
DEFAULT_METHOD = "mahalanobis"
DEFAULT_FALSE_ALARM = 0.05  # share of in-distribution validation images flagged


def fit_mahalanobis(features: np.ndarray, labels: np.ndarray | None) -> dict[str, np.ndarray]:
    """Class means (one mean when ``labels`` is None, e.g. multi-label tasks) and the precision
    of the shared, class-centred covariance.

    Ledoit-Wolf shrinkage rather than the empirical covariance of the paper: with a few hundred
    images and a few hundred feature dimensions the empirical one is singular or close to it.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ConfigError(f"features must be (N >= 2, D), got shape {x.shape}")
    y = np.zeros(len(x), dtype=int) if labels is None else np.asarray(labels).astype(int).ravel()
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, y)]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    return {"means": means, "precision": precision}


def mahalanobis_score(stats: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """(N,) smallest Mahalanobis distance to a class mean."""
    x = np.asarray(features, dtype=np.float64)
    means, precision = np.asarray(stats["means"]), np.asarray(stats["precision"])
    diff = x[:, None, :] - means[None, :, :]  # (N, K, D)
    d2 = np.einsum("nkd,de,nke->nk", diff, precision, diff)
    return np.sqrt(np.maximum(d2, 0.0)).min(axis=1)


def energy_score(logits: np.ndarray) -> np.ndarray:
    """(N,) ``-logsumexp(logits)`` (the free energy at temperature 1)."""
    return -logsumexp(np.asarray(logits, dtype=np.float64), axis=1)


def msp_score(logits: np.ndarray) -> np.ndarray:
    """(N,) one minus the largest softmax probability."""
    return 1.0 - softmax(np.asarray(logits, dtype=np.float64), axis=1).max(axis=1)


def ood_scores(
    method: str,
    features: np.ndarray,
    logits: np.ndarray,
    stats: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """(N,) scores of ``method`` (see :data:`METHODS`); ``stats`` for Mahalanobis."""
    if method == "mahalanobis":
        if stats is None:
            raise ConfigError("the Mahalanobis score needs fitted statistics")
        return mahalanobis_score(stats, features)
    if method == "energy":
        return energy_score(logits)
    if method == "msp":
        return msp_score(logits)
    raise ConfigError(f"unknown OOD method {method!r}", hint=f"use one of {METHODS}")


def threshold_at(scores: np.ndarray, false_alarm: float = DEFAULT_FALSE_ALARM) -> float:
    """The score above which only ``false_alarm`` of these in-distribution cases lie.

    >>> threshold_at(np.arange(101.0), 0.05)
    95.0
    """
    if not 0 < false_alarm < 1:
        raise ConfigError(f"false_alarm must be in (0, 1), got {false_alarm}", hint="e.g. 0.05")
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - false_alarm))


def flagged_share(scores: np.ndarray, threshold: float) -> float:
    """The share of cases whose score is above ``threshold`` (flagged as unlike training)."""
    return float((np.asarray(scores) > threshold).mean())


def guard_summary(
    method: str, threshold: float, false_alarm: float, val_scores: np.ndarray
) -> dict[str, Any]:
    """One method's entry in ood.json: its threshold and the false alarms it gives on val."""
    return {
        "method": method,
        "threshold": threshold,
        "target_false_alarm": false_alarm,
        "val_false_alarm": flagged_share(val_scores, threshold),
        "n_val": len(val_scores),
    }
