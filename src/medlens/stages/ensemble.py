"""Ensemble runs: k-fold cross-validation (``train.folds``) or seeds on one split
(``train.seeds``), each member an ordinary run inside the ensemble's directory.

::

    runs/<name>/                 the ensemble run: plan.yaml (train.folds: 5), ensemble.json,
      folds/fold-0/ ...          checkpoints/best.safetensors (every member's weights),
      folds/fold-4/              metrics.json, oof_predictions.csv, calibration.json ...

A member that finished (its metrics.json written) is never trained again; one that stopped
mid-way continues from its last epoch; so running the same command again after an
interruption finishes the ensemble.

>>> train_members(run, ds)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medlens.config import Plan
from medlens.data.dataset import ArrayDataset
from medlens.data.folds import check_fold_count, fold_dataset
from medlens.errors import ConfigError
from medlens.progress import Reporter, SilentReporter
from medlens.run import Run, close_log, member_count, member_plan, plan_differences
from medlens.stages.evaluate import evaluate_run
from medlens.train.loop import EpochCallback, FitResult, fit
from medlens.train.teacher import batch_loss_for


def member_paths(plan: Plan) -> list[str]:
    """Where each member lives, relative to the ensemble run: ``folds/fold-<i>`` or
    ``seeds/seed-<s>``."""
    if plan.train.folds:
        return [f"folds/fold-{i}" for i in range(plan.train.folds)]
    return [f"seeds/seed-{plan.train.seed + i}" for i in range(member_count(plan))]


def check_ensemble_plan(plan: Plan, ds: ArrayDataset) -> None:
    """Refuse what an ensemble cannot be made of, before anything is written."""
    if plan.train.folds:
        check_fold_count(ds, plan.train.folds)
    if plan.distill is not None or plan.prune is not None:
        raise ConfigError(
            "an ensemble run cannot be distilled or pruned",
            hint="drop train.folds / train.seeds, or distill from the finished ensemble",
        )


def open_ensemble(path: Path, plan: Plan, fingerprint: dict[str, Any], env: dict[str, Any]) -> Run:
    """The ensemble run at ``path``: created, or (the same command run again) the one there,
    whose plan must be this one."""
    run = Run(path)
    if not run.ensemble_file.is_file():
        run = Run.create(path, plan, fingerprint, env)
        members = [{"path": p, "weight": 1.0 / member_count(plan)} for p in member_paths(plan)]
        kind = "folds" if plan.train.folds else "seeds"
        run.write_json(run.ensemble_file, {"kind": kind, "members": members})
        return run
    if run.metrics_file.is_file():
        raise ConfigError(
            f"{path} already holds a finished ensemble",
            hint="choose another --output; `medlens evaluate` re-evaluates it",
        )
    differ = plan_differences(run.plan, plan)
    if differ:
        raise ConfigError(
            f"{path} holds an unfinished ensemble of another plan ({'; '.join(differ[:3])})",
            hint="run the command that started it, or choose another --output",
        )
    return run


def member_data(run: Run, ds: ArrayDataset, index: int) -> ArrayDataset:
    """The data member ``index`` trains on: its fold, or the ensemble's split."""
    fold = member_plan(run.plan, index).data.fold
    return ds if fold is None else fold_dataset(ds, fold.k, fold.index, fold.seed)


def train_members(
    run: Run,
    ds: ArrayDataset,
    *,
    reporter: Reporter | None = None,
    callbacks: Sequence[EpochCallback] = (),
) -> list[FitResult]:
    """Train every member that is not finished, evaluate it, then write the ensemble's weights
    (checkpoints/best.safetensors); returns the fits of the members trained now."""
    reporter = reporter or SilentReporter()
    fits = []
    paths = member_paths(run.plan)
    for i, rel in enumerate(paths):
        member = Run(run.root / rel, member_plan(run.plan, i))
        if member.metrics_file.is_file() and member.best.is_file():
            check_member(member, run, i)
            reporter.message(f"{rel}: finished before, kept")
            continue
        data = member_data(run, ds, i)
        resume = member.last.is_file()
        if resume:
            check_member(member, run, i)
            reporter.message(f"{rel} ({i + 1} of {len(paths)}): continuing from its last epoch")
        else:
            env = {**run.env(), "seed": member.plan.train.seed}
            member = Run.create(member.root, member.plan, run.fingerprint, env)
            reporter.message(f"{rel} ({i + 1} of {len(paths)})")
        member.use_data(data)
        plan = member.plan
        result = fit(
            plan,
            data,
            member,
            resume=resume,
            reporter=reporter,
            callbacks=callbacks,
            batch_loss=batch_loss_for(plan, data),
        )
        evaluate_run(member, ds=data)
        close_log(member)
        fits.append(result)
    write_ensemble_weights(run)
    return fits


def check_member(member: Run, run: Run, index: int) -> None:
    """A member found on disk must hold the plan the ensemble gives it."""
    on_disk = Run(member.root)  # reads its plan.yaml
    differ = plan_differences(on_disk.plan, member_plan(run.plan, index))
    if differ:
        raise ConfigError(
            f"{member.root} has another plan than the ensemble gives it ({'; '.join(differ[:3])})",
            hint="delete that folder to train it again, or choose another --output",
        )


def write_ensemble_weights(run: Run) -> None:
    """checkpoints/best.safetensors of the ensemble: every member's best weights in one file."""
    import torch

    from medlens.models.checkpoint import save_weights
    from medlens.models.ensemble import EnsembleModel

    cpu = torch.device("cpu")
    models, infos = [], []
    for member in run.members():
        model, info = member.load_model(cpu)
        models.append(model)
        infos.append(info)
    ensemble = EnsembleModel(models, multi_label=run.plan.data.task == "multi-label")
    info = {
        "members": len(models),
        "kind": run.ensemble()["kind"],
        "member_val_auc": [i.get("val_auc") for i in infos],
    }
    save_weights(run.best, ensemble, info)
