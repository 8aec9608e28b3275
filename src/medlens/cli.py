"""The ``medlens`` command: a thin Typer layer over :mod:`medlens.api`.

Every user error is a :class:`~medlens.errors.MedlensError`; ``main`` prints it on one line and
exits with code 2, never with a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medlens import __version__
from medlens.errors import MedlensError

app = typer.Typer(
    name="medlens",
    help="Medical image classification: fingerprint a dataset, plan a recipe, train, evaluate "
    "and predict. Each command's --help explains its options.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(
    help="Inspect datasets: list MedMNIST sets, fingerprint one.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)

DataDir = Annotated[
    str | None,
    typer.Option(
        "--data-dir",
        help="Folder with MedMNIST .npz files (default: $MEDLENS_DATA, else ~/.medmnist).",
        show_default=False,
    ),
]
Size = Annotated[
    int | None,
    typer.Option(
        "--size",
        help="MedMNIST image size: 28, 64, 128 or 224 (3D: 28 or 64). Default 28.",
        show_default=False,
    ),
]
Download = Annotated[
    bool,
    typer.Option(
        "--download/--no-download", help="Download missing MedMNIST files (with MD5 check)."
    ),
]
Device = Annotated[
    str | None,
    typer.Option("--device", help="auto (CUDA when available), cpu or cuda.", show_default=False),
]
LabelCols = Annotated[
    list[str] | None,
    typer.Option(
        "--label-column",
        help="Manifest: the label column (classes), or repeat it for several 0/1 "
        "columns (multi-label). Default: 'label'.",
        show_default=False,
    ),
]
PathCol = Annotated[
    str | None,
    typer.Option(
        "--path-column",
        help="Manifest: the column of image paths (default: path, image, file...).",
        show_default=False,
    ),
]
PatientCol = Annotated[
    str | None,
    typer.Option(
        "--patient-column",
        help="Manifest: patient ids; splits then keep each patient in one split.",
        show_default=False,
    ),
]
SplitCol = Annotated[
    str | None,
    typer.Option(
        "--split-column",
        help="Manifest: the user's own train/val/test column (checked for leaks).",
        show_default=False,
    ),
]
ImageRoot = Annotated[
    str | None,
    typer.Option(
        "--image-root",
        help="Manifest: the folder its paths (or ids without an extension) are relative to "
        "(default: the manifest's folder).",
        show_default=False,
    ),
]
Modality = Annotated[
    str | None,
    typer.Option(
        "--modality",
        help="x-ray, ct, mri, pet, nuclear-medicine, ultrasound, mammography, angiography, "
        "dermoscopy, pathology, microscopy, fundus, oct, endoscopy or photo (default: guessed).",
        show_default=False,
    ),
]
DropDuplicates = Annotated[
    bool,
    typer.Option(
        "--drop-duplicates",
        help="Drop images identical to one in an earlier split (listed in a CSV in the cache).",
    ),
]
ValFraction = Annotated[
    float | None,
    typer.Option(
        "--val-fraction",
        help="Train and test but no val: the fraction of train carved out as val (default 0.1).",
        show_default=False,
    ),
]
SkipBad = Annotated[
    bool,
    typer.Option(
        "--skip-bad", help="Skip unreadable images and list them in skipped.csv beside the cache."
    ),
]
CacheDir = Annotated[
    str | None,
    typer.Option(
        "--cache-dir",
        help="Where decoded images are cached (default $MEDLENS_CACHE or ~/.cache/medlens).",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override any plan field, e.g. --set loss.name=focal --set augment.hflip=true. "
        "Repeatable.",
        show_default=False,
    ),
]
RunArg = Annotated[Path, typer.Argument(help="Run directory written by `medlens train`.")]
ImagesArg = Annotated[
    list[Path],
    typer.Argument(
        help="Image files (PNG, JPEG, TIFF, BMP, DICOM, NIfTI; .npy arrays) or folders."
    ),
]


def _version(value: bool) -> None:
    if value:
        console.print(f"medlens {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Medical image classification, from a dataset to a trained and evaluated model."""


def _source_fields(
    label_column,
    path_column,
    patient_column,
    split_column,
    skip_bad,
    cache_dir,
    image_root=None,
    modality=None,
    drop_duplicates=False,
    val_fraction=None,
) -> dict[str, Any]:
    return {
        "label_columns": label_column or None,
        "path_column": path_column,
        "patient_column": patient_column,
        "split_column": split_column,
        "skip_bad": skip_bad,
        "cache_dir": cache_dir,
        "image_root": image_root,
        "modality": modality,
        "drop_duplicates": drop_duplicates,
        "val_fraction": val_fraction,
    }


def _overrides(items: list[str] | None) -> dict[str, Any]:
    from medlens.config import parse_set_options

    return parse_set_options(items or [])


# ----------------------------------------------------------------------------------------- data
@data_app.command("info")
def data_info(
    dataset: Annotated[
        str,
        typer.Argument(
            help="MedMNIST name (e.g. pneumoniamnist, organmnist3d_64), a MedMNIST-format "
            ".npz, an image folder (one sub-folder per class) or a CSV/Parquet manifest."
        ),
    ],
    data_dir: DataDir = None,
    size: Size = None,
    download: Download = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fingerprint as JSON.")] = False,
    label_column: LabelCols = None,
    path_column: PathCol = None,
    patient_column: PatientCol = None,
    split_column: SplitCol = None,
    image_root: ImageRoot = None,
    modality: Modality = None,
    drop_duplicates: DropDuplicates = False,
    val_fraction: ValFraction = None,
    skip_bad: SkipBad = False,
    cache_dir: CacheDir = None,
) -> None:
    """Fingerprint a dataset: task, image shape, class counts per split, intensities, duplicates."""
    from medlens.api import data_info as api_data_info
    from medlens.progress import RichReporter

    fields = _source_fields(
        label_column,
        path_column,
        patient_column,
        split_column,
        skip_bad,
        cache_dir,
        image_root,
        modality,
        drop_duplicates,
        val_fraction,
    )
    fp = api_data_info(
        dataset,
        data_dir=data_dir,
        size=size,
        download=download,
        source_fields=fields,
        reporter=RichReporter(err_console),
    )
    if as_json:
        print(fp.model_dump_json(indent=2))
        return
    _print_fingerprint(fp)


def _print_fingerprint(fp) -> None:
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


@data_app.command("list")
def data_list(data_dir: DataDir = None) -> None:
    """List the MedMNIST datasets, their tasks and sizes, and which files are present locally."""
    from medlens.data.medmnist import dataset_names, dataset_spec, default_data_dir

    folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
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


# ----------------------------------------------------------------------------------------- plan
@app.command("plan")
def plan_cmd(
    dataset: Annotated[str, typer.Argument(help="MedMNIST name or MedMNIST-format .npz file.")],
    data_dir: DataDir = None,
    size: Size = None,
    device: Device = "auto",
    set_: SetOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the plan here (YAML) instead of printing it.",
            show_default=False,
        ),
    ] = None,
    download: Download = True,
    label_column: LabelCols = None,
    path_column: PathCol = None,
    patient_column: PatientCol = None,
    split_column: SplitCol = None,
    image_root: ImageRoot = None,
    modality: Modality = None,
    drop_duplicates: DropDuplicates = False,
    val_fraction: ValFraction = None,
    skip_bad: SkipBad = False,
    cache_dir: CacheDir = None,
) -> None:
    """Choose a training recipe from the dataset's fingerprint; edit it, then train --plan it."""
    from medlens.api import plan as api_plan
    from medlens.config import dump_plan
    from medlens.progress import RichReporter

    fields = _source_fields(
        label_column,
        path_column,
        patient_column,
        split_column,
        skip_bad,
        cache_dir,
        image_root,
        modality,
        drop_duplicates,
        val_fraction,
    )
    recipe, _, _ = api_plan(
        dataset,
        data_dir=data_dir,
        size=size,
        device=device or "auto",
        overrides=_overrides(set_),
        download=download,
        source_fields=fields,
        reporter=RichReporter(err_console),
    )
    if output is None:
        print(dump_plan(recipe), end="")
    else:
        output.write_text(dump_plan(recipe))
        console.print(f"plan written to {output}; train with: medlens train --plan {output}")


# ---------------------------------------------------------------------------------------- train
@app.command("train")
def train_cmd(
    dataset: Annotated[
        str | None,
        typer.Argument(
            help="MedMNIST name (pneumoniamnist, breastmnist_64, organmnist3d, ...), a "
            "MedMNIST-format .npz, an image folder (one sub-folder per class) or a CSV/Parquet "
            "manifest. Optional with --plan or --resume.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
    size: Size = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Any timm model name or a medlens model (see `medlens models`).",
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Training epochs.", show_default=False)
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Batch size.", show_default=False)
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option("--lr", min=1e-12, help="Peak learning rate.", show_default=False),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help="Random seed (same seed, same result on the CPU).", show_default=False
        ),
    ] = None,
    device: Device = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            help="Start from an earlier run (its folder or best.safetensors) or a weights "
            "file: multistage fine-tuning. Same as --set model.init=PATH.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Run directory (default runs/<dataset>-<model>-<time>).",
            show_default=False,
        ),
    ] = None,
    plan_file: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            help="Train with this plan.yaml (from `medlens plan` or an earlier run).",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the run in --output from its last checkpoint."),
    ] = False,
    set_: SetOpt = None,
    download: Download = True,
    label_column: LabelCols = None,
    path_column: PathCol = None,
    patient_column: PatientCol = None,
    split_column: SplitCol = None,
    image_root: ImageRoot = None,
    modality: Modality = None,
    drop_duplicates: DropDuplicates = False,
    val_fraction: ValFraction = None,
    skip_bad: SkipBad = False,
    cache_dir: CacheDir = None,
) -> None:
    """Fingerprint, plan, train and evaluate; everything lands in the run directory.

    Example: medlens train pneumoniamnist --data-dir ../shared/data/medmnist
    """
    from medlens.api import train as api_train
    from medlens.progress import RichReporter

    reporter = RichReporter(console)
    fields = _source_fields(
        label_column,
        path_column,
        patient_column,
        split_column,
        skip_bad,
        cache_dir,
        image_root,
        modality,
        drop_duplicates,
        val_fraction,
    )
    try:
        result = api_train(
            dataset,
            plan_file=plan_file,
            data_dir=data_dir,
            size=size,
            output=output,
            resume=resume,
            overrides=_overrides(set_),
            download=download,
            reporter=reporter,
            model=model,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            init=init,
            source_fields=fields,
        )
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/yellow]: the last finished epoch is saved; "
            "continue with: medlens train --resume --output <run directory>"
        )
        raise typer.Exit(130) from None
    if not result.metrics:  # a torchrun rank other than 0: rank 0 reports
        return
    fr = result.fit
    console.print(
        f"best epoch {fr.best_epoch} (val AUC {fr.best_val_auc:.4f}) of "
        f"{fr.epochs_run}" + (", stopped early" if fr.stopped_early else "")
    )
    _print_metrics(result.metrics, _read_trust(result.run_dir))
    console.print(f"run directory: {result.run_dir}")


def _read_trust(run: Path) -> dict[str, Any] | None:
    path = Path(run) / "trust.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _ci(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("low") is None:
        return "-"
    return f"{entry['low']:.4f} - {entry['high']:.4f}"


def _print_metrics(metrics: dict[str, Any], trust: dict[str, Any] | None = None) -> None:
    from medlens.evaluate.metrics import METRIC_LABELS

    cis = trust["confidence_intervals"] if trust else None
    columns = ["metric", "val", "test"] + ([f"test {cis['ci']:.0%} CI"] if cis else [])
    table = Table(*columns, title=f"{metrics['model']} on {metrics['dataset']} (best checkpoint)")
    positive = metrics["test"].get("positive_class")
    for key, title in METRIC_LABELS.items():
        if key in metrics["test"]:
            if positive is not None:
                title = title.replace("positive class", f"positive: {positive}")
            row = [title, _fmt(metrics["val"].get(key)), _fmt(metrics["test"][key])]
            table.add_row(*row, *([_ci(cis["metrics"].get(key))] if cis else []))
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
            *(_fmt(row[k]) for k in ("precision", "recall", "specificity", "f1", "auc")),
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
        _print_trust(trust)


def _print_trust(trust: dict[str, Any]) -> None:
    """Calibration, operating points and conformal sets, one line each."""
    cal = trust["calibration"]
    before, after = cal["test"]["before"], cal["test"]["after"]
    console.print(
        f"calibration: temperature {cal['temperature']:.3f} (fitted on val); test ECE "
        f"{before['ece']:.4f} -> {after['ece']:.4f}, Brier {before['brier']:.4f} -> "
        f"{after['brier']:.4f}"
    )
    from medlens.evaluate.trust import section

    for op in section(trust, "operating_points") or []:
        t = op["test"]
        console.print(
            f"operating point {op['target']} >= {op['value']:g} for "
            f"{op.get('positive_class', 'the positive class')} on val: threshold "
            f"{op['threshold']:.4f}; test sensitivity {_fmt(t['sensitivity']['value'])} "
            f"({_ci(t['sensitivity'])}), specificity {_fmt(t['specificity']['value'])} "
            f"({_ci(t['specificity'])})"
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


# ------------------------------------------------------------------------------------- evaluate
@app.command("evaluate")
def evaluate_cmd(
    run: RunArg,
    data_dir: DataDir = None,
    download: Download = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics.json instead.")] = False,
) -> None:
    """Evaluate a run's best checkpoint on val and test, with CIs, calibration and conformal
    sets; rewrite metrics.json, trust.json, calibration.json and predictions.csv."""
    from medlens.api import evaluate_run

    metrics = evaluate_run(run, data_dir=data_dir, download=download)
    if as_json:
        print(json.dumps(metrics, indent=2))
    else:
        _print_metrics(metrics, _read_trust(run))


# --------------------------------------------------------------------------------------- report
@app.command("report")
def report_cmd(
    run: RunArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="HTML file to write (default: RUN/report.html).",
            show_default=False,
        ),
    ] = None,
    robustness: Annotated[
        bool,
        typer.Option(
            help="Measure test AUC under noise, blur, contrast, JPEG and bias field "
            "(kept in RUN/robustness.json)."
        ),
    ] = True,
    uncertainty: Annotated[
        bool,
        typer.Option(
            help="Test-time augmentation and MC dropout passes over the test split "
            "(kept in RUN/uncertainty.json)."
        ),
    ] = True,
    gallery: Annotated[
        int, typer.Option(min=0, help="Explained cases per group (right, wrong); 0 for none.")
    ] = 6,
    refresh: Annotated[
        bool, typer.Option(help="Re-evaluate and re-measure instead of reusing saved results.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Write a self-contained HTML report and a markdown model card for a run."""
    from medlens.report.build import build_report

    path = build_report(
        run,
        output=output,
        robustness=robustness,
        gallery=gallery,
        data_dir=data_dir,
        refresh=refresh,
    )
    console.print(f"report: {path}\nmodel card: {path.parent / 'model_card.md'}")


# -------------------------------------------------------------------------------------- predict
@app.command("predict")
def predict_cmd(
    run: RunArg,
    images: ImagesArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write the predictions to this CSV.", show_default=False
        ),
    ] = None,
    onnx: Annotated[
        bool | None,
        typer.Option(
            "--onnx/--no-onnx",
            help="Run on ONNX Runtime with RUN/export/model.onnx, or on PyTorch. Default: the "
            "ONNX export when it exists and matches the best checkpoint.",
            show_default=False,
        ),
    ] = None,
    heatmaps: Annotated[
        Path | None,
        typer.Option(
            "--heatmaps",
            help="Folder for a Grad-CAM (ViT: attention rollout) overlay PNG per image.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Calibrated class probabilities and a conformal prediction set per image."""
    from medlens.api import predict

    results = predict(run, images, output=output, onnx=onnx, heatmaps=heatmaps)
    probs = [k for k in results[0] if k.startswith("p_")]
    has_set = "prediction_set" in results[0]
    table = Table("file", "predicted", "confidence", *probs, *(["set"] if has_set else []))
    table.columns[0].no_wrap = True  # a file name folded over lines cannot be copied
    for r in results[:50]:
        table.add_row(
            Path(r["path"]).name,
            r["predicted"],
            f"{r['confidence']:.4f}",
            *(f"{r[k]:.4f}" for k in probs),
            *([r["prediction_set"]] if has_set else []),
        )
    console.print(table)
    if len(results) > 50:
        console.print(f"... {len(results) - 50} more" + (f" in {output}" if output else ""))
    if output:
        console.print(f"predictions written to {output}")
    if heatmaps:
        console.print(f"heatmaps written to {heatmaps}")


# --------------------------------------------------------------------------------------- export
@app.command("export")
def export_cmd(
    run: RunArg,
    fmt: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    int8: Annotated[
        bool,
        typer.Option(
            "--int8", help="Also write a static INT8 model (QDQ, per-channel), calibrated on train."
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Folder to write to (default RUN/export).", show_default=False
        ),
    ] = None,
    calibration_images: Annotated[
        int, typer.Option("--calibration-images", min=1, help="Training images for INT8 ranges.")
    ] = 256,
    opset: Annotated[
        int | None, typer.Option("--opset", help="ONNX opset (default: the exporter's).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Export the best checkpoint to ONNX (and INT8), check it against PyTorch on val, and
    measure test AUC and CPU speed; writes model.onnx, model.int8.onnx and export.json."""
    from medlens.export import export_run
    from medlens.progress import RichReporter

    info = export_run(
        run,
        fmt=fmt,
        int8=int8,
        output_dir=output,
        calibration_images=calibration_images,
        opset=opset,
        data_dir=data_dir,
        reporter=RichReporter(console),
    )
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
            _fmt(v["test_auc"]),
            *(f"{speed[b]['images_per_s']:.1f}" if b in speed else "-" for b in sizes),
        )
    console.print(table)
    console.print(f"written to {Path(variants['onnx_fp32']['file']).parent}")


# -------------------------------------------------------------------------------------- explain
@app.command("explain")
def explain_cmd(
    run: RunArg,
    images: ImagesArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Folder for the PNGs and explanations.csv (default <run>/explanations).",
            show_default=False,
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="gradcam, gradcam++ or rollout (default: rollout for Vision Transformers, "
            "gradcam otherwise).",
            show_default=False,
        ),
    ] = None,
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            help="Grad-CAM layer, a module name as in model.named_modules() (default: the "
            "last convolutional stage).",
            show_default=False,
        ),
    ] = None,
    faithfulness: Annotated[
        bool,
        typer.Option(
            "--faithfulness",
            help="Also score each map by deletion (lower is better) and insertion (higher is "
            "better), next to a random map's scores.",
        ),
    ] = False,
) -> None:
    """Saliency maps (Grad-CAM, Grad-CAM++, attention rollout) for images with a trained run."""
    from medlens.explain import explain

    out = output if output is not None else run / "explanations"
    rows = explain(run, images, out, method=method, target_layer=layer, faithfulness=faithfulness)
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
    console.print(f"{len(rows)} overlay PNG(s) and explanations.csv written to {out}")


# --------------------------------------------------------------------------------------- models
# ---------------------------------------------------------------------------------------- serve
@app.command("serve")
def serve_cmd(
    run: RunArg,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="MEDLENS_API_KEY",
            help="Require this key in the X-API-Key header of /predict and /model "
            "(or set MEDLENS_API_KEY).",
            show_default=False,
        ),
    ] = None,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.01, help="Refuse uploads larger than this (MiB).")
    ] = 64.0,
    onnx: Annotated[
        bool | None,
        typer.Option(
            "--onnx/--no-onnx",
            help="Logits from RUN/export/model.onnx on ONNX Runtime, or from PyTorch. Default: "
            "the export when it exists and matches the best checkpoint.",
            show_default=False,
        ),
    ] = None,
    access_log: Annotated[
        bool, typer.Option(help="Log one line per request (method, path, status; no content).")
    ] = True,
) -> None:
    """Serve the run over HTTP: a web page at /, POST /predict, /health, /model, /docs."""
    from medlens.serve import require_serve

    require_serve()
    from medlens.serve.app import serve

    serve(
        run,
        host=host,
        port=port,
        api_key=api_key,
        max_upload_mb=max_upload_mb,
        onnx=onnx,
        access_log=access_log,
        announce=console.print,
    )


# ------------------------------------------------------------------------------ compare / tune
Epochs = Annotated[
    int | None,
    typer.Option("--epochs", min=1, help="Training epochs of every run.", show_default=False),
]


@app.command("compare")
def compare_cmd(
    dataset: Annotated[
        str,
        typer.Argument(
            help="MedMNIST name (e.g. breastmnist), a MedMNIST-format .npz, an image folder "
            "or a CSV/Parquet manifest."
        ),
    ],
    models: Annotated[
        str,
        typer.Option(
            "--models",
            help="Comma-separated models (timm names or medlens models), e.g. "
            "resnet18,densenet121,efficientnet_b0,vit_small_patch16_224.",
        ),
    ],
    seeds: Annotated[
        int, typer.Option("--seeds", help="Runs per model, with train.seed, +1, +2, ...")
    ] = 3,
    epochs: Epochs = None,
    device: Device = None,
    data_dir: DataDir = None,
    size: Size = None,
    set_: SetOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Comparison folder (default runs/compare-<dataset>). Run the same command "
            "again to continue: finished runs are kept, not retrained.",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for the latency measurement (default: PyTorch's setting).",
            show_default=False,
        ),
    ] = None,
    download: Download = True,
    label_column: LabelCols = None,
    path_column: PathCol = None,
    patient_column: PatientCol = None,
    split_column: SplitCol = None,
    image_root: ImageRoot = None,
    modality: Modality = None,
    drop_duplicates: DropDuplicates = False,
    val_fraction: ValFraction = None,
    skip_bad: SkipBad = False,
    cache_dir: CacheDir = None,
) -> None:
    """Train several models on the same data, splits, preprocessing and budget over a few
    seeds; write leaderboard.md/.csv/.png with test metrics (mean and spread), parameters,
    GFLOPs, training time and CPU latency, and paired AUC tests against the best model.

    Example: medlens compare breastmnist --models small_cnn,resnet18 --seeds 3 --epochs 20
    """
    from medlens.api import compare
    from medlens.progress import RichReporter

    fields = _source_fields(
        label_column,
        path_column,
        patient_column,
        split_column,
        skip_bad,
        cache_dir,
        image_root,
        modality,
        drop_duplicates,
        val_fraction,
    )
    try:
        result = compare(
            dataset,
            models=models,
            seeds=seeds,
            output=output,
            data_dir=data_dir,
            size=size,
            overrides=_overrides(set_),
            download=download,
            source_fields=fields,
            reporter=RichReporter(console),
            latency_threads=threads,
            epochs=epochs,
            device=device,
        )
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/yellow]: finished runs are kept; run the same command to "
            "continue (an interrupted run resumes from its last epoch)"
        )
        raise typer.Exit(130) from None
    _print_leaderboard(result)


def _wide_console() -> Console:
    """The console, or for piped output one of 120 columns (not rich's 80), so that the wide
    tables of compare and tune keep one line per row."""
    return console if console.is_terminal else Console(width=max(console.width, 120))


def _print_leaderboard(result: Any) -> None:
    """Two tables (test metrics, then cost) and the paired tests; the files hold the rest."""
    from medlens.compare.leaderboard import (
        METRICS,
        TITLES,
        mean_std,
        method_text,
        p_text,
        paired_text,
    )

    info = result.info
    out = _wide_console()
    at = f"at {info['positive_class']}" if info["positive_class"] else "macro-averaged"
    metrics = Table(
        "model",
        *(TITLES[m] for m in METRICS),
        title=f"{info['dataset']}: test metrics, mean ± std over {len(info['seeds'])} seed(s), "
        f"{info['epochs']} epochs",
        caption=f"F1, sensitivity and specificity {at}",
    )
    cost = Table(
        "model",
        "parameters",
        "GFLOPs",
        "train s",
        "ms/image b1",
        "images/s b64",
        title=f"cost: CPU fp32, {info['hardware']['latency_threads']} thread(s); training "
        "time in training steps",
    )
    for r in result.rows:
        metrics.add_row(r["model"], *(mean_std(r, m, 3) for m in METRICS))
        cost.add_row(
            r["model"],
            f"{r['parameters'] / 1e6:.2f} M",
            f"{r['gflops']:.3f}",
            f"{r['train_s_mean']:.1f}",
            f"{r['latency_ms']:.2f}",
            f"{r['images_per_s']:.0f}",
        )
    out.print(metrics)
    out.print(cost)
    if result.paired:
        best = result.best
        paired = Table(
            "model",
            "AUC",
            f"AUC {best}",
            f"difference [{result.paired[0]['ci']:.0%} CI]",
            "p-value",
            "test",
            title=f"paired tests: {best} (best mean test AUC) against each model, on "
            "seed-averaged test probabilities",
        )
        for p in result.paired:
            paired.add_row(
                p["model"],
                f"{p['auc_b']:.4f}",
                f"{p['auc_a']:.4f}",
                paired_text(p),
                p_text(p["p_value"]),
                method_text(p["method"]),
            )
        out.print(paired)
    console.print(f"leaderboard.md, leaderboard.csv and leaderboard.png written to {result.folder}")


@app.command("tune")
def tune_cmd(
    dataset: Annotated[
        str,
        typer.Argument(
            help="MedMNIST name (e.g. breastmnist), a MedMNIST-format .npz, an image folder "
            "or a CSV/Parquet manifest."
        ),
    ],
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials",
            help="Trials this command runs (added to the study's earlier ones) [default: 20 "
            "unless --timeout is given].",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help="Start no new trial after this many seconds.",
            show_default=False,
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Database URL of the study, shared by every machine given it, e.g. "
            "postgresql://user@host/db [default: sqlite:///OUTPUT/study.db].",
            show_default=False,
        ),
    ] = None,
    study_name: Annotated[
        str | None,
        typer.Option(
            "--study-name", help="Study name [default: medlens-<dataset>].", show_default=False
        ),
    ] = None,
    epochs: Epochs = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Seed of every trial's training and of the TPE sampler (give each machine "
            "its own).",
            show_default=False,
        ),
    ] = None,
    pruner: Annotated[
        str,
        typer.Option("--pruner", help="Stop poor trials early: median, hyperband or none."),
    ] = "median",
    device: Device = None,
    data_dir: DataDir = None,
    size: Size = None,
    set_: SetOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Folder for trials/, trials.csv, study.db and best_plan.yaml "
            "(default runs/tune-<dataset>).",
            show_default=False,
        ),
    ] = None,
    download: Download = True,
    label_column: LabelCols = None,
    path_column: PathCol = None,
    patient_column: PatientCol = None,
    split_column: SplitCol = None,
    image_root: ImageRoot = None,
    modality: Modality = None,
    drop_duplicates: DropDuplicates = False,
    val_fraction: ValFraction = None,
    skip_bad: SkipBad = False,
    cache_dir: CacheDir = None,
) -> None:
    """Hyperparameter search with Optuna (TPE sampler, median or Hyperband pruning on the
    per-epoch val AUC), scored on val AUC only: lr, weight decay, batch size, dropout, loss,
    label smoothing or focal gamma, augmentation strength. A field given with --set is not
    searched. Writes best_plan.yaml for `medlens train --plan` (needs pip install
    "medlens[tune]").

    Example: medlens tune breastmnist --trials 30 --epochs 10
    """
    from medlens.api import tune
    from medlens.progress import RichReporter
    from medlens.tune import require_optuna

    require_optuna().logging.set_verbosity(30)  # warnings only: each trial gets our own line
    fields = _source_fields(
        label_column,
        path_column,
        patient_column,
        split_column,
        skip_bad,
        cache_dir,
        image_root,
        modality,
        drop_duplicates,
        val_fraction,
    )
    try:
        result = tune(
            dataset,
            trials=trials,
            timeout=timeout,
            storage=storage,
            study_name=study_name,
            output=output,
            data_dir=data_dir,
            size=size,
            overrides=_overrides(set_),
            download=download,
            source_fields=fields,
            pruner=pruner,
            reporter=RichReporter(console),
            epochs=epochs,
            seed=seed,
            device=device,
        )
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/yellow]: finished trials are kept in the study; run the same "
            "command to go on"
        )
        raise typer.Exit(130) from None
    _print_tuning(result)


def _print_tuning(result: Any) -> None:
    from medlens.config import dump_plan

    params = sorted({k for t in result.trials for k in t if k.startswith("param_")})
    table = Table(
        "trial",
        "state",
        "val AUC",
        "s",
        *(p.removeprefix("param_") for p in params),
        title=f"study {result.study_name} ({result.storage})",
        caption="val AUC: best epoch; of a pruned trial (@epoch), the last before it stopped",
    )
    for t in result.trials:
        table.add_row(
            str(t["number"]),
            t["state"] + (f" @{t['pruned_at_epoch']}" if t.get("pruned_at_epoch") else ""),
            _fmt(t["val_auc"]),
            "-" if t["duration_s"] is None else f"{t['duration_s']:.0f}",
            *(_param_text(t.get(p)) for p in params),
        )
    _wide_console().print(table)
    counts = ", ".join(f"{n} {s.lower()}" for s, n in result.states.items())
    console.print(
        f"{len(result.trials)} trials ({counts}); best: trial {result.best_number}, "
        f"val AUC {result.best_value:.4f}"
    )
    # soft_wrap: a YAML line folded at the console's width would no longer be YAML
    console.print(dump_plan(result.best_plan), highlight=False, markup=False, soft_wrap=True)
    console.print(
        f"best plan written to {result.best_plan_file}; trials in "
        f"{result.folder / 'trials.csv'}\ntrain it with: medlens train --plan "
        f"{result.best_plan_file}",
        soft_wrap=True,
    )


def _param_text(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@app.command("models")
def models_cmd(
    timm_pattern: Annotated[
        str | None,
        typer.Option(
            "--timm",
            help="Also list timm models matching this pattern, e.g. 'efficientnet*'.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List medlens' own models and the literature's architectures with their parameter
    counts; any timm model name works too (filter them with --timm)."""
    from medlens.models.registry import LITERATURE, list_models, list_timm_models, parameter_count

    def millions(name: str, dims: int) -> str:
        return f"{parameter_count(name, dims) / 1e6:.1f} M"

    table = Table("name", "dims", "parameters", "description", title="medlens models")
    for spec in list_models():
        dims = spec["spatial_dims"]
        table.add_row(spec["name"], f"{dims}D", millions(spec["name"], dims), spec["description"])
    console.print(table)
    table = Table("name", "dims", "parameters", "architecture", title="from the literature (timm)")
    for name, title in LITERATURE.items():
        table.add_row(name, "2D", millions(name, 2), title)
    console.print(table)
    console.print(
        "2.5D for volumes: any 2D model with --set model.slices=3 (3 neighbouring slices as "
        "channels: RGB-pretrained weights fit). Grey inputs adapt an RGB-pretrained stem."
    )
    if timm_pattern:
        names = list_timm_models(timm_pattern)
        console.print(f"{len(names)} timm models match {timm_pattern!r}:")
        console.print(", ".join(names) or "-")
    else:
        console.print(
            "Every 2D timm model name also works (e.g. resnet50, efficientnet_b0, "
            "vit_small_patch16_224); list them with --timm 'pattern'."
        )


# ------------------------------------------------------------------------------ distill / prune
OutputRun = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="New run directory (default under runs/).", show_default=False
    ),
]


@app.command("distill")
def distill_cmd(
    teacher: Annotated[Path, typer.Argument(help="Run directory of the trained teacher.")],
    student: Annotated[
        str | None,
        typer.Option(
            "--student",
            help="Student model: any timm name or medlens model [default: "
            "mobilenetv3_small_100; below 64 px mobilenetv3_small_medmnist].",
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option("--epochs", min=1, help="Training epochs (default: the teacher's)."),
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option(
            "--alpha",
            min=0.0,
            max=1.0,
            help="Weight of the distillation term; 1 - alpha weights the task loss [default: 0.5].",
            show_default=False,
        ),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            "--temperature",
            min=1e-6,
            help="Softening temperature T of both models' outputs [default: 4].",
            show_default=False,
        ),
    ] = None,
    output: OutputRun = None,
    device: Device = None,
    data_dir: DataDir = None,
    set_: SetOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the student run in --output.")
    ] = False,
) -> None:
    """Knowledge distillation: train a small student on the teacher run's data, splits and
    preprocessing with its soft targets; compare the two in the student run's compression.json.

    Example: medlens distill runs/teacher --student mobilenetv3_small_medmnist --epochs 20
    """
    from medlens.compress.distill import distill_run
    from medlens.progress import RichReporter

    result = distill_run(
        teacher,
        student=student,
        epochs=epochs,
        alpha=alpha,
        temperature=temperature,
        output=output,
        device=device,
        data_dir=data_dir,
        overrides=_overrides(set_),
        resume=resume,
        reporter=RichReporter(console),
    )
    c = result.compression
    _print_compression(c, ("teacher", c["teacher"]), ("student", c["student"]))
    console.print(f"run directory: {result.run_dir}")


@app.command("prune")
def prune_cmd(
    run: RunArg,
    amount: Annotated[
        float, typer.Option("--amount", help="Fraction of each layer's channels to remove.")
    ] = 0.3,
    finetune_epochs: Annotated[
        int, typer.Option("--finetune-epochs", min=0, help="Fine-tuning epochs after pruning.")
    ] = 3,
    importance: Annotated[
        str, typer.Option("--importance", help="Filter norm that ranks channels: l1 or l2.")
    ] = "l2",
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            min=1e-12,
            help="Fine-tuning learning rate (default: a tenth of the run's).",
            show_default=False,
        ),
    ] = None,
    output: OutputRun = None,
    device: Device = None,
    data_dir: DataDir = None,
    set_: SetOpt = None,
) -> None:
    """Structured pruning: remove whole conv channels by filter norm, fine-tune, and compare
    with the original in the new run's compression.json (pip install "medlens[compress]")."""
    from medlens.compress.prune import prune_run
    from medlens.progress import RichReporter

    result = prune_run(
        run,
        amount=amount,
        finetune_epochs=finetune_epochs,
        importance=importance,
        lr=lr,
        output=output,
        device=device,
        data_dir=data_dir,
        overrides=_overrides(set_),
        reporter=RichReporter(console),
    )
    c = result.compression
    before = {**c["pruned"], "test": c["pruned"]["test_before_finetune"], "cpu": None}
    _print_compression(
        c,
        ("original", c["original"]),
        ("pruned, not fine-tuned", before),
        ("pruned", c["pruned"]),
    )
    console.print(f"run directory: {result.run_dir}")


def _print_compression(record: dict[str, Any], *rows: tuple[str, dict[str, Any]]) -> None:
    """Parameters, MACs, test AUC/ACC and CPU speed of the models, then the AUC change."""
    table = Table(
        "model",
        "params",
        "MACs",
        "test AUC",
        "test ACC",
        "ms b1",
        "img/s b64",
        title=f"{record['kind']} on {record['dataset']}",
        caption="CPU fp32: ms per image at batch 1, images/s at batch 64",
    )
    for label, m in rows:
        cpu = m.get("cpu") or {}
        table.add_row(
            f"{m['model']}\n[dim]{label}[/dim]",
            f"{m['parameters'] / 1e6:.2f} M",
            f"{m['macs'] / 1e6:.1f} M",
            _fmt(m["test"]["auc"]),
            _fmt(m["test"]["acc"]),
            f"{cpu['1']['latency_ms']:.1f}" if "1" in cpu else "-",
            f"{cpu['64']['images_per_s']:.0f}" if "64" in cpu else "-",
        )
    console.print(table)
    cmp = record["comparison"]
    speed = cmp.get("cpu_speedup", {}).get("64")
    console.print(
        f"test AUC difference {cmp['test_auc_difference']:+.4f} (compressed - original); "
        f"{cmp['parameter_ratio']:.3f}x the parameters"
        + (f", {speed:.2f}x the CPU images/s" if speed else "")
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; print user errors on one line and exit 2."""
    try:
        app(args=argv, standalone_mode=False)
    except MedlensError as exc:
        # escaped: hints such as pip install "medlens[serve]" are text, not rich markup
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except typer.TyperException as exc:  # usage errors: bad option values, missing arguments
        ctx = getattr(exc, "ctx", None)
        where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        err_console.print(f"[red]error:[/red] {text}{where}", highlight=False, soft_wrap=True)
        return getattr(exc, "exit_code", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
