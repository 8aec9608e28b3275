"""Metrics per metadata group (sex, age band, site, ...) with CIs, and the largest gap.

A model that is good on average can fail one group; this is where that shows. Groups come
from a manifest's extra columns. Numeric columns with many values are cut into bands (decades
for ages, quartiles otherwise); groups smaller than ``min_cases`` are listed but not scored.

>>> import pandas as pd
>>> meta = pd.DataFrame({"sex": ["F", "M"], "age": [34, 71], "note": ["a", "b"]})
>>> subgroup_columns(meta)
['sex', 'age']
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from medlens.errors import ConfigError
from medlens.evaluate.bootstrap import bootstrap_metrics

_LIKELY = re.compile(
    r"sex|gender|age|site|hospital|institution|cent(er|re)|scanner|manufacturer|vendor|"
    r"device|view|race|ethnic|position|machine",
    re.IGNORECASE,
)
_MAX_GROUPS = 12
SCORED = ("auc", "acc", "sensitivity", "specificity", "f1_macro", "ece")


def subgroup_columns(meta: pd.DataFrame, requested: list[str] | None = None) -> list[str]:
    """The columns to compare: ``requested``, or those named like sex/age/site with few values."""
    if requested:
        missing = [c for c in requested if c not in meta.columns]
        if missing:
            raise ConfigError(
                f"subgroup column(s) {', '.join(missing)} not in the manifest",
                hint=f"columns there: {', '.join(map(str, meta.columns)) or 'none'}",
            )
        return list(requested)
    out = []
    for col in meta.columns:
        values = _as_numbers(meta[col].dropna())
        if not _LIKELY.search(str(col)) or values.empty:
            continue
        if pd.api.types.is_numeric_dtype(values) or values.nunique() <= _MAX_GROUPS:
            out.append(str(col))
    return out


def _as_numbers(values: pd.Series) -> pd.Series:
    """The column as numbers when every present value is one (manifests are read as text)."""
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers if numbers.notna().sum() == values.notna().sum() else values


def group_labels(values: pd.Series) -> np.ndarray:
    """One group name per case; numeric columns with many values become bands."""
    values = _as_numbers(values)
    numeric = pd.api.types.is_numeric_dtype(values)
    if numeric and "age" in str(values.name).lower():
        lo = (values // 10 * 10).astype("Int64")
        labels = lo.astype(str) + "-" + (lo + 9).astype(str)
        return labels.where(values.notna(), "missing").to_numpy(dtype=str)
    if numeric and values.nunique() > _MAX_GROUPS:
        labels = pd.qcut(values, 4, duplicates="drop").astype(str)
        return labels.where(values.notna(), "missing").to_numpy(dtype=str)
    return values.astype(str).where(values.notna(), "missing").to_numpy(dtype=str)


def subgroup_metrics(
    y: np.ndarray,
    probs: np.ndarray,
    task: str,
    meta: pd.DataFrame,
    *,
    columns: list[str] | None = None,
    patients: np.ndarray | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    min_cases: int = 10,
    positive: int = 1,
) -> list[dict[str, Any]]:
    """Per column: each group's size and metrics with CIs, and the largest gap per metric."""
    if len(meta) != len(y):
        raise ConfigError(f"{len(meta)} metadata rows for {len(y)} cases")
    out = []
    for col in subgroup_columns(meta, columns):
        labels = group_labels(meta[col].reset_index(drop=True))
        rows = []
        for group in sorted(set(labels)):
            mask = labels == group
            row: dict[str, Any] = {"group": group, "n": int(mask.sum())}
            if mask.sum() >= min_cases:
                ci_all = bootstrap_metrics(
                    y[mask],
                    probs[mask],
                    task,
                    groups=None if patients is None else patients[mask],
                    n_boot=n_boot,
                    ci=ci,
                    seed=seed,
                    positive=positive,
                )
                row["metrics"] = {k: ci_all[k] for k in SCORED if k in ci_all}
            rows.append(row)
        out.append({"column": col, "groups": rows, "largest_gap": _largest_gaps(rows)})
    return out


def _largest_gaps(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    gaps = {}
    scored = [r for r in rows if "metrics" in r]
    for name in SCORED:
        vals = [(r["metrics"][name]["value"], r["group"]) for r in scored if name in r["metrics"]]
        vals = [(v, g) for v, g in vals if v is not None]
        if len(vals) >= 2:
            (lo, g_lo), (hi, g_hi) = min(vals), max(vals)
            gaps[name] = {"gap": hi - lo, "lowest": g_lo, "highest": g_hi}
    return gaps
