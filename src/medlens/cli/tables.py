"""The consoles and the tables the commands print (rich); the files hold the full results.

The records printed here come from the stages (a fingerprint, metrics.json, trust.json, a
leaderboard...); the few helpers of those stages used to label them are imported when a table
is printed, after the stage has run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def fmt(value: Any) -> str:
    """A number for a table cell: floats with 4 decimals, None as "-"."""
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def ci(entry: dict[str, Any] | None) -> str:
    """``low - high`` of a bootstrap interval, or "-"."""
    if not entry or entry.get("low") is None:
        return "-"
    return f"{entry['low']:.4f} - {entry['high']:.4f}"


def wide_console() -> Console:
    """The console, or for piped output one of 120 columns (not rich's 80), so that the wide
    tables of compare and tune keep one line per row."""
    return console if console.is_terminal else Console(width=max(console.width, 120))


# ------------------------------------------------------------------------------- data
def print_fingerprint(fp: Any) -> None:
    """``medlens data info``: task, shape, class counts per split, intensities, duplicates."""
    console.print(
        f"[bold]{fp.name}[/bold]  {fp.modality}, {fp.task}, {fp.spatial_dims}D, "
        f"{fp.in_chans} channel(s), {'x'.join(map(str, fp.image_shape))}"
    )
    console.print(f"source: {fp.source}")
    for note in fp.metadata.get("notes", []):
        console.print(f"- {escape(note)}", highlight=False)
    table = Table("class", "train", "val", "test", title="images per class")
    for i, name in enumerate(fp.label_names):
        table.add_row(name, *(str(fp.class_counts[s][i]) for s in ("train", "val", "test")))
    table.add_row("[bold]all[/bold]", *(str(fp.n_images[s]) for s in ("train", "val", "test")))
    console.print(table)
    if fp.patients_per_class:
        per = fp.patients_per_class
        counts = [
            "/".join(str(per[s][i]) for s in ("train", "val", "test")) for i in range(fp.n_classes)
        ]
        pairs = "; ".join(f"{n} {c}" for n, c in zip(fp.label_names, counts, strict=True))
        console.print(f"patients per class (train/val/test): {pairs}")
    console.print(
        f"smallest class: {fp.minority_fraction:.1%} of train; imbalance ratio "
        f"{fp.imbalance_ratio:g}"
    )
    console.print(
        f"intensity (0-1): mean {fp.intensity.mean}, std {fp.intensity.std}, "
        f"1st-99th pct {fp.intensity.p01}-{fp.intensity.p99}"
    )
    meta = fp.metadata
    if "original_size" in meta:
        size = meta["original_size"]
        console.print(
            f"original sizes: min {size['min']}, median {size['median']}, "
            f"max {size['max']}"
            + (f"; median spacing {meta['spacing_median']} mm" if "spacing_median" in meta else "")
        )
    if meta.get("skipped"):
        console.print(
            f"[yellow]{meta['skipped']} unreadable file(s) skipped[/yellow]: see "
            f"{meta['cache']}/skipped.csv"
        )
    d = fp.duplicates
    within = ", ".join(f"{s} {n}" for s, n in d.within_split.items() if n)
    console.print(
        f"identical images: {d.groups} group(s)"
        + (f", inside one split ({within})" if within else "")
        + f"; {d.across_splits} shared across splits"
        + (f" (e.g. {d.examples[0]})" if d.examples else "")
    )
    if d.across_note():
        console.print(f"[yellow]{escape(d.across_note())}[/yellow]")
    if d.near_across_splits is not None:
        console.print(
            f"near-identical images across splits (perceptual hash): "
            f"{d.near_across_splits}" + (f" (e.g. {d.near_examples[0]})" if d.near_examples else "")
        )


def print_medmnist_list(folder: Path) -> None:
    """``medlens data list``: every MedMNIST set, and which of its sizes are in ``folder``."""
    from medlens.data.medmnist import dataset_names, dataset_spec

    table = Table(
        "name",
        "task",
        "classes",
        "modality",
        "sizes",
        "here",
        caption=f"here: sizes found in {folder}",
    )
    for name in dataset_names():
        spec = dataset_spec(name)
        present = [str(s) for s in spec.sizes if (folder / spec.filename(s)).is_file()]
        table.add_row(
            name,
            spec.task,
            str(len(spec.label_names)),
            spec.modality,
            f"{spec.sizes[0]}-{spec.sizes[-1]}",
            ",".join(present) or "-",
        )
    console.print(table)


# ------------------------------------------------------------------------------- metrics
def read_trust(run: Path) -> dict[str, Any] | None:
    """The run's trust.json (CIs, calibration, operating points, conformal sets), if any."""
    path = Path(run) / "trust.json"
    return json.loads(path.read_text()) if path.is_file() else None


def print_metrics(metrics: dict[str, Any], trust: dict[str, Any] | None = None) -> None:
    """Val and test metrics (with test CIs), per-class scores, the confusion matrix, trust."""
    from medlens.evaluate.metrics import METRIC_LABELS

    cis = trust["confidence_intervals"] if trust else None
    columns = ["metric", "val", "test"] + ([f"test {cis['ci']:.0%} CI"] if cis else [])
    table = Table(*columns, title=f"{metrics['model']} on {metrics['dataset']} (best checkpoint)")
    positive = metrics["test"].get("positive_class")
    for key, title in METRIC_LABELS.items():
        if key in metrics["test"]:
            if positive is not None:
                title = title.replace("positive class", f"positive: {positive}")
            row = [title, fmt(metrics["val"].get(key)), fmt(metrics["test"][key])]
            table.add_row(*row, *([ci(cis["metrics"].get(key))] if cis else []))
    console.print(table)
    per_class = Table(
        "class",
        "support",
        "precision",
        "recall",
        "specificity",
        "F1",
        "AUC",
        title="test, per class",
    )
    for row in metrics["test"]["per_class"]:
        per_class.add_row(
            row["name"],
            str(row["support"]),
            *(fmt(row[k]) for k in ("precision", "recall", "specificity", "f1", "auc")),
        )
    console.print(per_class)
    cm = metrics["test"]["confusion_matrix"]
    if cm and not isinstance(cm[0][0], list):
        names = metrics["test"]["label_names"]
        table = Table("true \\ predicted", *names, title="test confusion matrix")
        for name, row in zip(names, cm, strict=True):
            table.add_row(name, *map(str, row))
        console.print(table)
    if trust:
        print_trust(trust)


def print_trust(trust: dict[str, Any]) -> None:
    """Calibration, operating points and conformal sets, one line each."""
    from medlens.evaluate.trust import fitted_on, section

    cal = trust["calibration"]
    before, after = cal["test"]["before"], cal["test"]["after"]
    on = fitted_on(trust)
    console.print(
        f"calibration: temperature {cal['temperature']:.3f} (fitted on {on}); test ECE "
        f"{before['ece']:.4f} -> {after['ece']:.4f}, Brier {before['brier']:.4f} -> "
        f"{after['brier']:.4f}"
    )
    for op in section(trust, "operating_points") or []:
        t = op["test"]
        console.print(
            f"operating point {op['target']} >= {op['value']:g} for "
            f"{op.get('positive_class', 'the positive class')} on {on}: threshold "
            f"{op['threshold']:.4f}; test sensitivity {fmt(t['sensitivity']['value'])} "
            f"({ci(t['sensitivity'])}), specificity {fmt(t['specificity']['value'])} "
            f"({ci(t['specificity'])})"
        )
    for key, value in trust.items():
        if isinstance(value, dict) and "skipped" in value:
            console.print(f"{key.replace('_', ' ')}: skipped, {value['skipped']}")
    c = section(trust, "conformal")
    if c is not None:
        console.print(
            f"conformal sets ({c['method']}, target {c['target_coverage']:.0%}): test coverage "
            f"{c['test']['coverage']:.1%}, mean size {c['test']['mean_set_size']:.2f}; random "
            f"val/test halves {c['random_splits']['mean_coverage']:.1%}"
        )


# ------------------------------------------------------------------------------- cases
def print_predictions(results: list[dict[str, Any]], output: Path | None) -> None:
    """``medlens predict``: the first 50 files with their class, confidence and set."""
    probs = [k for k in results[0] if k.startswith("p_")]
    has_set = "prediction_set" in results[0]
    table = Table(
        "file", "predicted", "confidence", *probs, *(["set"] if has_set else []),
        "looks like training",
    )  # fmt: skip
    table.columns[0].no_wrap = True  # a file name folded over lines cannot be copied
    seen = {True: "yes", False: "NO: check the image", None: "unknown"}
    for r in results[:50]:
        table.add_row(
            Path(r["path"]).name,
            r["predicted"],
            f"{r['confidence']:.4f}",
            *(f"{r[k]:.4f}" for k in probs),
            *([r["prediction_set"]] if has_set else []),
            seen[r.get("in_distribution")],
        )
    console.print(table)
    flagged = sum(r.get("in_distribution") is False for r in results)
    if flagged:
        console.print(f"{flagged} of {len(results)} images look unlike the training images: "
                      "their predictions are not to be trusted (see ood_reason)")  # fmt: skip
    if results and results[0].get("in_distribution", False) is None:
        console.print("note: this run has no OOD guard; `medlens evaluate RUN` fits one")
    if len(results) > 50:
        console.print(f"... {len(results) - 50} more" + (f" in {output}" if output else ""))


def print_explanations(rows: list[dict[str, Any]], out: Path) -> None:
    """``medlens explain``: per file its class, probability, map peak and faithfulness."""
    scores = ("deletion", "random_deletion", "insertion", "random_insertion")
    shown = [k for k in scores if k in rows[0]]
    table = Table("file", "predicted", "p", "peak", *shown, title=f"{rows[0]['method']} maps")
    for r in rows[:50]:
        peak = ",".join(str(r[k]) for k in ("peak_slice", "peak_row", "peak_col") if k in r)
        table.add_row(
            Path(r["path"]).name,
            r["predicted"],
            f"{r['probability']:.4f}",
            peak,
            *(f"{r[k]:.3f}" for k in shown),
        )
    console.print(table)
    if len(rows) > 50:
        console.print(f"... {len(rows) - 50} more in {out / 'explanations.csv'}")


def print_export(info: dict[str, Any]) -> None:
    """``medlens export``: size, parity with PyTorch, test AUC and CPU speed per variant."""
    variants = info["variants"]
    sizes = sorted({b for v in variants.values() for b in v.get("speed", {})}, key=int)
    table = Table(
        "format",
        "size",
        "max |dp| vs PyTorch",
        "test AUC",
        *(f"images/s b{b}" for b in sizes),
        title=f"{info['model']} on {info['dataset']}: export ({info['exporter']}, opset "
        f"{info['opset']})",
    )
    for v in variants.values():
        speed = v.get("speed", {})
        table.add_row(
            v["label"],
            f"{v['bytes'] / 1e6:.2f} MB",
            f"{v['max_abs_prob_diff']:.2e}",
            fmt(v["test_auc"]),
            *(f"{speed[b]['images_per_s']:.1f}" if b in speed else "-" for b in sizes),
        )
    console.print(table)


# ------------------------------------------------------------------------------- models
def print_models(rows: list[Any], timm_pattern: str | None, timm_names: list[str]) -> None:
    """``medlens models``: medlens' own models, the literature's, and matching timm names."""

    def millions(n: int) -> str:
        return f"{n / 1e6:.1f} M"

    table = Table("name", "dims", "parameters", "description", title="medlens models")
    for r in (r for r in rows if r.own):
        table.add_row(r.name, f"{r.spatial_dims}D", millions(r.parameters), r.description)
    console.print(table)
    table = Table("name", "dims", "parameters", "architecture", title="from the literature (timm)")
    for r in (r for r in rows if not r.own):
        table.add_row(r.name, "2D", millions(r.parameters), r.description)
    console.print(table)
    console.print(
        "2.5D for volumes: any 2D model with --set model.slices=3 (3 neighbouring slices as "
        "channels: RGB-pretrained weights fit). Grey inputs adapt an RGB-pretrained stem."
    )
    if timm_pattern:
        console.print(f"{len(timm_names)} timm models match {timm_pattern!r}:")
        console.print(", ".join(timm_names) or "-")
    else:
        console.print(
            "Every 2D timm model name also works (e.g. resnet50, efficientnet_b0, "
            "vit_small_patch16_224); list them with --timm 'pattern'."
        )


def print_external(summary: dict[str, Any], run: Path | str) -> None:
    """An external set's metrics beside the internal test's, the shift and the OOD share."""
    drop = summary["drop"]["metrics"]
    cis = summary["confidence_intervals"]
    table = Table(
        "metric", "internal test", "external", "external 95% CI", "drop (95% CI)",
        title=f"{summary['run']} on {summary['name']} ({summary['n_images']} images)",
    )  # fmt: skip
    for key, d in drop.items():
        table.add_row(
            key, fmt(d["internal"]), fmt(d["external"]), ci(cis.get(key)),
            f"{fmt(d['drop'])} ({fmt(d['low'])}, {fmt(d['high'])})",
        )  # fmt: skip
    console.print(table)
    for note in summary.get("undefined", {}).values():
        console.print(f"note: {note}")
    cal = summary["calibration"]
    console.print(
        f"ECE {fmt(cal['before']['ece'])} before, {fmt(cal['after']['ece'])} after the run's "
        f"temperature {cal['temperature']:.3f} (calibration {cal['version']})"
    )
    console.print(f"shift: {summary['shift']['statement']}")
    ood = summary["ood"]
    if "flagged_share" in ood:
        console.print(
            f"OOD guard ({ood['method']}): {ood['flagged_share']:.1%} of these images flagged "
            f"as unlike training ({ood['internal_test_flagged_share']:.1%} of the internal test)"
        )
    else:
        console.print(ood["note"])
    console.print(f"written to {Path(run) / 'external' / summary['name']}")


def print_recalibration(result: dict[str, Any]) -> None:
    """Old and new calibration on the site's held-out part."""
    old, new = result["held_out"]["previous"], result["held_out"]["new"]
    table = Table(
        "on the held-out part", "previous", "new",
        title=f"recalibrated on {result['n_fit']} images of {result['site']}; judged on "
        f"{result['n_held_out']}",
    )  # fmt: skip
    table.add_row("temperature", fmt(old["calibration"]["temperature"]),
                  fmt(new["calibration"]["temperature"]))  # fmt: skip
    table.add_row("ECE", fmt(old["calibration"]["after"]["ece"]),
                  fmt(new["calibration"]["after"]["ece"]))  # fmt: skip
    for a, b in zip(old.get("operating_points", []), new.get("operating_points", []), strict=True):
        for rate in ("sensitivity", "specificity"):
            table.add_row(
                f"{rate} at the {a['target']} {a['value']:.0%} point",
                fmt(a["site"][rate]["value"]), fmt(b["site"][rate]["value"]),
            )  # fmt: skip
    if "conformal" in old and "conformal" in new:
        table.add_row("set coverage", fmt(old["conformal"]["coverage"]),
                      fmt(new["conformal"]["coverage"]))  # fmt: skip
    console.print(table)
    console.print(f"calibration {result['version']} is now in use (previous kept in calibrations/)")


def print_ensemble(metrics: dict[str, Any]) -> None:
    """A cross-validation's folds (held-out fold and test ACC/AUC) and their spread."""
    cv = metrics.get("cross_validation")
    if cv is None:
        return
    table = Table("fold", "n val", "val ACC", "val AUC", "test ACC", "test AUC", title="folds")
    for f in cv["folds"]:
        table.add_row(str(f["fold"]), str(f["n_val"]), fmt(f["val_acc"]), fmt(f["val_auc"]),
                      fmt(f["test_acc"]), fmt(f["test_auc"]))  # fmt: skip
    sp = cv["spread"]
    table.add_row("mean ± sd", "", *(f"{fmt(sp[k]['mean'])} ± {fmt(sp[k]['sd'])}" for k in sp))
    console.print(table)
    console.print(
        f"out-of-fold (all {sum(f['n_val'] for f in cv['folds'])} train+val images): "
        f"ACC {fmt(metrics['val']['acc'])}, AUC {fmt(metrics['val']['auc'])}; "
        f"ensemble of {cv['k']} on test: ACC {fmt(metrics['test']['acc'])}, "
        f"AUC {fmt(metrics['test']['auc'])}"
    )
