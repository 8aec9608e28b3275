"""Everything that qualifies a test result, from validation and test logits: calibration,
confidence intervals, operating points, conformal sets and subgroups. Written to trust.json.

Torch-free like the rest of ``evaluate/``: it works on logits a model already produced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from medlens.analyse.uncertainty import selective_curve
from medlens.config import Plan
from medlens.errors import ConfigError
from medlens.evaluate.bootstrap import bootstrap_metrics
from medlens.evaluate.calibration import calibration_summary, probabilities
from medlens.evaluate.conformal import ConformalPredictor, coverage_report, random_split_coverage
from medlens.evaluate.operating import operating_point
from medlens.evaluate.subgroups import subgroup_columns, subgroup_metrics


def conformal_section(
    val_p: np.ndarray, val_y: np.ndarray, test_p: np.ndarray, test_y: np.ndarray, plan: Plan
) -> dict[str, Any]:
    """Sets fitted on val and measured on test, plus the exchangeable (random-split) check."""
    ev = plan.evaluate
    cp = ConformalPredictor.fit(
        val_p, val_y, alpha=ev.conformal_alpha, method=ev.conformal_method, seed=plan.train.seed
    )
    sets = cp.predict_sets(test_p)
    report = coverage_report(sets, test_y, plan.data.label_names)
    pooled_p, pooled_y = np.concatenate([val_p, test_p]), np.concatenate([val_y, test_y])
    return {
        **cp.to_dict(),
        "target_coverage": 1 - ev.conformal_alpha,
        "test": report,
        "random_splits": random_split_coverage(
            pooled_p, pooled_y, alpha=ev.conformal_alpha, method=ev.conformal_method
        ),
    }


def positive_index(plan: Plan) -> int:
    """Index of the class that binary metrics call positive: ``evaluate.positive_class``, or 1."""
    name = plan.evaluate.positive_class
    return 1 if name is None else plan.data.label_names.index(name)


def section(trust: dict[str, Any], key: str) -> Any:
    """A section of trust.json, or None when it is absent or was skipped."""
    value = trust.get(key)
    return None if value is None or (isinstance(value, dict) and "skipped" in value) else value


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
    plan: Plan,
    *,
    test_patients: np.ndarray | None = None,
    test_meta: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The whole analysis as one JSON-serialisable dict (see the module docstring)."""
    task, ev, seed = plan.data.task, plan.evaluate, plan.train.seed
    pos = positive_index(plan)
    calib = calibration_summary(val_logits, val_y, test_logits, test_y, task)
    t = calib["temperature"]
    val_p = probabilities(val_logits, task, t)
    test_p = probabilities(test_logits, task, t)
    boot = {"n_boot": ev.bootstrap, "ci": ev.ci, "seed": seed}
    out: dict[str, Any] = {
        "calibration": calib,
        "confidence_intervals": {
            **boot,
            "resampled": "patients" if test_patients is not None else "images",
            "metrics": bootstrap_metrics(
                test_y, probabilities(test_logits, task), task, groups=test_patients,
                n_boot=ev.bootstrap, ci=ev.ci, seed=seed, positive=pos,
            ),
            "calibrated": {
                k: v
                for k, v in bootstrap_metrics(
                    test_y, test_p, task, groups=test_patients,
                    n_boot=ev.bootstrap, ci=ev.ci, seed=seed,
                ).items()
                if k in ("ece", "brier")
            },
        },
    }  # fmt: skip
    if task == "binary":
        out["operating_points"] = _skippable(lambda: [
            {"positive_class": plan.data.label_names[pos]} | operating_point(
                (val_y == pos).astype(int), val_p[:, pos], (test_y == pos).astype(int),
                test_p[:, pos], target=target, value=value,
                groups=test_patients, n_boot=ev.bootstrap, ci=ev.ci, seed=seed,
            )
            for target, value in (
                ("sensitivity", ev.target_sensitivity),
                ("specificity", ev.target_specificity),
            )
        ])  # fmt: skip
    if task != "multi-label":
        out["conformal"] = _skippable(lambda: conformal_section(val_p, val_y, test_p, test_y, plan))
        out["selective"] = selective_curve(test_y, test_p, task)
    if test_meta is not None and subgroup_columns(test_meta, ev.subgroups):
        out["subgroups"] = subgroup_metrics(
            test_y, test_p, task, test_meta, columns=ev.subgroups, patients=test_patients,
            n_boot=ev.bootstrap, ci=ev.ci, seed=seed, positive=pos,
        )  # fmt: skip
    return out
