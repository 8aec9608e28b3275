"""What a search leaves behind: trials.csv (every trial of the study) and best_plan.yaml."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from medlens.config import Plan, validate_plan
from medlens.errors import TrainingError
from medlens.tune import require_optuna

FIELDS = (
    "number",
    "state",
    "val_auc",
    "duration_s",
    "best_epoch",
    "epochs_run",
    "pruned_at_epoch",
)


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial of the study, from its storage (other workers' trials too)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "val_auc": t.value,
                "duration_s": None if t.duration is None else round(t.duration.total_seconds(), 2),
                "best_epoch": ua.get("best_epoch"),
                "epochs_run": ua.get("epochs_run"),
                "pruned_at_epoch": ua.get("pruned_at_epoch"),
                **{f"param_{k}": v for k, v in t.params.items()},
                "started": t.datetime_start.isoformat(timespec="seconds")
                if t.datetime_start
                else None,
                "run_dir": ua.get("run_dir"),
            }
        )
    return rows


def write_trials_csv(study: Any, path: Path) -> list[dict[str, Any]]:
    """trials.csv: number, state, val AUC, duration, epochs, then one column per parameter."""
    rows = trial_rows(study)
    params = sorted({k for r in rows for k in r if k.startswith("param_")})
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*FIELDS, *params, "started", "run_dir"])
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return rows


def best_trial(study: Any) -> Any:
    """The finished trial with the highest val AUC, or TrainingError when none finished."""
    optuna = require_optuna()
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        raise TrainingError(
            f"no trial of study {study.study_name!r} has finished",
            hint="run more trials (--trials) or give them more time (--timeout)",
        )
    return study.best_trial


def best_plan(study: Any) -> tuple[Plan, Any]:
    """The best trial's plan as stored in the study, with a note saying where it came from."""
    trial = best_trial(study)
    plan = validate_plan(trial.user_attrs["plan"], where=f"trial {trial.number} of the study")
    params = ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in trial.params.items()
    )
    note = (
        f"tuned: trial {trial.number} of Optuna study {study.study_name!r}, val AUC "
        f"{trial.value:.4f}: {params}"
    )
    return plan.model_copy(update={"notes": [*plan.notes, note]}), trial
