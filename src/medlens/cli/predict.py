"""``medlens predict`` and ``medlens explain``: a trained run applied to new image files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlens.cli import options, validate
from medlens.cli.tables import console, print_explanations, print_predictions

#: explain.saliency.METHODS (a test keeps them equal): that module imports torch
EXPLAIN_METHODS = ("gradcam", "gradcam++", "rollout")

PredictionsOut = options.output_option("Write the predictions to this CSV.")
ExplainOut = options.output_option(
    "Folder for the PNGs and explanations.csv (default <run>/explanations)."
)


def predict(
    run: options.RunArg,
    images: options.ImagesArg,
    output: PredictionsOut = None,
    onnx: options.Onnx = None,
    heatmaps: Annotated[
        Path | None,
        typer.Option(
            "--heatmaps",
            help="Folder for a Grad-CAM (ViT: attention rollout) overlay PNG per image.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Calibrated class probabilities and a conformal prediction set per image.

    Example: medlens predict runs/breastmnist-resnet18 scans/ -o predictions.csv
    """
    from medlens import api

    results = api.predict(run, images, output=output, onnx=onnx, heatmaps=heatmaps)
    print_predictions(results, output)
    if output:
        console.print(f"predictions written to {output}")
    if heatmaps:
        console.print(f"heatmaps written to {heatmaps}")


def explain(
    run: options.RunArg,
    images: options.ImagesArg,
    output: ExplainOut = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="gradcam, gradcam++ or rollout (default: rollout for Vision Transformers, "
            "gradcam otherwise).",
            show_default=False,
            callback=validate.one_of(EXPLAIN_METHODS, "explanation method"),
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
    """Saliency maps (Grad-CAM, Grad-CAM++, attention rollout) for images with a trained run.

    Example: medlens explain runs/breastmnist-resnet18 case1.png --method gradcam++
    """
    from medlens import api

    out = output if output is not None else run / "explanations"
    rows = api.explain(
        run, images, out, method=method, target_layer=layer, faithfulness=faithfulness
    )
    print_explanations(rows, out)
    console.print(f"{len(rows)} overlay PNG(s) and explanations.csv written to {out}")
