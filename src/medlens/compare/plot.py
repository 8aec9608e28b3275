"""leaderboard.png: test AUC (mean and std over seeds) against CPU latency and parameters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def plot_leaderboard(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Two panels, one point per model with std error bars; written without pyplot."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = (
        ("latency_ms", 1.0, "CPU latency, ms per image (batch 1)"),
        ("parameters", 1e6, "parameters (millions)"),
    )
    for ax, (key, scale, label) in zip(axes, panels, strict=True):
        for i, r in enumerate(rows):
            if r.get(key) is None:
                continue
            x = r[key] / scale
            ax.errorbar(
                x,
                r["auc_mean"],
                yerr=r["auc_std"] or 0.0,
                fmt="o",
                capsize=4,
                color=f"C{i % 10}",
                label=r["model"],
            )
            ax.annotate(r["model"], (x, r["auc_mean"]), textcoords="offset points", xytext=(6, 4))
        ax.set_xscale("log")
        ax.margins(x=0.2)  # room for the names of the outermost models
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("test AUC (mean ± std over seeds)")
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
