"""``medlens train``: fingerprint, plan, train and evaluate, everything in one run directory.

>>> result = train("breastmnist", data_dir="../shared/data/medmnist", epochs=20)  # doctest: +SKIP
>>> result.metrics["test"]["auc"], result.run_dir  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlens.config import Plan, apply_overrides, load_plan
from medlens.data.dataset import ArrayDataset
from medlens.data.fingerprint import fingerprint
from medlens.errors import ConfigError
from medlens.progress import Reporter, SilentReporter, format_seconds
from medlens.run import (
    Run,
    check_plan_fits,
    default_run_name,
    environment,
    load_plan_data,
    member_count,
)
from medlens.stages.ensemble import check_ensemble_plan, open_ensemble, train_members
from medlens.stages.evaluate import evaluate_run
from medlens.stages.planning import (
    describe,
    estimate_plan,
    flag_overrides,
    plan_dataset,
    with_estimate,
)
from medlens.train.loop import EpochCallback, FitResult, fit
from medlens.train.teacher import batch_loss_for


@dataclass
class TrainResult:
    """``fit``: the run's fit; for an ensemble run, that of the last member trained (None when
    every member had finished before)."""

    run_dir: Path
    plan: Plan
    fit: FitResult | None
    metrics: dict[str, Any]


def train_run(
    run: Run,
    ds: ArrayDataset,
    *,
    resume: bool = False,
    reporter: Reporter | None = None,
    callbacks: Sequence[EpochCallback] = (),
    init_weights: Path | None = None,
    evaluate: bool = True,
) -> tuple[FitResult, dict[str, Any]]:
    """Train a created run's plan on ``ds`` (resuming from its last epoch with ``resume``), then
    evaluate its best checkpoint; returns the fit and metrics.json (empty without ``evaluate``).
    """
    plan = run.plan
    result = fit(
        plan,
        ds,
        run,
        resume=resume,
        reporter=reporter,
        callbacks=callbacks,
        init_weights=init_weights,
        batch_loss=batch_loss_for(plan, ds),
    )
    return result, (evaluate_run(run, ds=ds) if evaluate else {})


def start_run(path: Path, recipe: Plan, fp: dict[str, Any], world_size: int = 1) -> Run:
    """A new run directory with plan.yaml, fingerprint.json and env.json; for an ensemble plan
    (train.folds, train.seeds) also ensemble.json, or the unfinished ensemble already there."""
    from medlens.device import resolve_device

    env = environment(recipe.train.seed, str(resolve_device(recipe.train.device)))
    env = {**env, "world_size": world_size}
    if member_count(recipe):
        return open_ensemble(path, recipe, fp, env)
    return Run.create(path, recipe, fp, env)


def train(
    source: str | None = None,
    *,
    plan_file: str | Path | None = None,
    data_dir: str | None = None,
    size: int | None = None,
    output: str | Path | None = None,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    download: bool = True,
    reporter: Reporter | None = None,
    callbacks: Sequence[EpochCallback] = (),
    source_fields: dict[str, Any] | None = None,
    **flags: Any,
) -> TrainResult:
    """Fingerprint, plan, train and evaluate: the whole first half of the flow.

    ``flags`` are the CLI's shortcuts (model, epochs, batch_size, lr, seed, device); ``overrides``
    any dotted plan field. With ``resume=True`` the run in ``output`` continues from its last
    checkpoint with its own plan.
    """
    from medlens.train import distributed

    ranks = distributed.ranks()
    # under torchrun rank 0 writes the run directory and talks; the others train their shard
    reporter = (reporter or SilentReporter()) if ranks.main else SilentReporter()
    overrides = {**(overrides or {}), **flag_overrides(**flags)}
    if resume:
        if output is None:
            raise ConfigError("--resume needs --output naming the run to continue")
        run = Run.open(output, trained=False)
        if not run.is_ensemble():  # an ensemble continues the members that are left
            run.check_resumable()
        if overrides or plan_file:
            raise ConfigError(
                "a resumed run keeps its own plan.yaml; options that change it "
                "cannot be combined with --resume",
                hint="drop those options, or start a new run",
            )
        ds = run.data(data_dir, download, reporter)
    else:
        if plan_file is not None:
            recipe = load_plan(plan_file)
            if overrides:
                recipe = apply_overrides(recipe, overrides)
            if source is not None and Path(source).stem != Path(recipe.data.source).stem:
                raise ConfigError(
                    f"the plan is for {recipe.data.source}, not {source}",
                    hint="drop the dataset argument or use a plan made for it",
                )
            ds = load_plan_data(recipe, data_dir, download, reporter)
            fp = fingerprint(ds)
            check_plan_fits(recipe, ds)
            from medlens.device import resolve_device

            device = resolve_device(recipe.train.device)  # the estimate is of this machine
            recipe = with_estimate(recipe, estimate_plan(recipe, ds, device), device.type)
        elif source is None:
            raise ConfigError("no dataset given", hint="name one, e.g. medlens train breastmnist")
        else:
            recipe, fp, ds = plan_dataset(
                source,
                data_dir=data_dir,
                size=size,
                overrides=overrides,
                download=download,
                source_fields=source_fields,
                reporter=reporter,
            )
        check_plan_fits(recipe, ds)
        if member_count(recipe):
            if ranks.active:
                raise ConfigError(
                    "ensemble runs (--folds, --seeds) are not trained under torchrun",
                    hint="run them in one process, or torchrun each member's plan",
                )
            check_ensemble_plan(recipe, ds)
        if ranks.active and output is None:
            raise ConfigError(
                "under torchrun every process must write to the same run directory",
                hint="give it with --output",
            )
        path = (
            Path(output) if output else Path("runs") / default_run_name(ds.name, recipe.model.name)
        )
        if ranks.main:
            run = start_run(path, recipe, fp.model_dump(mode="json"), ranks.world)
        else:
            run = Run(path, recipe)  # rank 0 writes the directory; this rank trains its shard
        run.use_data(ds)
        for line in describe(fp, recipe):
            reporter.message(line)
    reporter.message(f"run directory: {run.root}")
    start = time.perf_counter()
    if member_count(run.plan):
        fits = train_members(run, ds, reporter=reporter, callbacks=callbacks)
        result = fits[-1] if fits else None
    else:
        result, _ = train_run(
            run, ds, resume=resume, reporter=reporter, callbacks=callbacks, evaluate=False
        )
    distributed.barrier(ranks)
    metrics = evaluate_run(run, ds=ds) if ranks.main else {}
    if ranks.main and not resume:
        seconds = time.perf_counter() - start
        line = timing_line(run.plan, seconds)
        run.logger().info(line)
        reporter.message(line)
        predicted = run.plan.train.estimated_seconds
        run.write_json(run.timing_file, {"predicted_s": predicted, "actual_s": round(seconds, 1)})
    return TrainResult(run_dir=run.root, plan=run.plan, fit=result, metrics=metrics)


def timing_line(plan: Plan, seconds: float) -> str:
    """``"time: 9 min 40 s for training and evaluation (predicted 10 min 2 s)"``."""
    line = f"time: {format_seconds(seconds)} for training and evaluation"
    predicted = plan.train.estimated_seconds
    if predicted:
        line += f" (predicted {format_seconds(predicted)}, {seconds / predicted:.0%} of it)"
    return line
