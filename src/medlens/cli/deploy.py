"""``medlens export`` and ``medlens serve``: a trained run as ONNX files, or as a web service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlens.cli import options, validate
from medlens.cli.tables import console, print_export

#: export.onnx_export.FORMATS (a test keeps them equal): that module imports torch
EXPORT_FORMATS = ("onnx",)

ExportOut = options.output_option("Folder to write to (default RUN/export).")


def export(
    run: options.RunArg,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="Export format: onnx.",
            callback=validate.one_of(
                EXPORT_FORMATS, "export format", use="use one of:", fold_case=True
            ),
        ),
    ] = "onnx",
    int8: Annotated[
        bool,
        typer.Option(
            "--int8", help="Also write a static INT8 model (QDQ, per-channel), calibrated on train."
        ),
    ] = False,
    output: ExportOut = None,
    calibration_images: Annotated[
        int, typer.Option("--calibration-images", min=1, help="Training images for INT8 ranges.")
    ] = 256,
    opset: Annotated[
        int | None, typer.Option("--opset", help="ONNX opset (default: the exporter's).")
    ] = None,
    data_dir: options.DataDir = None,
) -> None:
    """Export the best checkpoint to ONNX (and INT8), check it against PyTorch on val, and
    measure test AUC and CPU speed; writes model.onnx, model.int8.onnx and export.json.

    Example: medlens export runs/breastmnist-resnet18 --int8
    """
    from medlens import api
    from medlens.progress import RichReporter

    info = api.export(
        run,
        fmt=fmt,
        int8=int8,
        output_dir=output,
        calibration_images=calibration_images,
        opset=opset,
        data_dir=data_dir,
        reporter=RichReporter(console),
    )
    print_export(info)
    console.print(f"written to {Path(info['variants']['onnx_fp32']['file']).parent}")


def serve(
    run: options.RunArg,
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
    onnx: options.Onnx = None,
    access_log: Annotated[
        bool, typer.Option(help="Log one line per request (method, path, status; no content).")
    ] = True,
) -> None:
    """Serve the run over HTTP: a web page at /, POST /predict, /health, /model, /docs.

    Example: medlens serve runs/breastmnist-resnet18 --port 8080 --api-key SECRET
    """
    from medlens import api

    api.serve(
        run,
        host=host,
        port=port,
        api_key=api_key,
        max_upload_mb=max_upload_mb,
        onnx=onnx,
        access_log=access_log,
        announce=console.print,
    )
