"""One trial: the base plan with the trial's parameters, trained as an ordinary run.

The trial's score is the best validation AUC over its epochs (the score that picks the run's
best checkpoint); the test split is never looked at. After every epoch the val AUC is reported
to the pruner; a pruned trial stops there and its run is marked ``pruned.json``.

With ``train.folds`` in the base plan (``tune --folds K``) a trial is a K-fold
cross-validation and its score the out-of-fold AUC over train+val; such trials are not pruned
(each fold restarts the epochs the pruner counts).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from medlens.config import Plan, apply_overrides
from medlens.data.dataset import ArrayDataset
from medlens.data.fingerprint import Fingerprint
from medlens.errors import TrainingError
from medlens.progress import Reporter
from medlens.run import Run, close_log, file_logger, write_json
from medlens.stages.ensemble import check_ensemble_plan, train_members
from medlens.stages.evaluate import evaluate_run
from medlens.stages.train import start_run, train_run
from medlens.train.loop import EpochCallback
from medlens.tune import require_optuna
from medlens.tune.space import plan_overrides, suggest_params


def epoch_score(record: dict[str, Any]) -> float:
    """The epoch's val AUC, or its val ACC when AUC is undefined (as fit picks checkpoints)."""
    auc = record["val_auc"]
    return float(auc) if math.isfinite(auc) else float(record["val_acc"])


def pruning_callback(trial: Any) -> EpochCallback:
    """Report each epoch's val score to the trial; raise TrialPruned when the pruner says so."""
    optuna = require_optuna()

    def report(epoch: int, record: dict[str, Any]) -> None:
        score = epoch_score(record)
        trial.report(score, step=epoch + 1)
        if trial.should_prune():
            trial.set_user_attr("pruned_at_epoch", epoch + 1)
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} (val AUC {score:.4f})")

    return report


def abandon(run: Run, trial: Any, reason: str) -> None:
    """Mark a pruned trial's run: pruned.json says why; the resume checkpoint is deleted (the
    run is not to be continued), best.safetensors and curves.csv are kept for inspection."""
    file_logger(run).info("trial %d %s", trial.number, reason)
    write_json(
        run.root / "pruned.json",
        {
            "trial": trial.number,
            "reason": reason,
            "pruned_at_epoch": trial.user_attrs.get("pruned_at_epoch"),
        },
    )
    run.last.unlink(missing_ok=True)


class Objective:
    """``objective(trial) -> best val AUC`` for ``study.optimize``."""

    def __init__(
        self,
        base: Plan,
        fp: Fingerprint,
        ds: ArrayDataset,
        trials_dir: Path,
        fixed: set[str],
        reporter: Reporter,
    ) -> None:
        self.base, self.fp, self.ds = base, fp, ds
        self.trials_dir, self.fixed, self.reporter = trials_dir, fixed, reporter

    def plan_for(self, params: dict[str, Any]) -> Plan:
        return apply_overrides(self.base, plan_overrides(params, self.base))

    def __call__(self, trial: Any) -> float:
        optuna = require_optuna()
        params = suggest_params(trial, self.base, self.fixed)
        plan = self.plan_for(params)
        path = self.trials_dir / f"trial-{trial.number:04d}"
        Run(path).check_new()
        trial.set_user_attr("run_dir", str(path.resolve()))
        trial.set_user_attr("plan", plan.model_dump(mode="json"))
        run = start_run(path, plan, self.fp.model_dump(mode="json"))
        run.use_data(self.ds)
        shown = ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items()
        )
        self.reporter.message(f"trial {trial.number}: {shown}")
        if plan.train.folds:
            return self.cross_validated(run, trial)
        try:
            result, _ = train_run(
                run,
                self.ds,
                reporter=self.reporter,
                callbacks=[pruning_callback(trial)],
                evaluate=False,
            )
        except optuna.TrialPruned as exc:
            abandon(run, trial, str(exc))
            raise
        except TrainingError:
            self.reporter.stop()  # the failed epoch's bar: rich allows one live display
            raise
        finally:
            close_log(run)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epochs_run", result.epochs_run)
        return result.best_val_auc

    def cross_validated(self, run: Run, trial: Any) -> float:
        """Train a trial's folds; its score is the out-of-fold AUC (ACC when undefined)."""
        check_ensemble_plan(run.plan, self.ds)
        try:
            train_members(run, self.ds, reporter=self.reporter)
            oof = evaluate_run(run, ds=self.ds)["val"]
        except TrainingError:
            self.reporter.stop()
            raise
        finally:
            close_log(run)
        trial.set_user_attr("cv_auc", oof["auc"])
        return epoch_score({"val_auc": oof["auc"], "val_acc": oof["acc"]})
