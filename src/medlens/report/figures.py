"""The report's plots, each returned as a PNG ``data:`` URI so the HTML file stands alone."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot state, no display needed
from sklearn.metrics import auc, precision_recall_curve, roc_curve

_SIZE = (4.6, 3.6)


def data_uri(fig: Figure) -> str:
    """Render a figure to a base64 PNG data URI and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def png_file_uri(path: Path) -> str:
    """A PNG file (written by another stage) as a base64 ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _one_vs_rest(y: np.ndarray, probs: np.ndarray, task: str) -> list[tuple[int, np.ndarray]]:
    """(class index, 0/1 truth) for each curve to draw: the positive class only for binary."""
    k = probs.shape[1]
    if task == "multi-label":
        return [(j, y[:, j]) for j in range(k)]
    classes = [1] if task == "binary" else range(k)
    return [(j, (y == j).astype(int)) for j in classes]


def roc_figure(y: np.ndarray, probs: np.ndarray, task: str, names: list[str]) -> str:
    fig = Figure(figsize=_SIZE)
    ax = fig.subplots()
    for j, truth in _one_vs_rest(y, probs, task):
        if truth.min() == truth.max():
            continue
        fpr, tpr, _ = roc_curve(truth, probs[:, j])
        ax.plot(fpr, tpr, lw=1.5, label=f"{names[j]} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (test)")
    ax.legend(fontsize=7, loc="lower right")
    return data_uri(fig)


def pr_figure(y: np.ndarray, probs: np.ndarray, task: str, names: list[str]) -> str:
    fig = Figure(figsize=_SIZE)
    ax = fig.subplots()
    for j, truth in _one_vs_rest(y, probs, task):
        if truth.min() == truth.max():
            continue
        precision, recall, _ = precision_recall_curve(truth, probs[:, j])
        ax.plot(recall, precision, lw=1.5, label=f"{names[j]} (prevalence {truth.mean():.2f})")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    return data_uri(fig)


def confusion_figure(matrix: list, names: list[str], task: str) -> str:
    cm = np.asarray(matrix)
    if task == "multi-label":  # (K, 2, 2): draw the per-label TP/FN/FP/TN as a table-like grid
        cm = cm.reshape(len(names), 4)
        labels_x, labels_y = ["TN", "FP", "FN", "TP"], names
    else:
        labels_x = labels_y = names
    fig = Figure(figsize=(max(3.6, 0.5 * len(labels_x) + 2.5),) * 2)
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(
            j,
            i,
            str(v),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if v > cm.max() / 2 else "black",
        )
    ax.set_xticks(range(len(labels_x)), labels_x, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels_y)), labels_y, fontsize=7)
    ax.set(
        xlabel="predicted" if task != "multi-label" else "",
        ylabel="true",
        title="Confusion matrix (test)",
    )
    return data_uri(fig)


def reliability_figure(calibration: dict[str, Any]) -> str:
    """Reliability diagrams before and after temperature scaling: per confidence bin the
    accuracy (bars) and its gap to the mean confidence (hatched), titled with the ECE of the
    same bins (:func:`medlens.evaluate.calibration.reliability` computed both)."""
    fig = Figure(figsize=(8.4, 3.6))
    axes = fig.subplots(1, 2, sharey=True)
    t = calibration["temperature"]
    for ax, key in zip(axes, ("before", "after"), strict=True):
        rel = calibration["test"][key]["reliability"]
        edges = np.array(rel["edges"])
        centers = (edges[:-1] + edges[1:]) / 2
        width = edges[1] - edges[0]
        acc = np.array([np.nan if a is None else a for a in rel["accuracy"]])
        conf = np.array([np.nan if c is None else c for c in rel["confidence"]])
        ax.bar(centers, acc, width=width, edgecolor="k", alpha=0.7, label="accuracy")
        ax.bar(centers, conf - acc, bottom=acc, width=width, fill=False, hatch="//",
               edgecolor="tab:red", lw=0.6, label="gap to confidence")  # fmt: skip
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        ece = calibration["test"][key]["ece"]
        title = "before" if key == "before" else f"after (T = {t:.2f})"
        ax.set(title=f"{title}: ECE {ece:.3f}", xlabel="confidence", xlim=(0, 1), ylim=(0, 1))
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=7)
    return data_uri(fig)


def curves_figure(rows: list[dict[str, str]]) -> str:
    epoch = [int(r["epoch"]) for r in rows]
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    ax.plot(epoch, [float(r["train_loss"]) for r in rows], label="train loss")
    ax.plot(epoch, [float(r["val_nll"]) for r in rows], label="val NLL")
    ax.set(xlabel="epoch", ylabel="loss", title="Training curves")
    ax2 = ax.twinx()
    ax2.plot(epoch, [float(r["val_auc"]) for r in rows], c="tab:green", label="val AUC")
    ax2.plot(epoch, [float(r["val_acc"]) for r in rows], c="tab:red", label="val ACC")
    ax2.set_ylabel("AUC / ACC")
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="center right")
    return data_uri(fig)


def selective_figure(curves: dict[str, dict[str, Any]]) -> str | None:
    """Accuracy against the share of cases kept, one line per confidence score."""
    if not curves:
        return None
    fig = Figure(figsize=_SIZE)
    ax = fig.subplots()
    for name, c in curves.items():
        ax.plot(
            c["coverage"], c["accuracy"], marker="o", ms=3, label=f"{name} (AURC {c['aurc']:.3f})"
        )
    ax.set(xlabel="share of cases the model keeps", ylabel="accuracy on kept cases",
           title="Selective prediction")  # fmt: skip
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    return data_uri(fig)


def robustness_figure(rows: list[dict[str, Any]]) -> str:
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.subplots()
    clean = next(r for r in rows if r["corruption"] == "clean")
    for name in dict.fromkeys(r["corruption"] for r in rows if r["corruption"] != "clean"):
        pts = [(0, clean["auc"])] + [
            (r["severity"], r["auc"]) for r in rows if r["corruption"] == name
        ]
        ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=name)
    ax.set(xlabel="severity", ylabel="test AUC", title="Robustness to corruptions")
    ax.legend(fontsize=7)
    return data_uri(fig)
