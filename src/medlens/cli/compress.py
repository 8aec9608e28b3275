"""``medlens distill`` and ``medlens prune``: a smaller model from a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlens.cli import options, validate
from medlens.cli.leaderboards import print_compression
from medlens.cli.tables import console

#: compress.prune.IMPORTANCE (a test keeps them equal): that module imports torch
IMPORTANCES = ("l1", "l2")


def distill(
    teacher: Annotated[
        Path,
        typer.Argument(
            help="Run directory of the trained teacher.",
            callback=validate.trained_run_as("teacher"),
        ),
    ],
    student: Annotated[
        str | None,
        typer.Option(
            "--student",
            help="Student model: any timm name or medlens model [default: "
            "mobilenetv3_small_100; below 64 px mobilenetv3_small_medmnist].",
            show_default=False,
            callback=validate.model_name,
        ),
    ] = None,
    epochs: options.Epochs = None,
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
    output: options.NewRunOut = None,
    device: options.Device = None,
    data_dir: options.DataDir = None,
    set_: options.SetOpt = None,
    resume: options.Resume = False,
) -> None:
    """Knowledge distillation: train a small student on the teacher run's data, splits and
    preprocessing with its soft targets; compare the two in the student run's compression.json.

    Example: medlens distill runs/teacher --student mobilenetv3_small_medmnist --epochs 20
    """
    from medlens import api
    from medlens.progress import RichReporter

    result = api.distill(
        teacher,
        student=student,
        epochs=epochs,
        alpha=alpha,
        temperature=temperature,
        output=output,
        device=device,
        data_dir=data_dir,
        overrides=options.overrides(set_),
        resume=resume,
        reporter=RichReporter(console),
    )
    c = result.compression
    print_compression(c, ("teacher", c["teacher"]), ("student", c["student"]))
    console.print(f"run directory: {result.run_dir}")


def prune(
    run: Annotated[
        Path,
        typer.Argument(
            help="Run directory written by `medlens train`.",
            callback=validate.trained_run_as("run"),
        ),
    ],
    amount: Annotated[
        float,
        typer.Option(
            "--amount",
            help="Fraction of each layer's channels to remove.",
            callback=validate.prune_amount,
        ),
    ] = 0.3,
    finetune_epochs: Annotated[
        int, typer.Option("--finetune-epochs", min=0, help="Fine-tuning epochs after pruning.")
    ] = 3,
    importance: Annotated[
        str,
        typer.Option(
            "--importance",
            help="Filter norm that ranks channels: l1 or l2.",
            callback=validate.one_of(IMPORTANCES, "channel importance"),
        ),
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
    output: options.NewRunOut = None,
    device: options.Device = None,
    data_dir: options.DataDir = None,
    set_: options.SetOpt = None,
) -> None:
    """Structured pruning: remove whole conv channels by filter norm, fine-tune, and compare
    with the original in the new run's compression.json (pip install "medlens[compress]").

    Example: medlens prune runs/breastmnist-resnet18 --amount 0.5 --finetune-epochs 5
    """
    from medlens import api
    from medlens.progress import RichReporter

    result = api.prune(
        run,
        amount=amount,
        finetune_epochs=finetune_epochs,
        importance=importance,
        lr=lr,
        output=output,
        device=device,
        data_dir=data_dir,
        overrides=options.overrides(set_),
        reporter=RichReporter(console),
    )
    c = result.compression
    before = {**c["pruned"], "test": c["pruned"]["test_before_finetune"], "cpu": None}
    print_compression(
        c,
        ("original", c["original"]),
        ("pruned, not fine-tuned", before),
        ("pruned", c["pruned"]),
    )
    console.print(f"run directory: {result.run_dir}")
