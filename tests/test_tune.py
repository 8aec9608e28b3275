"""``medlens tune``: trials in the study and trials.csv, the best plan from the best trial,
a pruned trial abandoned cleanly, a study continued from the CLI, and clear errors."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

import medlens.api as ml  # noqa: E402
from medlens.api import check_plan_fits  # noqa: E402
from medlens.cli import main  # noqa: E402
from medlens.config import apply_overrides, load_plan  # noqa: E402
from medlens.tune.space import augment_overrides, baseline_params, plan_overrides  # noqa: E402

STUDY = "medlens-breastmnist"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on two shared cores, two threads that wait for each other make
    small models train several times slower (measured: 6 s against 1 s an epoch)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class PruneTrial(optuna.pruners.BasePruner):
    """Prunes one trial (by number) at its first report; a deterministic stand-in for the
    median pruner, which needs several finished trials to compare with."""

    def __init__(self, number: int) -> None:
        self.number = number

    def prune(self, study, trial) -> bool:
        return trial.number == self.number


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tuned(medmnist_dir, tmp_path_factory):
    """Three trials of two epochs on BreastMNIST; the third is pruned after its first epoch.
    The batch size is fixed with --set (so it is not searched) to keep the trials fast."""
    out = tmp_path_factory.mktemp("tune") / "tune"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = ml.tune(
        "breastmnist",
        trials=3,
        output=out,
        data_dir=str(medmnist_dir),
        overrides={"train.batch_size": "128"},
        pruner=PruneTrial(2),
        epochs=2,
        device="cpu",
    )
    return result, out


def load_study(out: Path):
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / 'study.db'}")


def test_three_trials_are_in_the_study_and_trials_csv(tuned):
    result, out = tuned
    assert result.states == {"COMPLETE": 2, "PRUNED": 1}
    trials = load_study(out).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    rows = read_csv(out / "trials.csv")
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED"]
    for t, row in zip(trials[:2], rows, strict=False):
        assert float(row["val_auc"]) == pytest.approx(t.value, abs=1e-12)
        assert float(row["param_lr"]) == pytest.approx(t.params["lr"], abs=1e-15)
        assert float(row["duration_s"]) > 0 and row["run_dir"].endswith(f"trial-{t.number:04d}")
    assert all("batch_size" not in t.params for t in trials)  # fixed with --set: not searched
    base = load_plan(out / "base_plan.yaml")
    assert trials[0].params == baseline_params(base, {"train.batch_size"})  # the planner's plan
    assert trials[0].params["lr"] == base.optim.lr and trials[0].params["augment_strength"] == 1


def test_trials_are_scored_on_val_auc_only(tuned):
    _, out = tuned
    for t in load_study(out).trials[:2]:
        run = Path(t.user_attrs["run_dir"])
        curves = read_csv(run / "curves.csv")
        assert t.value == pytest.approx(max(float(c["val_auc"]) for c in curves), abs=1e-6)
        assert t.intermediate_values == pytest.approx(
            {i + 1: float(c["val_auc"]) for i, c in enumerate(curves)}, abs=1e-6
        )
        # never evaluated: no test metrics or predictions exist for a trial
        assert not (run / "metrics.json").exists() and not (run / "predictions.csv").exists()


def test_best_plan_is_the_best_trials_plan_and_validates(tuned, medmnist_dir):
    result, out = tuned
    study = load_study(out)
    best = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert result.best_number == best.number and result.best_value == best.value
    plan = load_plan(out / "best_plan.yaml")
    check_plan_fits(plan, ml.plan("breastmnist", data_dir=str(medmnist_dir), device="cpu")[2])
    p = best.params
    assert plan.optim.lr == p["lr"] and plan.optim.weight_decay == p["weight_decay"]
    assert plan.model.drop_rate == p["drop_rate"] and plan.loss.name == p["loss"]
    if p["loss"] == "focal":
        assert plan.loss.focal_gamma == p["focal_gamma"]
    else:
        assert plan.loss.label_smoothing == p["label_smoothing"]
    base = load_plan(out / "base_plan.yaml")
    for key, value in augment_overrides(base, p["augment_strength"]).items():
        got = getattr(plan.augment, key.split(".")[1])
        assert got == pytest.approx(value, abs=1e-12)
    assert plan.train.batch_size == 128 and plan.train.epochs == 2
    expected = apply_overrides(base, plan_overrides(p, base))
    assert plan.model_dump(exclude={"notes"}) == expected.model_dump(exclude={"notes"})
    assert f"trial {best.number}" in plan.notes[-1]


def test_pruned_trial_is_recorded_and_its_run_abandoned(tuned):
    _, out = tuned
    pruned = load_study(out).trials[2]
    assert pruned.state == optuna.trial.TrialState.PRUNED
    run = Path(pruned.user_attrs["run_dir"])
    curves = read_csv(run / "curves.csv")
    assert len(curves) == 1  # stopped after the first of two epochs
    first = float(curves[0]["val_auc"])
    assert pruned.intermediate_values == {1: pytest.approx(first, abs=1e-6)}
    assert pruned.value == pytest.approx(first, abs=1e-6)  # Optuna keeps the last report
    assert pruned.user_attrs["pruned_at_epoch"] == 1
    marker = json.loads((run / "pruned.json").read_text())
    assert marker["trial"] == 2 and marker["pruned_at_epoch"] == 1
    assert not (run / "checkpoints" / "last.safetensors").exists()
    assert not (run / "metrics.json").exists()
    row = read_csv(out / "trials.csv")[2]
    assert row["state"] == "PRUNED" and row["pruned_at_epoch"] == "1"
    assert float(row["val_auc"]) == pytest.approx(first, abs=1e-6)


def test_cli_continues_the_study_and_train_takes_the_best_plan(tuned, medmnist_dir, capsys):
    _, out = tuned
    code = main(
        [
            "tune",
            "breastmnist",
            "--trials",
            "1",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--data-dir",
            str(medmnist_dir),
            "--set",
            "train.batch_size=128",
            "--storage",
            f"sqlite:///{out / 'study.db'}",
            "--study-name",
            STUDY,
            "--output",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    study = load_study(out)
    assert len(study.trials) == 4 and len(read_csv(out / "trials.csv")) == 4
    assert "best plan written to" in text and "medlens train --plan" in text
    assert f"best: trial {study.best_trial.number}" in text
    run = out / "trained"
    code = main(["train", "--plan", str(out / "best_plan.yaml"), "--epochs", "1", "-o", str(run)])
    assert code == 0 and (run / "metrics.json").is_file()
    assert load_plan(run / "plan.yaml").optim.lr == study.best_trial.params["lr"]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--storage", "not-a-database-url"], "cannot open the study storage"),
        (["--storage", "postgresql://me:secret@localhost/db"], "postgresql://me:***@localhost"),
        (["--trials", "0"], "--trials must be at least 1"),
        (["--pruner", "mean"], "unknown pruner 'mean'"),
    ],
)
def test_bad_input_is_one_line(capsys, medmnist_dir, tmp_path, args, expected):
    out = tmp_path / "tune"
    code = main(["tune", "breastmnist", "--data-dir", str(medmnist_dir), "-o", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.strip().count("\n") == 0
    assert "secret" not in err and not out.exists()


def test_help_names_the_options(capsys):
    code = main(["tune", "--help"])
    out = capsys.readouterr().out
    assert code == 0
    for option in ("--trials", "--timeout", "--storage", "--study-name", "--epochs", "--set"):
        assert option in out
    assert "--output" in out and "--pruner" in out and "--seed" in out


def test_missing_optuna_names_the_extra(capsys, monkeypatch, medmnist_dir):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    code = main(["tune", "breastmnist", "--data-dir", str(medmnist_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "needs optuna" in err and "pip install optuna" in err


def test_failed_trials_do_not_stop_the_search(capsys, monkeypatch, medmnist_dir, tmp_path):
    from medlens.errors import TrainingError

    calls = []

    def diverging_fit(plan, ds, run, **kwargs):
        calls.append(run.root.name)
        raise TrainingError("the training loss became nan in epoch 1")

    monkeypatch.setattr("medlens.stages.train.fit", diverging_fit)  # as trials call it
    out = tmp_path / "tune"
    code = main(
        [
            *("tune", "breastmnist", "--trials", "2", "--device", "cpu"),
            *("--data-dir", str(medmnist_dir), "-o", str(out)),
        ]
    )
    err = capsys.readouterr().err
    assert calls == ["trial-0000", "trial-0001"]  # the first failure did not end the search
    assert code == 2 and "no trial of study 'medlens-breastmnist' has finished" in err
    assert [r["state"] for r in read_csv(out / "trials.csv")] == ["FAIL", "FAIL"]
    assert not (out / "best_plan.yaml").exists()
