"""``medlens evaluate``, ``medlens analyse`` and ``medlens report``: a trained run's numbers,
what needs its model, and their report."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from medlens.cli import options
from medlens.cli.tables import console, err_console, print_metrics, read_trust

ReportOut = options.output_option("HTML file to write (default: RUN/report.html).")


def evaluate(
    run: options.RunArg,
    data_dir: options.DataDir = None,
    download: options.Download = True,
    as_json: options.AsJson = False,
) -> None:
    """Evaluate a run's best checkpoint on val and test, with CIs, calibration and conformal
    sets; rewrite metrics.json, trust.json, calibration.json and predictions.csv.

    Example: medlens evaluate runs/breastmnist-resnet18 --json
    """
    from medlens import api

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
