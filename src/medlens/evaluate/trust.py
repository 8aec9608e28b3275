"""Everything that qualifies a test result, from validation and test logits: calibration,
confidence intervals, operating points, conformal sets and subgroups. Written to trust.json.

Torch-free like the rest of ``evaluate/``: it works on logits a model already produced, and
takes its settings as plain arguments (the caller reads them from the plan).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 400)
>>> logits = np.stack([-y - rng.normal(0, 1, 400), y + rng.normal(0, 1, 400)], axis=1)
>>> t = trust_analysis(logits[:200], y[:200], logits[200:], y[200:], task="binary",
...                    label_names=["normal", "finding"], n_boot=100, conformal_method="lac")
>>> sorted(t)
['calibration', 'confidence_intervals', 'conformal', 'operating_points', 'selective']
>>> t["conformal"]["target_coverage"], t["operating_points"][0]["positive_class"]
(0.9, 'finding')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from medlens.errors import ConfigError
from medlens.evaluate.bootstrap import bootstrap_metrics
from medlens.evaluate.calibration import calibration_summary, probabilities
from medlens.evaluate.conformal import (
    ConformalPredictor,
    case_keys,
    coverage_report,
    random_split_coverage,
)
from medlens.evaluate.operating import operating_point
from medlens.evaluate.selective import selective_curve
from medlens.evaluate.subgroups import subgroup_columns, subgroup_metrics


def conformal_section(
    val_p: np.ndarray,
    val_y: np.ndarray,
    test_p: np.ndarray,
    test_y: np.ndarray,
    *,
    label_names: list[str],
    alpha: float = 0.1,
    method: str = "aps",
    seed: int = 0,
    val_keys: np.ndarray | None = None,
    test_keys: np.ndarray | None = None,
) -> dict[str, Any]:
    """Sets fitted on val and measured on test, plus the exchangeable (random-split) check.

    ``val_keys``/``test_keys``: one key per case (:func:`~medlens.evaluate.conformal.image_keys`
    of its images), needed by the randomised methods APS and RAPS.
    """
    cp = ConformalPredictor.fit(val_p, val_y, alpha=alpha, method=method, seed=seed, keys=val_keys)
    sets = cp.predict_sets(test_p, keys=test_keys)
    report = coverage_report(sets, test_y, label_names)
    pooled_p, pooled_y = np.concatenate([val_p, test_p]), np.concatenate([val_y, test_y])
    pooled_keys = None if val_keys is None else np.concatenate([val_keys, test_keys])
    return {
        **cp.to_dict(),
        "target_coverage": 1 - alpha,
        "test": report,
        "random_splits": random_split_coverage(
            pooled_p, pooled_y, alpha=alpha, method=method, keys=pooled_keys
        ),
    }


def section(trust: dict[str, Any], key: str) -> Any:
    """A section of trust.json, or None when it is absent or was skipped."""
    value = trust.get(key)
    return None if value is None or (isinstance(value, dict) and "skipped" in value) else value


def fitted_on(trust: dict[str, Any]) -> str:
    """What calibration, operating points and conformal sets were fitted on: ``"val"``, or for
    a cross-validation ``"624 out-of-fold predictions"`` (trust.json before 2026-12: val)."""
    return trust.get("fitted_on", "val")


def _skippable(section: Callable[[], Any]) -> Any:
    """A section's result, or ``{"skipped": why}`` when the data is too small for it (e.g. a
    validation split too small for conformal sets): the rest of the analysis still stands."""
    try:
        return section()
    except ConfigError as exc:
        return {"skipped": exc.message}


def trust_analysis(
    val_logits: np.ndarray,
    val_y: np.ndarray,
    test_logits: np.ndarray,
    test_y: np.ndarray,
    *,
    task: str,
    label_names: list[str],
    positive: int = 1,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    conformal_alpha: float = 0.1,
    conformal_method: str = "aps",
    target_sensitivity: float = 0.9,
    target_specificity: float = 0.9,
    subgroups: list[str] | None = None,
    test_patients: np.ndarray | None = None,
    test_meta: pd.DataFrame | None = None,
    val_keys: np.ndarray | None = None,
    test_keys: np.ndarray | None = None,
) -> dict[str, Any]:
    """The whole analysis as one JSON-serialisable dict (see the module docstring).

    ``positive``: the class binary metrics and operating points call positive; ``n_boot``,
    ``ci``, ``seed``: the bootstrap; ``conformal_alpha``/``conformal_method``: the sets (APS
    and RAPS need ``val_keys``/``test_keys``, one key per case); ``target_*``: the binary
    operating points; ``subgroups``: metadata columns of ``test_meta`` to compare (None:
    sex/age/site-like columns); ``test_patients``: resample patients, not images.
    """
    if task != "multi-label":  # missing keys are the caller's mistake, not a section to skip
        case_keys(val_keys, len(val_y), conformal_method)
        case_keys(test_keys, len(test_y), conformal_method)
    calib = calibration_summary(val_logits, val_y, test_logits, test_y, task)
    t = calib["temperature"]
    val_p = probabilities(val_logits, task, t)
    test_p = probabilities(test_logits, task, t)
    boot = {"n_boot": n_boot, "ci": ci, "seed": seed}
    out: dict[str, Any] = {
        "calibration": calib,
        "confidence_intervals": {
            **boot,
            "resampled": "patients" if test_patients is not None else "images",
            "metrics": bootstrap_metrics(
                test_y, probabilities(test_logits, task), task, groups=test_patients,
                **boot, positive=positive,
            ),
            "calibrated": {
                k: v
                for k, v in bootstrap_metrics(
                    test_y, test_p, task, groups=test_patients, **boot
                ).items()
                if k in ("ece", "brier")
            },
        },
    }  # fmt: skip
    if task == "binary":
        out["operating_points"] = _skippable(lambda: [
            {"positive_class": label_names[positive]} | operating_point(
                (val_y == positive).astype(int), val_p[:, positive],
                (test_y == positive).astype(int), test_p[:, positive], target=target,
                value=value, groups=test_patients, **boot,
            )
            for target, value in (
                ("sensitivity", target_sensitivity),
                ("specificity", target_specificity),
            )
        ])  # fmt: skip
    if task != "multi-label":
        out["conformal"] = _skippable(
            lambda: conformal_section(
                val_p, val_y, test_p, test_y, label_names=label_names, alpha=conformal_alpha,
                method=conformal_method, seed=seed, val_keys=val_keys, test_keys=test_keys,
            )
        )  # fmt: skip
        out["selective"] = selective_curve(test_y, test_p, task)
    if test_meta is not None and subgroup_columns(test_meta, subgroups):
        out["subgroups"] = subgroup_metrics(
            test_y, test_p, task, test_meta, columns=subgroups, patients=test_patients,
            **boot, positive=positive,
        )  # fmt: skip
    return out
