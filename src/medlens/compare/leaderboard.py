"""The leaderboard: per model, mean and spread over seeds of the test metrics, plus cost.

Binary tasks report F1, sensitivity and specificity at the positive class, other tasks their
macro averages (metrics.json's ``f1_macro``, ``recall_macro``, ``specificity_macro``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlens.compare.members import MemberResult

METRICS = ("auc", "acc", "f1", "sensitivity", "specificity", "ece")
TITLES = {
    "auc": "AUC",
    "acc": "ACC",
    "f1": "F1",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ece": "ECE",
}
_MACRO_KEYS = {"f1": "f1_macro", "sensitivity": "recall_macro", "specificity": "specificity_macro"}


def metric_key(metric: str, task: str) -> str:
    """The metrics.json key of a leaderboard metric for this task."""
    return metric if task == "binary" else _MACRO_KEYS.get(metric, metric)


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, sample standard deviation (None for one value), min and max."""
    v = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)
    return {
        "mean": float(np.mean(v)),
        "std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
        "min": float(np.min(v)),
        "max": float(np.max(v)),
    }


def leaderboard_rows(
    results: Sequence[MemberResult], cost: dict[str, dict[str, Any]], task: str
) -> list[dict[str, Any]]:
    """One row per model, sorted by mean test AUC (best first)."""
    rows = []
    for model in dict.fromkeys(r.model for r in results):
        mine = [r for r in results if r.model == model]
        row: dict[str, Any] = {"model": model, "seeds": len(mine)}
        for metric in METRICS:
            s = spread([r.test[metric_key(metric, task)] for r in mine])
            row.update({f"{metric}_{k}": v for k, v in s.items()})
        if mine[0].cv_auc is not None:  # --folds: the cross-validated score ranks
            cv = spread([r.cv_auc for r in mine])
            row.update({f"cv_auc_{k}": v for k, v in cv.items()})
        t = spread([r.train_seconds for r in mine])
        row.update(train_s_mean=t["mean"], train_s_std=t["std"], epochs=mine[0].epochs)
        c = cost.get(model, {})
        row.update(
            parameters=c.get("parameters"),
            gflops=c.get("gflops"),
            latency_ms=c.get("latency_ms"),
            images_per_s=c.get("images_per_s"),
        )
        rows.append(row)
    key = "cv_auc_mean" if "cv_auc_mean" in rows[0] else "auc_mean"
    return sorted(rows, key=lambda r: -r[key] if math.isfinite(r[key]) else math.inf)


def add_paired(
    rows: list[dict[str, Any]], paired: Sequence[dict[str, Any]], seed_avg_auc: dict[str, float]
) -> None:
    """Put each model's seed-averaged AUC and paired test against the best model in its row."""
    by_model = {p["model"]: p for p in paired}
    for row in rows:
        p = by_model.get(row["model"], {})
        row["auc_seed_avg"] = seed_avg_auc.get(row["model"])
        row["diff_vs_best"] = p.get("difference")
        row["diff_low"], row["diff_high"] = p.get("low"), p.get("high")
        row["p_value"] = p.get("p_value")


CSV_FIELDS = (
    ["model", "seeds", "epochs"]
    + [f"{m}_{k}" for m in METRICS for k in ("mean", "std", "min", "max")]
    + ["auc_seed_avg", "parameters", "gflops", "train_s_mean", "train_s_std"]
    + ["latency_ms", "images_per_s", "diff_vs_best", "diff_low", "diff_high", "p_value"]
)


CV_FIELDS = ("cv_auc_mean", "cv_auc_std", "cv_auc_min", "cv_auc_max")


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        cross_validated = [k for k in CV_FIELDS if rows and k in rows[0]]  # --folds
        fields = [*CSV_FIELDS, *cross_validated]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def mean_std(row: dict[str, Any], metric: str, digits: int = 4) -> str:
    """``mean ± std`` of a metric (the mean alone with one seed)."""
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    sep = " ± " if digits > 3 else "±"
    return _num(mean, digits) + ("" if std is None else f"{sep}{_num(std, digits)}")


METHODS = {"delong": "DeLong"}


def method_text(method: str) -> str:
    """How a paired test is named in tables (``delong`` -> ``DeLong``)."""
    return METHODS.get(method, method)


def p_text(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def paired_text(p: dict[str, Any]) -> str:
    """``+0.0123 [-0.01, +0.03]`` for a paired difference and its interval."""
    return f"{p['difference']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}]"


def markdown(info: dict[str, Any], rows: Sequence[dict[str, Any]], paired: Sequence[dict]) -> str:
    """leaderboard.md: the settings, the leaderboard and the paired tests."""
    positive = info.get("positive_class")
    at = f"at the positive class ({positive})" if positive else "macro-averaged"
    lines = [
        f"# Leaderboard: {info['dataset']}",
        "",
        f"{len(rows)} models x {len(info['seeds'])} seeds (train.seed {info['seeds']}), "
        f"{info['epochs']} epochs each, one plan (`base_plan.yaml`) but for model.name and "
        f"train.seed. Test split, best checkpoint by val AUC; mean ± std over seeds "
        f"(min and max in leaderboard.csv). F1, sensitivity and specificity {at}. "
        f"Cost on {info['hardware']['cpu']} ({info['hardware']['latency_threads']} thread(s)), "
        "fp32 eager PyTorch: ms per image at batch 1, images/s at batch 64; training time is "
        "the time in training steps (curves.csv), without validation and evaluation.",
        "",
        "| model | "
        + " | ".join(TITLES[m] for m in METRICS)
        + " | params (M) | GFLOPs | train (s) | ms/image b1 | images/s b64 |",
        "|---" * (len(METRICS) + 6) + "|",
    ]
    for r in rows:
        params = "-" if r["parameters"] is None else f"{r['parameters'] / 1e6:.2f}"
        lines.append(
            f"| {r['model']} | "
            + " | ".join(mean_std(r, m) for m in METRICS)
            + f" | {params} | {_num(r['gflops'], 3)} | {_num(r['train_s_mean'], 1)}"
            f" | {_num(r['latency_ms'], 2)} | {_num(r['images_per_s'], 0)} |"
        )
    if info.get("folds"):
        lines += [
            "",
            f"Each run is a {info['folds']}-fold cross-validation ensemble (test metrics above: "
            "the ensemble's); ranked by cross-validated AUC (out-of-fold, train+val): "
            + ", ".join(f"{r['model']} {_num(r.get('cv_auc_mean'), 3)}" for r in rows)
            + ".",
        ]
    if paired and paired[0].get("split") == "out-of-fold":
        best = paired[0]["best"]
        lines += [
            "",
            f"## Paired tests against the best model ({best}, by cross-validated AUC)",
            "",
            "Same train+val cases; each model's out-of-fold probabilities averaged over its "
            f"seeds; {method_text(paired[0]['method'])}. The test split played no part in the "
            "choice.",
            "",
            f"| model | out-of-fold AUC | out-of-fold AUC {best} | difference | p-value |",
            "|---|---|---|---|---|",
        ]
        for p in paired:
            lines.append(
                f"| {p['model']} | {p['auc_b']:.4f} | {p['auc_a']:.4f} | {paired_text(p)} "
                f"| {p_text(p['p_value'])} |"
            )
        return "\n".join(lines) + "\n"
    if paired:
        best = paired[0]["best"]
        ci = paired[0]["ci"]
        lines += [
            "",
            f"## Paired tests against the best model ({best}, by mean test AUC)",
            "",
            "Same test cases; each model's test probabilities averaged over its seeds. "
            f"Difference = AUC({best}) - AUC(model) with its {ci:.0%} interval; "
            f"{method_text(paired[0]['method'])}. The best model was picked on these same "
            "test cases, so the p-values are optimistic.",
            "",
            f"| model | AUC (seed-averaged) | AUC {best} | difference [{ci:.0%} CI] | p-value "
            "| test |",
            "|---|---|---|---|---|---|",
        ]
        for p in paired:
            lines.append(
                f"| {p['model']} | {p['auc_b']:.4f} | {p['auc_a']:.4f} | {paired_text(p)} | "
                f"{p_text(p['p_value'])} | {method_text(p['method'])} |"
            )
    return "\n".join(lines) + "\n"
