"""``medlens plan`` and ``medlens train``: choose a recipe for a dataset, then train it."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from medlens.cli import options, validate
from medlens.cli.tables import console, err_console, print_ensemble, print_metrics, read_trust

PlanOut = options.output_option("Write the plan here (YAML) instead of printing it.")
RunOut = options.output_option("Run directory (default runs/<dataset>-<model>-<time>).")
TrainDataset = Annotated[
    str | None,
    typer.Argument(
        help="MedMNIST name (pneumoniamnist, breastmnist_64, organmnist3d, ...), a "
        "MedMNIST-format .npz, an image folder (one sub-folder per class) or a CSV/Parquet "
        "manifest. Optional with --plan or --resume.",
        show_default=False,
        callback=validate.dataset,
    ),
]
Init = Annotated[
    str | None,
    typer.Option(
        "--init",
        help="Start from an earlier run (its folder or best.safetensors) or a weights "
        "file: multistage fine-tuning. Same as --set model.init=PATH.",
        show_default=False,
    ),
]


@options.SOURCE
def plan(
    dataset: options.DatasetArg,
    device: options.Device = "auto",
    budget: options.Budget = None,
    set_: options.SetOpt = None,
    output: PlanOut = None,
    source: Any = None,
) -> None:
    """Choose a training recipe from the dataset's fingerprint, with its wall time on this
    machine measured (a few training steps); edit it, then train --plan it.

    Example: medlens plan ../shared/data/chest_xray --budget 15m -o plan.yaml
    """
    from medlens import api
    from medlens.config import dump_plan
    from medlens.progress import RichReporter

    recipe, fp, _ = api.plan(
        dataset,
        **source,
        device=device or "auto",
        overrides={**options.overrides(set_), **api.flag_overrides(budget=budget)},
        reporter=RichReporter(err_console),
    )
    for line in api.describe(fp, recipe):
        err_console.print(line, highlight=False)
    if output is None:
        print(dump_plan(recipe), end="")
    else:
        output.write_text(dump_plan(recipe))
        console.print(f"plan written to {output}; train with: medlens train --plan {output}")


@options.SOURCE
def train(
    dataset: TrainDataset = None,
    model: options.Model = None,
    epochs: options.Epochs = None,
    batch_size: options.BatchSize = None,
    lr: options.Lr = None,
    seed: options.Seed = None,
    device: options.Device = None,
    budget: options.Budget = None,
    init: Init = None,
    folds: options.Folds = None,
    seeds: options.Seeds = None,
    output: RunOut = None,
    plan_file: options.PlanFile = None,
    resume: options.Resume = False,
    set_: options.SetOpt = None,
    source: Any = None,
) -> None:
    """Fingerprint, plan, train and evaluate; everything lands in the run directory. The plan
    says how long the run will take here before it starts (--budget fits it to a time).

    Example: medlens train ../shared/data/chest_xray --budget 15m
    """
    validate.resume(resume, output)
    from medlens import api
    from medlens.progress import RichReporter

    try:
        result = api.train(
            dataset,
            **source,
            plan_file=plan_file,
            output=output,
            resume=resume,
            overrides=options.overrides(set_),
            reporter=RichReporter(console),
            model=model,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            budget=budget,
            init=init,
            folds=folds,
            seeds=seeds,
        )
    except KeyboardInterrupt:
        again = (
            "run the same command again (finished members are kept)"
            if folds or seeds
            else "medlens train --resume --output <run directory>"
        )
        err_console.print(
            "[yellow]interrupted[/yellow]: the last finished epoch is saved; "
            f"continue with: {again}"
        )
        raise typer.Exit(130) from None
    if not result.metrics:  # a torchrun rank other than 0: rank 0 reports
        return
    fr = result.fit
    if result.plan.train.folds or result.plan.train.seeds:
        print_ensemble(result.metrics)
    elif fr is not None:
        console.print(
            f"best epoch {fr.best_epoch} (val AUC {fr.best_val_auc:.4f}) of "
            f"{fr.epochs_run}" + (", stopped early" if fr.stopped_early else "")
        )
    print_metrics(result.metrics, read_trust(result.run_dir))
    console.print(f"run directory: {result.run_dir}")
