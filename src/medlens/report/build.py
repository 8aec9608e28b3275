"""``medlens report``: one self-contained HTML file and a markdown model card for a run.

Everything already computed is read from the run directory (metrics.json, trust.json,
predictions.csv, curves.csv); what is not (the robustness table, the Grad-CAM gallery) is
computed here from the best checkpoint, and the robustness table is kept in robustness.json
so that a second report is quick.

>>> build_report("runs/breastmnist-small_cnn")  # doctest: +SKIP
PosixPath('runs/breastmnist-small_cnn/report.html')
"""

from __future__ import annotations

import csv
import datetime
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from medlens.config import load_plan
from medlens.errors import MedlensError
from medlens.evaluate.metrics import METRIC_LABELS
from medlens.evaluate.trust import section
from medlens.report import figures
from medlens.report.model_card import metric_title, model_card
from medlens.rundir import RunDir, write_json

_HEADLINE = ("auc", "acc", "sensitivity", "specificity", "f1_macro", "ece")
_NAV = [
    ("summary", "Summary"),
    ("metrics", "Metrics"),
    ("curves-roc", "ROC / PR"),
    ("confusion", "Confusion"),
    ("calibration", "Calibration"),
    ("operating", "Operating points"),
    ("conformal", "Conformal"),
    ("selective", "Selective"),
    ("training", "Training"),
    ("gallery", "Explanations"),
    ("robustness", "Robustness"),
    ("subgroups", "Subgroups"),
    ("data", "Data"),
]


def _fmt(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ci_text(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("low") is None:
        return "n/a"
    text = f"{entry['low']:.3f} to {entry['high']:.3f}"
    return text if entry.get("estimate_in_interval", True) else text + " (biased: see note)"


def read_test_predictions(run: RunDir, names: list[str], task: str):
    """(labels, probabilities) of the test split from predictions.csv."""
    with run.predictions.open() as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    probs = np.array([[float(r[f"p_{n}"]) for n in names] for r in rows])
    if task == "multi-label":
        y = np.array([[n in r["label"].split(";") for n in names] for r in rows], dtype=int)
    else:
        y = np.array([names.index(r["label"]) for r in rows])
    return y, probs


def _read_curves(run: RunDir) -> list[dict[str, str]]:
    if not run.curves.is_file():
        return []
    with run.curves.open() as f:
        return list(csv.DictReader(f))


def robustness_rows(run: RunDir, model, plan, ds, device, max_cases: int, seed: int) -> dict:
    """Corruption table on (a seeded sample of at most ``max_cases`` of) the test split."""
    from medlens.evaluate.robustness import corruption_table

    test = ds.splits["test"]
    idx = np.arange(len(test))
    if len(idx) > max_cases:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_cases, replace=False))
    rows = corruption_table(model, test.images[idx], test.labels[idx], plan, device, seed=seed)
    return {"n_cases": len(idx), "of": len(test), "seed": seed, "rows": rows}


def uncertainty_rows(model, plan, ds, device, seed: int = 0) -> dict[str, Any]:
    """Selective-prediction curves from test-time augmentation and MC dropout on test.

    Confidence is the negative predictive entropy of the mean of the passes; MC dropout is
    skipped (with the reason) for a model without dropout.
    """
    from medlens.errors import ModelError
    from medlens.evaluate.metrics import medmnist_acc, medmnist_auc
    from medlens.evaluate.selective import selective_curve
    from medlens.evaluate.uncertainty import (
        mc_dropout_probabilities,
        mutual_information,
        predictive_entropy,
        tta_probabilities,
    )

    test, task = ds.splits["test"], plan.data.task
    out: dict[str, Any] = {}
    samplers = {
        "tta": lambda: tta_probabilities(model, test.images, plan, device, n=8, seed=seed),
        "mc_dropout": lambda: mc_dropout_probabilities(
            model, test.images, plan, device, n=20, seed=seed
        ),
    }
    for name, sample in samplers.items():
        try:
            samples = sample()
        except ModelError as exc:
            out[name] = {"skipped": f"{exc.message} ({exc.hint})" if exc.hint else exc.message}
            continue
        mean = samples.mean(axis=0)
        try:
            auc: float | None = medmnist_auc(test.labels, mean, task)
        except MedlensError:
            auc = None
        out[name] = {
            "passes": int(samples.shape[0]),
            "auc": auc,
            "acc": medmnist_acc(test.labels, mean, task),
            "mean_mutual_information": float(mutual_information(samples, task).mean()),
            "selective": selective_curve(
                test.labels, mean, task, confidence=-predictive_entropy(mean, task)
            ),
        }
    return out


def gallery_items(model, plan, ds, device, per_group: int) -> tuple[str, list[dict]]:
    """Saliency overlays of the most confident right and wrong test cases."""
    import torch

    from medlens.evaluate.calibration import probabilities
    from medlens.explain.overlay import overlay_image
    from medlens.explain.saliency import default_method, saliency_maps
    from medlens.inference import predict_logits
    from medlens.train.loop import device_arrays

    test = ds.splits["test"]
    task, names = plan.data.task, plan.data.label_names
    data = device_arrays(plan, test.images, test.labels, device)
    logits, labels, _ = predict_logits(model, data, plan.train.eval_batch_size, plan.train.amp)
    probs = probabilities(logits, task)
    pred = probs.argmax(1)
    conf = probs.max(1)
    truth = labels.argmax(1) if task == "multi-label" else labels.ravel()
    right = truth == pred if task != "multi-label" else labels[np.arange(len(pred)), pred] > 0
    method = default_method(model)
    groups = []
    for title, mask in (("Correct, most confident", right), ("Wrong, most confident", ~right)):
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(-conf[idx], kind="stable")][:per_group]
        items = []
        if len(idx):
            x = data.prepare(torch.as_tensor(test.images[idx]).to(device))
            maps = saliency_maps(model, x, torch.as_tensor(pred[idx]), method=method).numpy()
            for j, i in enumerate(idx):
                rgb = overlay_image(test.images[i], maps[j])
                caption = f"#{i}: {names[pred[i]]} ({conf[i]:.2f})" + (
                    "" if task == "multi-label" else f", truth {names[truth[i]]}"
                )
                items.append({"uri": figures.image_uri(rgb), "caption": caption})
        groups.append({"title": title, "cases": items})
    return method, groups


def _limits(ctx: dict[str, Any]) -> list[str]:
    """Caveats read off the numbers, for the model card and the summary."""
    trust, out = ctx["trust"], []
    n_test = ctx["metrics"]["test"]["n"]
    auc = trust["confidence_intervals"]["metrics"]["auc"]
    if auc.get("low") is not None and auc["high"] - auc["low"] > 0.1:
        out.append(
            f"The test set is small ({n_test} cases): the AUC interval spans "
            f"{auc['high'] - auc['low']:.2f}."
        )
    if not trust["confidence_intervals"]["metrics"]["ece"].get("estimate_in_interval", True):
        out.append("ECE is biased upwards on this few cases; its interval is indicative only.")
    c = section(trust, "conformal")
    if c and abs(c["test"]["coverage"] - c["target_coverage"]) > 0.03:
        out.append(
            f"Conformal coverage on test ({c['test']['coverage']:.1%}) is off its target "
            f"({c['target_coverage']:.0%}) while random val/test halves give "
            f"{c['random_splits']['mean_coverage']:.1%}: val and test differ in distribution."
        )
    for col in trust.get("subgroups", []):
        gap = col["largest_gap"].get("auc")
        if gap and gap["gap"] > 0.05:
            out.append(
                f"AUC differs by {gap['gap']:.3f} across {col['column']} "
                f"(lowest: {gap['lowest']}, highest: {gap['highest']})."
            )
    rob = ctx.get("robustness")
    if rob:
        worst = max(
            (r for r in rob["rows"] if r["severity"] == 3 and r["auc_drop"] is not None),
            key=lambda r: r["auc_drop"],
            default=None,
        )
        if worst and worst["auc_drop"] > 0.05:
            out.append(
                f"Sensitive to {worst['corruption'].replace('_', ' ')}: AUC drops by "
                f"{worst['auc_drop']:.3f} at severity 3."
            )
    if ctx["plan"].train.device == "cpu" or ctx["env"].get("device", "").startswith("cpu"):
        out.append("Trained with the short CPU recipe; a GPU plan trains a larger model longer.")
    return out


def _context(
    run: RunDir,
    robustness: bool,
    uncertainty: bool,
    gallery: int,
    data_dir: str | None,
    refresh: bool,
):
    from medlens.api import _load_for_plan, _load_model, evaluate_run
    from medlens.train.device import resolve_device

    run.require_trained()
    plan = load_plan(run.plan)
    needs_model = robustness or uncertainty or gallery > 0
    ds = _load_for_plan(plan, data_dir, download=False) if needs_model or refresh else None
    if refresh or not run.trust.is_file():
        evaluate_run(run, ds=ds)
    ctx: dict[str, Any] = {
        "plan": plan,
        "fingerprint": json.loads(run.fingerprint.read_text()),
        "metrics": json.loads(run.metrics.read_text()),
        "trust": json.loads(run.trust.read_text()),
        "env": json.loads(run.env.read_text()) if run.env.is_file() else {},
        "curves": _read_curves(run),
        "robustness": None,
        "uncertainty": None,
        "gallery": (None, []),
        "gallery_error": None,
    }
    if not needs_model:
        return ctx
    device = resolve_device(plan.train.device)
    model, _ = _load_model(run, plan, device)
    rob_path = run.root / "robustness.json"
    if robustness:
        if rob_path.is_file() and not refresh:
            ctx["robustness"] = json.loads(rob_path.read_text())
        else:
            ctx["robustness"] = robustness_rows(run, model, plan, ds, device, 2000, 0)
            write_json(rob_path, ctx["robustness"])
    if uncertainty:
        unc_path = run.root / "uncertainty.json"
        if unc_path.is_file() and not refresh:
            ctx["uncertainty"] = json.loads(unc_path.read_text())
        else:
            ctx["uncertainty"] = uncertainty_rows(model, plan, ds, device, plan.train.seed)
            write_json(unc_path, ctx["uncertainty"])
    if gallery > 0:
        try:
            ctx["gallery"] = gallery_items(model, plan, ds, device, gallery)
        except MedlensError as exc:  # e.g. a model no explanation method fits
            ctx["gallery_error"] = f"No explanations: {exc.message}"
    return ctx


def _page_values(ctx: dict[str, Any]) -> dict[str, Any]:
    plan, trust, metrics, fp = ctx["plan"], ctx["trust"], ctx["metrics"], ctx["fingerprint"]
    names, task = plan.data.label_names, plan.data.task
    ci = trust["confidence_intervals"]
    cis = ci["metrics"]
    y, probs = read_test_predictions(RunDir(ctx["root"]), names, task)
    fig = {
        "roc": figures.roc_figure(y, probs, task, names),
        "pr": figures.pr_figure(y, probs, task, names),
        "confusion": figures.confusion_figure(metrics["test"]["confusion_matrix"], names, task),
        "reliability": figures.reliability_figure(trust["calibration"]),
        "curves": figures.curves_figure(ctx["curves"]) if ctx["curves"] else None,
        "selective": figures.selective_figure(_selective_curves(trust, ctx["uncertainty"])),
        "robustness": None,
    }
    scalar = [k for k in METRIC_LABELS if k in metrics["test"] and k != "n"]
    cal = trust["calibration"]
    values: dict[str, Any] = {
        "title": f"{fp['name']}: {plan.model.name}",
        "subtitle": f"{plan.data.task}, {fp['modality']}, test n = {metrics['test']['n']}",
        "nav": _NAV,
        "ci_pct": round(100 * ci["ci"]),
        "ci_note": f"bias-corrected percentile bootstrap, {ci['n_boot']} resamples of "
        f"{ci['resampled']}, seed {ci['seed']}.",
        "summary": " ".join(ctx["limits"]) or "No caveats were raised by the numbers.",
        "headline": [
            {
                "name": METRIC_LABELS.get(k, k),
                "value": _fmt(cis[k]["value"]),
                "ci": _ci_text(cis[k]),
            }
            for k in _HEADLINE
            if k in cis
        ],
        "metric_rows": [
            {
                "name": metric_title(k, plan),
                "val": _fmt(metrics["val"].get(k)),
                "test": _fmt(metrics["test"].get(k)),
                "ci": _ci_text(cis.get(k)),
            }
            for k in scalar
        ],
        "per_class": [
            {k: (_fmt(v) if isinstance(v, float) else v) for k, v in c.items()}
            for c in metrics["test"]["per_class"]
        ],
        "calibration": {
            "method": cal["method"],
            "t": _fmt(cal["temperature"]),
            "rows": [
                {
                    "name": n,
                    "before": _fmt(cal["test"]["before"][n]),
                    "after": _fmt(cal["test"]["after"][n]),
                }
                for n in ("ece", "mce", "brier", "nll")
            ],
        },
        "operating": [
            {
                "target": f"{op['target']} >= {op['value']:g}",
                "threshold": _fmt(op["threshold"]),
                **{k: f"{_fmt(v['value'])} ({_ci_text(v)})" for k, v in op["test"].items()},
            }
            for op in section(trust, "operating_points") or []
        ],
        "conformal": _conformal_values(trust.get("conformal")),
        "skipped": [
            f"{k.replace('_', ' ')}: {v['skipped']}"
            for k, v in trust.items()
            if isinstance(v, dict) and "skipped" in v
        ],
        "uncertainty": _uncertainty_values(trust, ctx["uncertainty"]),
        "selective_at": [
            (f"{float(c):.0%}", _fmt(a))
            for c, a in trust.get("selective", {}).get("accuracy_at", {}).items()
        ],
        "gallery_method": ctx["gallery"][0] or "not computed",
        "gallery": ctx["gallery"][1],
        "gallery_error": ctx["gallery_error"],
        "robustness": None,
        "subgroups": _subgroup_values(trust.get("subgroups", [])),
        "data_rows": [
            ("source", plan.data.source),
            ("images", f"{'x'.join(map(str, fp['image_shape']))}, {fp['in_chans']} channel(s)"),
            ("splits", ", ".join(f"{k} {v}" for k, v in fp["n_images"].items())),
            ("classes", ", ".join(names)),
            ("model", f"{plan.model.name}, pretrained {plan.model.pretrained}"),
            (
                "training",
                f"{plan.train.epochs} epochs, batch {plan.train.batch_size}, "
                f"{plan.optim.name} lr {plan.optim.lr:g}, loss {plan.loss.name}",
            ),
            ("best checkpoint", f"epoch {metrics['checkpoint'].get('epoch', '?')}"),
        ],
        "notes": plan.notes,
        "version": metadata.version("medlens"),
        "date": datetime.date.today().isoformat(),
        "env": ", ".join(f"{k} {v}" for k, v in ctx["env"].items() if k in ("device", "torch")),
        "fig": fig,
    }
    rob = ctx["robustness"]
    if rob:
        fig["robustness"] = figures.robustness_figure(rob["rows"])
        severities = sorted({r["severity"] for r in rob["rows"] if r["severity"]})
        corruptions = list(dict.fromkeys(r["corruption"] for r in rob["rows"] if r["severity"]))
        by = {(r["corruption"], r["severity"]): r for r in rob["rows"]}
        values["robustness"] = {
            "note": f"{rob['n_cases']} of {rob['of']} test cases; AUC drop = clean AUC minus "
            "corrupted AUC (positive: worse).",
            "severities": severities,
            "rows": [
                {
                    "name": c.replace("_", " "),
                    "drops": [_fmt(by[c, s]["auc_drop"]) for s in severities],
                }
                for c in corruptions
            ],
        }
    return values


def _selective_curves(trust: dict[str, Any], unc: dict[str, Any] | None) -> dict[str, dict]:
    curves = {"max probability": trust["selective"]} if "selective" in trust else {}
    for name, title in (("tta", "TTA entropy"), ("mc_dropout", "MC-dropout entropy")):
        if unc and "selective" in unc.get(name, {}):
            curves[title] = unc[name]["selective"]
    return curves


def _uncertainty_values(trust: dict[str, Any], unc: dict[str, Any] | None) -> list[dict]:
    rows = []
    if "selective" in trust:
        s = trust["selective"]
        rows.append({"name": "single pass, max probability", "auc": "", "acc": "",
                     "aurc": _fmt(s["aurc"]), "at80": _fmt(s["accuracy_at"]["0.8"]),
                     "note": ""})  # fmt: skip
    for name, title in (("tta", "test-time augmentation"), ("mc_dropout", "MC dropout")):
        entry = (unc or {}).get(name)
        if entry is None:
            continue
        if "skipped" in entry:
            rows.append({"name": title, "auc": "", "acc": "", "aurc": "", "at80": "",
                         "note": entry["skipped"]})  # fmt: skip
            continue
        s = entry["selective"]
        rows.append(
            {"name": f"{title} ({entry['passes']} passes), entropy", "auc": _fmt(entry["auc"]),
             "acc": _fmt(entry["acc"]), "aurc": _fmt(s["aurc"]),
             "at80": _fmt(s["accuracy_at"]["0.8"]),
             "note": f"mean mutual information {entry['mean_mutual_information']:.4f}"}
        )  # fmt: skip
    return rows


def _conformal_values(c: dict[str, Any] | None) -> dict[str, Any] | None:
    if not c:
        return None
    if "skipped" in c:
        return {"skipped": c["skipped"]}
    off = abs(c["test"]["coverage"] - c["target_coverage"]) > 0.03
    return {
        "text": f"{c['method'].upper()} sets fitted on {c['n_calibration']} validation cases "
        f"to hold the true class {c['target_coverage']:.0%} of the time.",
        "test_cov": f"{c['test']['coverage']:.1%}",
        "test_size": _fmt(c["test"]["mean_set_size"], 2),
        "singletons": f"{c['test']['singleton_share']:.1%}",
        "random_cov": f"{c['random_splits']['mean_coverage']:.1%}",
        "random_size": _fmt(c["random_splits"]["mean_set_size"], 2),
        "n_splits": c["random_splits"]["n_splits"],
        "warning": "Test coverage is off target although random halves are not: the test split "
        "is not exchangeable with validation (a shift in prevalence or acquisition)."
        if off
        else None,
    }


def _subgroup_values(subgroups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for col in subgroups:
        metrics = ["auc", "acc", "sensitivity", "specificity"]
        metrics = [m for m in metrics if any(m in g.get("metrics", {}) for g in col["groups"])]
        gap = col["largest_gap"].get("auc")
        out.append(
            {
                "column": col["column"],
                "metrics": [METRIC_LABELS.get(m, m) for m in metrics],
                "groups": [
                    {
                        "group": g["group"],
                        "n": g["n"],
                        "values": [
                            f"{_fmt(g['metrics'][m]['value'])} ({_ci_text(g['metrics'][m])})"
                            if "metrics" in g
                            else "too few"
                            for m in metrics
                        ],
                    }
                    for g in col["groups"]
                ],
                "gap": f"Largest AUC gap: {gap['gap']:.3f} ({gap['lowest']} vs {gap['highest']})."
                if gap
                else "Too few groups with enough cases to compare.",
            }
        )
    return out


def build_report(
    run_dir: str | Path,
    *,
    output: str | Path | None = None,
    robustness: bool = True,
    uncertainty: bool = True,
    gallery: int = 6,
    data_dir: str | None = None,
    refresh: bool = False,
) -> Path:
    """Write ``report.html`` and ``model_card.md`` (into the run, or ``output``)."""
    run = RunDir(Path(run_dir))
    ctx = _context(run, robustness, uncertainty, gallery, data_dir, refresh)
    ctx["root"] = run.root
    ctx["limits"] = _limits(ctx)
    env = Environment(
        loader=PackageLoader("medlens.report", "templates"), autoescape=select_autoescape()
    )
    html = env.get_template("report.html").render(**_page_values(ctx))
    out = Path(output) if output else run.root / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html)
    tmp.replace(out)
    (out.parent / "model_card.md").write_text(model_card(ctx))
    return out
