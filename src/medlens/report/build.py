"""One self-contained HTML file and a markdown model card for a run, rendered from its files.

Everything is read from the run directory: what ``evaluate`` wrote (metrics.json, trust.json,
predictions.csv), ``train`` (curves.csv, env.json, fingerprint.json) and ``analyse``
(robustness.json, uncertainty.json, gallery/). Nothing here runs a model; a section whose file
is missing says which command writes it (``medlens report`` runs those commands first).

>>> build_report(Run.open("runs/breastmnist-small_cnn"))  # doctest: +SKIP
PosixPath('runs/breastmnist-small_cnn/report.html')
"""

from __future__ import annotations

import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from medlens.evaluate.metrics import METRIC_LABELS
from medlens.evaluate.trust import section
from medlens.report import figures
from medlens.report.external import external_values
from medlens.report.model_card import metric_title, model_card
from medlens.run import Run

_HEADLINE = ("auc", "acc", "sensitivity", "specificity", "f1_macro", "ece")
_NAV = [
    ("summary", "Summary"),
    ("metrics", "Metrics"),
    ("curves-roc", "ROC / PR"),
    ("confusion", "Confusion"),
    ("calibration", "Calibration"),
    ("operating", "Operating points"),
    ("conformal", "Conformal"),
    ("external", "External"),
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


def _optional(run: Run, path: Path, wanted: bool) -> dict[str, Any] | None:
    """An analysis file when that section is wanted and the file exists, else None."""
    return run.read_json(path) if wanted and path.is_file() else None


def _context(run: Run, robustness: bool, uncertainty: bool, gallery: bool) -> dict[str, Any]:
    """Everything the page and the model card show, read from the run's files."""
    shown = _optional(run, run.gallery_file, gallery)
    return {
        "run": run,
        "plan": run.plan,
        "fingerprint": run.fingerprint,
        "metrics": run.metrics(),
        "trust": run.trust(),
        "env": run.env(),
        "curves": run.curves(),
        "robustness": _optional(run, run.robustness_file, robustness),
        "uncertainty": _optional(run, run.uncertainty_file, uncertainty),
        "gallery": _gallery(run, shown) if shown else (None, []),
        "gallery_error": f"No explanations: {shown['error']}"
        if shown and "error" in shown
        else None,
    }


def _gallery(run: Run, shown: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    """(method, groups of {uri, caption}) from gallery.json and its PNGs."""
    groups = [
        {
            "title": g["title"],
            "cases": [
                {"uri": figures.png_file_uri(run.gallery_dir / c["png"]), "caption": c["caption"]}
                for c in g["cases"]
            ],
        }
        for g in shown["groups"]
    ]
    return shown.get("method"), groups


def _page_values(ctx: dict[str, Any]) -> dict[str, Any]:
    plan, trust, metrics, fp = ctx["plan"], ctx["trust"], ctx["metrics"], ctx["fingerprint"]
    names, task = plan.data.label_names, plan.data.task
    ci = trust["confidence_intervals"]
    cis = ci["metrics"]
    y, probs = ctx["run"].split_predictions("test")
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
        "analyse_command": f"medlens analyse {ctx['run'].root}",
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
        "external": external_values(ctx["run"]),
    }
    values["cross_validation"] = _cross_validation_values(ctx["run"], metrics, task, names)
    if values["cross_validation"]:
        values["nav"] = [*_NAV[:1], ("crossval", "Cross-validation"), *_NAV[1:]]
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


def _cross_validation_values(
    run: Run, metrics: dict[str, Any], task: str, names: list[str]
) -> dict[str, Any] | None:
    """A cross-validation's folds, their spread, the out-of-fold estimate and its ROC."""
    cv = metrics.get("cross_validation")
    if cv is None:
        return None
    y, probs = run.split_predictions("oof")
    keys = ("val_acc", "val_auc", "test_acc", "test_auc")
    ci = cv["oof_ci"].get("auc", {})
    return {
        "k": cv["k"],
        "folds": [
            {"fold": f["fold"], "n_val": f["n_val"], **{k: _fmt(f[k]) for k in keys}}
            for f in cv["folds"]
        ],
        "spread": [
            f"{_fmt(cv['spread'][k]['mean'])} ± {_fmt(cv['spread'][k]['sd'])}" for k in keys
        ],
        "oof": f"{_fmt(metrics['val']['auc'])} ({round(100 * cv['ci_level'])}% CI "
        f"{_ci_text(ci)}) on {len(y)} out-of-fold predictions",
        "ensemble": f"ACC {_fmt(metrics['test']['acc'])}, AUC {_fmt(metrics['test']['auc'])}",
        "roc": figures.roc_figure(y, probs, task, names),
    }


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
    run: Run,
    *,
    output: str | Path | None = None,
    robustness: bool = True,
    uncertainty: bool = True,
    gallery: bool = True,
) -> Path:
    """Write ``report.html`` and ``model_card.md`` (into the run, or beside ``output``) from
    the run's files; a section turned off (or whose file is missing) is left out."""
    ctx = _context(run, robustness, uncertainty, gallery)
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
