"""How a model's numbers move from its own test split to another site's cases.

The two sets hold different cases, so the difference of a metric gets an *unpaired* bootstrap
interval: each set is resampled on its own (patients when ids are known), and the interval is
the percentile interval of the resampled differences.

>>> import numpy as np
>>> y = np.array([0, 1] * 50)
>>> good = np.c_[1 - (0.2 + 0.6 * y), 0.2 + 0.6 * y]
>>> bad = np.c_[np.full(100, 0.5), np.full(100, 0.5)]
>>> d = metric_drop(y, good, y, bad, "binary", n_boot=200)
>>> round(d["auc"]["internal"], 2), round(d["auc"]["external"], 2), round(d["auc"]["drop"], 2)
(1.0, 0.5, 0.5)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.evaluate.bootstrap import percentile_interval, resample_weights, weighted_metrics
from medlens.evaluate.validation import prepare

DROP_METRICS = ("auc", "acc", "balanced_accuracy", "sensitivity", "specificity", "ece", "brier")


def metric_drop(
    internal_y: Any,
    internal_p: Any,
    external_y: Any,
    external_p: Any,
    task: str,
    *,
    internal_groups: np.ndarray | None = None,
    external_groups: np.ndarray | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    positive: int = 1,
) -> dict[str, dict[str, Any]]:
    """``{metric: {internal, external, drop, low, high}}``; ``drop`` is internal - external
    (positive: worse at the site, for AUC and accuracy; for ECE and Brier a negative drop is
    the worse one)."""
    yi, si = prepare(internal_y, internal_p, task)
    ye, se = prepare(external_y, external_p, task)
    rng = np.random.default_rng(seed)
    point_i = weighted_metrics(yi, si, task, np.ones((1, len(yi))), positive=positive)
    point_e = weighted_metrics(ye, se, task, np.ones((1, len(ye))), positive=positive)
    wi = resample_weights(len(yi), n_boot, rng, internal_groups)
    we = resample_weights(len(ye), n_boot, rng, external_groups)
    boot_i = weighted_metrics(yi, si, task, wi, positive=positive) if n_boot else {}
    boot_e = weighted_metrics(ye, se, task, we, positive=positive) if n_boot else {}
    out: dict[str, dict[str, Any]] = {}
    for name in DROP_METRICS:
        if name not in point_i:
            continue
        a, b = float(point_i[name][0]), float(point_e[name][0])
        drop = a - b
        low, high = percentile_interval(boot_i[name] - boot_e[name], ci) if n_boot else (None, None)
        out[name] = {
            "internal": a if np.isfinite(a) else None,
            "external": b if np.isfinite(b) else None,
            "drop": drop if np.isfinite(drop) else None,
            "low": low,
            "high": high,
        }
    return out
