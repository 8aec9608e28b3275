"""A model card in markdown (Mitchell et al., 2019): what the model is for, on what data it
was judged, how well (with intervals), and where it is known to fall short."""

from __future__ import annotations

from typing import Any

from medlens.config import positive_index
from medlens.evaluate.metrics import METRIC_LABELS
from medlens.evaluate.trust import fitted_on, section


def _ci(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    if entry.get("low") is None:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} ({entry['low']:.3f} to {entry['high']:.3f})"


def metric_title(key: str, plan) -> str:
    """A metric's display name; binary tasks name their positive class (class 1)."""
    title = METRIC_LABELS.get(key, key)
    if plan.data.task == "binary":
        name = plan.data.label_names[positive_index(plan)]
        title = title.replace("positive class", f"'{name}' positive")
    return title


def model_card(ctx: dict[str, Any]) -> str:
    """Markdown text from the same context the HTML report is built from."""
    plan, fp, trust, metrics = ctx["plan"], ctx["fingerprint"], ctx["trust"], ctx["metrics"]
    ci = trust["confidence_intervals"]
    pct = round(100 * ci["ci"])
    lines = [
        f"# Model card: {plan.model.name} on {fp['name']}",
        "",
        "## Intended use",
        f"- Task: {plan.data.task} classification of {fp['modality']} images into "
        f"{', '.join(repr(n) for n in plan.data.label_names)}.",
        "- Research use: a decision aid to be checked by a clinician, not a diagnosis. It has "
        "been evaluated only on the data below; other scanners, sites or populations need "
        "their own evaluation before use.",
        "",
        "## Data",
        f"- Source: `{plan.data.source}`; images {'x'.join(map(str, fp['image_shape']))}, "
        f"{fp['in_chans']} channel(s).",
        f"- Split sizes: train {fp['n_images']['train']}, val {fp['n_images']['val']}, "
        f"test {fp['n_images']['test']}.",
        f"- Smallest class: {fp['minority_fraction']:.1%} of train.",
        "",
        "## Model and training",
        f"- Architecture: {plan.model.name} (pretrained: {plan.model.pretrained}); "
        f"{plan.train.epochs} epochs, batch {plan.train.batch_size}, {plan.optim.name} "
        f"lr {plan.optim.lr:g}, loss {plan.loss.name}.",
        f"- Best checkpoint: epoch {metrics['checkpoint'].get('epoch', '?')}.",
        "",
        f"## Test metrics ({pct}% bootstrap CIs, {ci['n_boot']} resamples of {ci['resampled']})",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key, entry in ci["metrics"].items():
        lines.append(f"| {metric_title(key, plan)} | {_ci(entry)} |")
    cal = trust["calibration"]
    on = fitted_on(trust)
    lines += [
        "",
        "## Calibration",
        f"- Temperature scaling on {on}: T = {cal['temperature']:.3f}; test ECE "
        f"{cal['test']['before']['ece']:.3f} before, {cal['test']['after']['ece']:.3f} after; "
        f"Brier {cal['test']['before']['brier']:.3f} before, "
        f"{cal['test']['after']['brier']:.3f} after.",
    ]
    for op in section(trust, "operating_points") or []:
        t = op["test"]
        lines.append(
            f"- Operating point for {op['target']} >= {op['value']:g} on {on}: threshold "
            f"{op['threshold']:.3f}; on test sensitivity {_ci(t['sensitivity'])}, "
            f"specificity {_ci(t['specificity'])}."
        )
    c = section(trust, "conformal")
    if c is not None:
        lines.append(
            f"- Conformal sets ({c['method'].upper()}, target {c['target_coverage']:.0%}): test "
            f"coverage {c['test']['coverage']:.1%}, mean set size "
            f"{c['test']['mean_set_size']:.2f}."
        )
    lines += ["", "## Limits and caveats"]
    lines += [f"- {item}" for item in ctx["limits"]] or ["- None recorded."]
    return "\n".join(lines) + "\n"
