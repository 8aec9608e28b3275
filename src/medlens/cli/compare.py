"""``medlens compare`` and ``medlens tune``: several models, or several recipes, on one dataset."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from medlens.cli import options, validate
from medlens.cli.leaderboards import print_leaderboard, print_tuning
from medlens.cli.tables import console, err_console

#: tune.study.PRUNERS (a test keeps them equal)
PRUNERS = ("median", "hyperband", "none")

CompareOut = options.output_option(
    "Comparison folder (default runs/compare-<dataset>). Run the same command again to "
    "continue: finished runs are kept, not retrained."
)
TuneOut = options.output_option(
    "Folder for trials/, trials.csv, study.db and best_plan.yaml (default runs/tune-<dataset>)."
)


@options.SOURCE
def compare(
    dataset: options.DatasetArg,
    models: Annotated[
        str,
        typer.Option(
            "--models",
            help="Comma-separated models (timm names or medlens models), e.g. "
            "resnet18,densenet121,efficientnet_b0,vit_small_patch16_224.",
            callback=validate.model_names,
        ),
    ],
    seeds: Annotated[
        int, typer.Option("--seeds", help="Runs per model, with train.seed, +1, +2, ...")
    ] = 3,
    folds: options.Folds = None,
    epochs: options.Epochs = None,
    device: options.Device = None,
    set_: options.SetOpt = None,
    output: CompareOut = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for the latency measurement (default: PyTorch's setting).",
            show_default=False,
        ),
    ] = None,
    source: Any = None,
) -> None:
    """Train several models on the same data, splits, preprocessing and budget over a few
    seeds; write leaderboard.md/.csv/.png with test metrics (mean and spread), parameters,
    GFLOPs, training time and CPU latency, and paired AUC tests against the best model.
    With --folds K every candidate is a K-fold cross-validation, ranked by its out-of-fold
    AUC, and the paired tests use the out-of-fold predictions.

    Example: medlens compare breastmnist --models small_cnn,resnet18 --seeds 3 --epochs 20
    """
    from medlens import api
    from medlens.progress import RichReporter

    try:
        result = api.compare(
            dataset,
            **source,
            models=models,
            seeds=seeds,
            folds=folds,
            output=output,
            overrides=options.overrides(set_),
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
    print_leaderboard(result)


@options.SOURCE
def tune(
    dataset: options.DatasetArg,
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
            "--timeout", help="Start no new trial after this many seconds.", show_default=False
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
    epochs: options.Epochs = None,
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
        typer.Option(
            "--pruner",
            help="Stop poor trials early: median, hyperband or none.",
            callback=validate.one_of(PRUNERS, "pruner"),
        ),
    ] = "median",
    folds: options.Folds = None,
    device: options.Device = None,
    set_: options.SetOpt = None,
    output: TuneOut = None,
    source: Any = None,
) -> None:
    """Hyperparameter search with Optuna (TPE sampler, median or Hyperband pruning on the
    per-epoch val AUC), scored on val AUC only: lr, weight decay, batch size, dropout, loss,
    label smoothing or focal gamma, augmentation strength. A field given with --set is not
    searched. Writes best_plan.yaml for `medlens train --plan` (needs pip install
    "medlens[tune]"). With --folds K each trial is a K-fold cross-validation scored by its
    out-of-fold AUC (not pruned).

    Example: medlens tune breastmnist --trials 30 --epochs 10
    """
    from medlens import api
    from medlens.progress import RichReporter
    from medlens.tune import require_optuna

    require_optuna().logging.set_verbosity(logging.WARNING)  # each trial gets our own line
    try:
        result = api.tune(
            dataset,
            **source,
            trials=trials,
            timeout=timeout,
            storage=storage,
            study_name=study_name,
            output=output,
            overrides=options.overrides(set_),
            pruner=pruner,
            reporter=RichReporter(console),
            epochs=epochs,
            seed=seed,
            folds=folds,
            device=device,
        )
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/yellow]: finished trials are kept in the study; run the same "
            "command to go on"
        )
        raise typer.Exit(130) from None
    print_tuning(result)
