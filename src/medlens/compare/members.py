"""The runs of a comparison: one ordinary run directory per (model, seed).

Every run shares one loaded dataset (so one set of splits and preprocessing) and one plan, in
which only ``model.name`` and ``train.seed`` differ. A finished run (metrics.json and
predictions.csv written) is read back, never retrained; an interrupted one is resumed.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.config import Plan, apply_overrides, load_plan
from medlens.data.dataset import ArrayDataset
from medlens.data.fingerprint import Fingerprint
from medlens.errors import CheckpointError, ConfigError
from medlens.progress import Reporter
from medlens.run import Run, member_count, plan_differences
from medlens.stages.ensemble import train_members
from medlens.stages.evaluate import evaluate_run
from medlens.stages.train import start_run, train_run

# plan fields in which the runs of one comparison differ
MEMBER_FIELDS = ("model.name", "train.seed")


@dataclass(frozen=True)
class Member:
    """One (model, seed) of the comparison and its plan."""

    model: str
    seed: int
    plan: Plan
    run: Run


def run_name(model: str, seed: int) -> str:
    """Directory name of a run: the model name made path-safe, then the seed."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', model)}-seed{seed}"


def members(base: Plan, models: list[str], seeds: list[int], runs_dir: Path) -> list[Member]:
    """Every (model, seed) with its plan: the base plan with model.name and train.seed set."""
    return [
        Member(
            model,
            seed,
            apply_overrides(base, {"model.name": model, "train.seed": seed}),
            Run(runs_dir / run_name(model, seed)),
        )
        for model in models
        for seed in seeds
    ]


def is_finished(run: Run) -> bool:
    """Trained and evaluated: best weights, metrics.json and predictions.csv."""
    return run.best.is_file() and run.metrics_file.is_file() and run.predictions_file.is_file()


def check_same_plan(member: Member) -> None:
    """An existing run must hold this member's plan, or it belongs to another comparison."""
    if not member.run.plan_file.is_file():
        return
    found = load_plan(member.run.plan_file)
    wrong = plan_differences(found, member.plan)
    if wrong:
        raise ConfigError(
            f"{member.run.root} was trained with another plan ({'; '.join(wrong[:4])})",
            hint="rerun with the options it was started with, or choose another --output",
        )


def train_member(member: Member, fp: Fingerprint, ds: ArrayDataset, reporter: Reporter) -> str:
    """Train and evaluate one run unless it is finished; ``"done"``, ``"resumed"`` or
    ``"trained"``."""
    check_same_plan(member)
    if is_finished(member.run):
        return "done"
    resume = member.run.last.is_file()
    fingerprint = fp.model_dump(mode="json")
    if member_count(member.plan):  # --folds: the member is a cross-validation ensemble
        resume = member.run.ensemble_file.is_file()
        run = start_run(member.run.root, member.plan, fingerprint)
        run.use_data(ds)
        train_members(run, ds, reporter=reporter)
        evaluate_run(run, ds=ds)
        return "resumed" if resume else "trained"
    run = member.run if resume else start_run(member.run.root, member.plan, fingerprint)
    run.use_data(ds)
    train_run(run, ds, resume=resume, reporter=reporter)
    return "resumed" if resume else "trained"


@dataclass
class MemberResult:
    """What a finished run contributes: its test metrics, training time, test probabilities."""

    model: str
    seed: int
    run_dir: Path
    test: dict[str, Any]
    train_seconds: float
    epochs: int
    test_probs: np.ndarray
    cv_auc: float | None = None  # --folds: the out-of-fold AUC over train+val
    oof_probs: np.ndarray | None = None  # --folds: out-of-fold probabilities, pooled order


def train_seconds(run: Run) -> tuple[float, int]:
    """Seconds spent in training steps over all epochs (curves.csv), and the epochs run."""
    if run.is_ensemble():  # every member's training time, each member's epochs
        parts = [train_seconds(m) for m in run.members()]
        return float(sum(s for s, _ in parts)), max(e for _, e in parts)
    rows = run.curves()
    return float(sum(float(r["seconds"]) for r in rows)), len(rows)


def test_probabilities(run: Run, plan: Plan, ds: ArrayDataset) -> np.ndarray:
    """The run's (uncalibrated) test probabilities from predictions.csv, checked to describe
    the same test cases, in the same order, as ``ds``."""
    names = plan.data.label_names
    columns = [f"p_{n}" for n in names]
    with run.predictions_file.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    test = ds.splits["test"]
    order = [int(r["index"]) for r in rows]
    if order != list(range(len(test))):
        raise CheckpointError(
            f"{run.predictions_file} has {len(rows)} test rows but the test split has {len(test)}",
            hint=f"re-evaluate the run (medlens evaluate {run.root}) or delete it to retrain",
        )
    if plan.data.task != "multi-label":
        truth = [names[int(i)] for i in np.asarray(test.labels).ravel()]
        if [r["label"] for r in rows] != truth:
            raise CheckpointError(
                f"{run.predictions_file} was written for other test cases than this data's",
                hint="delete that run so that it is trained on this data",
            )
    n = run.metrics()["test"]["n"]
    if n != len(test):
        raise CheckpointError(f"{run.metrics_file} counts {n} test cases, the data has {len(test)}")
    return np.array([[float(r[c]) for c in columns] for r in rows], dtype=np.float64)


def read_member(member: Member, ds: ArrayDataset) -> MemberResult:
    """A finished run's test metrics (metrics.json), training time and test probabilities."""
    run = member.run
    metrics = run.metrics()
    seconds, epochs = train_seconds(run)
    cross_validated = run.is_cross_validation()
    return MemberResult(
        model=member.model,
        seed=member.seed,
        run_dir=run.root,
        test=metrics["test"],
        train_seconds=seconds,
        epochs=epochs,
        test_probs=test_probabilities(run, member.plan, ds),
        cv_auc=metrics["val"]["auc"] if cross_validated else None,
        oof_probs=run.split_predictions("oof")[1] if cross_validated else None,
    )
