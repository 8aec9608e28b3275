"""Operating points: a decision threshold chosen on validation, judged on test.

A screening tool is set to miss few cases (a target sensitivity), a confirmatory one to raise
few false alarms (a target specificity). The threshold is picked on the validation split, then
fixed, and test sensitivity, specificity, PPV and NPV at that threshold get bootstrap CIs
(the threshold is held fixed in the resamples, as it would be once deployed).

>>> import numpy as np
>>> y = np.array([0, 0, 1, 1, 1])
>>> p = np.array([0.1, 0.6, 0.4, 0.7, 0.9])
>>> threshold_for(y, p, "sensitivity", 1.0)
0.4
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from medlens.errors import ConfigError
from medlens.evaluate.bootstrap import percentile_interval, resample_weights

TARGETS = ("sensitivity", "specificity")


def threshold_for(y: np.ndarray, p_pos: np.ndarray, target: str, value: float) -> float:
    """The highest threshold whose sensitivity reaches ``value`` (``target="sensitivity"``), or
    the lowest whose specificity does; a case is positive when ``p >= threshold``."""
    if target not in TARGETS:
        raise ConfigError(f"unknown operating target {target!r}", hint=f"use one of {TARGETS}")
    y = np.asarray(y).ravel()
    if y.min() == y.max():
        raise ConfigError(
            "an operating point needs both classes in the validation split",
            hint="use a validation split with positive and negative cases",
        )
    fpr, tpr, thr = roc_curve(y, p_pos, drop_intermediate=False)
    thr = np.minimum(thr, 1.0)  # scikit-learn's first threshold is +inf
    if target == "sensitivity":
        ok = np.flatnonzero(tpr >= value - 1e-12)
        return float(thr[ok[0]])  # thresholds decrease: the first that reaches it is highest
    ok = np.flatnonzero(1 - fpr >= value - 1e-12)
    return float(thr[ok[-1]])


def _rates(y: np.ndarray, p_pos: np.ndarray, threshold: float, w: np.ndarray) -> dict:
    pred = (p_pos >= threshold).astype(float)
    pos = y.astype(float)
    tp, fp = w @ (pos * pred), w @ ((1 - pos) * pred)
    fn, tn = w @ (pos * (1 - pred)), w @ ((1 - pos) * (1 - pred))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
        }


def rates_at(
    y: np.ndarray,
    p_pos: np.ndarray,
    threshold: float,
    *,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float | None]]:
    """Sensitivity, specificity, PPV and NPV at a fixed ``threshold``, with bootstrap CIs
    (the threshold held fixed in the resamples); None where a rate is undefined.

    >>> r = rates_at(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.4]), 0.5, n_boot=0)
    >>> r["sensitivity"]["value"], r["specificity"]["value"]
    (0.5, 1.0)
    """
    y = np.asarray(y).ravel()
    point = _rates(y, p_pos, threshold, np.ones((1, len(y))))
    w = resample_weights(len(y), n_boot, np.random.default_rng(seed), groups)
    draws = _rates(y, p_pos, threshold, w) if n_boot else {}
    rates = {}
    for name, v in point.items():
        low, high = percentile_interval(draws[name], ci, v[0]) if n_boot else (None, None)
        rates[name] = {
            "value": float(v[0]) if np.isfinite(v[0]) else None,
            "low": low,
            "high": high,
        }
    return rates


def operating_point(
    val_y: np.ndarray,
    val_p: np.ndarray,
    test_y: np.ndarray,
    test_p: np.ndarray,
    *,
    target: str,
    value: float,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Threshold for ``target >= value`` on val, and test rates there with bootstrap CIs."""
    threshold = threshold_for(val_y, val_p, target, value)
    rates = rates_at(test_y, test_p, threshold, groups=groups, n_boot=n_boot, ci=ci, seed=seed)
    val_rates = _rates(np.asarray(val_y).ravel(), val_p, threshold, np.ones((1, len(val_y))))
    return {
        "target": target,
        "value": value,
        "threshold": threshold,
        "val": {k: float(v[0]) for k, v in val_rates.items() if np.isfinite(v[0])},
        "test": rates,
    }
