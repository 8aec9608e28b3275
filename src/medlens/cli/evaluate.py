"""``medlens evaluate``, ``medlens analyse`` and ``medlens report``: a trained run's numbers,
what needs its model, and their report."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from medlens.cli import options, validate
from medlens.cli.tables import (
    console,
    err_console,
    print_external,
    print_metrics,
    print_recalibration,
    read_trust,
)
from medlens.errors import ConfigError

ReportOut = options.output_option("HTML file to write (default: RUN/report.html).")


def evaluate(
    run: options.RunArg,
    on: options.OnData = None,
    label_map: options.LabelMap = None,
    name: options.ExternalName = None,
    data_dir: options.DataDir = None,
    download: options.Download = True,
    as_json: options.AsJson = False,
) -> None:
    """Evaluate a run's best checkpoint on val and test, with CIs, calibration and conformal
    sets; rewrite metrics.json, trust.json, calibration.json, predictions.csv and the OOD
    guard (ood.json). With --on, validate it on another site's data instead (the run's own
    files are left as they are).

    Example: medlens evaluate runs/breastmnist-resnet18 --json
    Example: medlens evaluate runs/pneumonia --on chest_xray/ --label-map NORMAL=normal
    """
    from medlens import api

    if on is not None:
        summary = api.evaluate_external(
            run, on, label_map=validate.parse_label_map(label_map), name=name,
            data_dir=data_dir, download=download,
        )  # fmt: skip
        if as_json:
            print(json.dumps(summary, indent=2))
        else:
            print_external(summary, run)
        return
    if label_map or name:
        raise ConfigError("--label-map and --name apply to --on DATA", hint="add --on DATA")
    metrics = api.evaluate_run(run, data_dir=data_dir, download=download)
    if as_json:
        print(json.dumps(metrics, indent=2))
    else:
        print_metrics(metrics, read_trust(run))


Robustness = Annotated[
    bool,
    typer.Option(
        help="Measure test AUC under noise, blur, contrast, JPEG and bias field "
        "(kept in RUN/robustness.json)."
    ),
]
Uncertainty = Annotated[
    bool,
    typer.Option(
        help="Test-time augmentation and MC dropout passes over the test split "
        "(kept in RUN/uncertainty.json)."
    ),
]
Gallery = Annotated[
    int,
    typer.Option(
        min=0, help="Explained cases per group (right, wrong), kept in RUN/gallery; 0 for none."
    ),
]


def analyse(
    run: options.RunArg,
    robustness: Robustness = True,
    uncertainty: Uncertainty = True,
    gallery: Gallery = 6,
    refresh: Annotated[
        bool, typer.Option(help="Measure again although the files are up to date.")
    ] = False,
    data_dir: options.DataDir = None,
) -> None:
    """Measure what needs the model: robustness.json, uncertainty.json and the explanation
    gallery. Each file records the checkpoint it measured, so only what is missing or stale is
    measured again; `medlens report` renders them.

    Example: medlens analyse runs/breastmnist-resnet18 --gallery 4
    """
    from medlens import api
    from medlens.progress import RichReporter

    done = api.analyse(
        run,
        robustness=robustness,
        uncertainty=uncertainty,
        gallery=gallery,
        refresh=refresh,
        data_dir=data_dir,
        reporter=RichReporter(err_console),
    )
    console.print(f"measured: {', '.join(done)}" if done else "up to date: nothing to measure")


def report(
    run: options.RunArg,
    output: ReportOut = None,
    robustness: Robustness = True,
    uncertainty: Uncertainty = True,
    gallery: Gallery = 6,
    refresh: Annotated[
        bool, typer.Option(help="Re-evaluate and re-measure instead of reusing saved results.")
    ] = False,
    data_dir: options.DataDir = None,
) -> None:
    """Write a self-contained HTML report and a markdown model card for a run, from its files;
    what is missing or stale is evaluated (`medlens evaluate`) and measured (`medlens analyse`)
    first.

    Example: medlens report runs/breastmnist-resnet18 --gallery 4 -o report.html
    """
    from medlens import api
    from medlens.progress import RichReporter

    path = api.report(
        run,
        output=output,
        robustness=robustness,
        uncertainty=uncertainty,
        gallery=gallery,
        data_dir=data_dir,
        refresh=refresh,
        reporter=RichReporter(err_console),
    )
    console.print(f"report: {path}\nmodel card: {path.parent / 'model_card.md'}")


def recalibrate(
    run: options.RunArg,
    on: Annotated[
        str,
        typer.Option(
            "--on",
            help="The site's labelled data (a folder, manifest, .npz or MedMNIST name).",
            callback=validate.dataset,
        ),
    ],
    fraction: Annotated[
        float,
        typer.Option(
            "--fraction",
            help="Share of the site's patients (images without ids) to refit on; the rest "
            "judges the old and new calibration.",
            callback=validate.fraction("--fraction"),
        ),
    ] = 0.3,
    label_map: options.LabelMap = None,
    name: options.ExternalName = None,
    seed: options.Seed = None,
    data_dir: options.DataDir = None,
    as_json: options.AsJson = False,
) -> None:
    """Refit temperature, operating-point thresholds and the conformal threshold on part of a
    site's labelled data; write a new calibration version (previous ones kept in
    RUN/calibrations/) that predict, export and serve then apply.

    Example: medlens recalibrate runs/pneumonia --on site_b/ --fraction 0.3
    """
    from medlens import api

    result = api.recalibrate(
        run, on, fraction=fraction, label_map=validate.parse_label_map(label_map), name=name,
        data_dir=data_dir, seed=seed or 0,
    )  # fmt: skip
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print_recalibration(result)
