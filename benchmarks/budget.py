"""Does the run end when the plan says it will? The chest X-ray folder under time budgets.

Trains ``--data`` (default ``../shared/data/chest_xray``: 5,216 train and 624 test JPEGs,
train/test folders, no val) with the default plan on this machine three times: ``--budget
5m``, ``--budget 15m`` and no budget. Each row gives what the planner chose (model, size,
epochs), the predicted and the real time of training and evaluation (``timing.json``, written
by ``medlens train``), the whole command's time (planning and its probes included) and the
test ACC/AUC. The predicted time should be within 25% of the
real one in every row. Building the image cache is not part of the budget: it is done once per
dataset and size, before planning, and its time is printed apart.

A row whose plan predicts more than ``--max-hours`` (default 2) is planned, not trained (the
no-budget plan of this folder on 2 CPU cores is ResNet-18 at 224 px for 21 epochs, many
hours). With ``--check-epochs N`` that plan is then trained for its first N epochs only
(``train.epochs=N``: the same model, size, batch and data, the planner's estimate redone for
N epochs, evaluation included), so its per-epoch cost at that size is checked against the
real time; the row says so ("none, N of 21 epochs"), and a line under the table reads the
whole plan's time off it (the check run's real time plus the remaining epochs at their real
mean), against the whole plan's prediction.

Run: python benchmarks/budget.py [--data DIR] [--budgets 5m 15m none] [--keep /tmp/budget]
     [--max-hours 2] [--check-epochs 1]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(here.parent / "shared" / "data" / "chest_xray"))
    parser.add_argument("--budgets", nargs="+", default=["5m", "15m", "none"])
    parser.add_argument("--keep", default="/tmp/medlens-budget", help="runs go here")
    parser.add_argument("--max-hours", type=float, default=2.0, help="plan only above this")
    parser.add_argument(
        "--check-epochs", type=int, default=0, help="train this many epochs of a plan too long"
    )
    args = parser.parse_args()

    import torch

    import medlens.api as ml

    keep = Path(args.keep)
    keep.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ml.data_info(args.data)  # builds the cache at the default size, outside every budget
    print(f"cache (default size): {time.perf_counter() - start:.0f} s", flush=True)
    rows, checks = [], []
    for budget in args.budgets:
        out = keep / f"budget-{budget}"
        full = None  # (epochs, predicted s) of a plan too long whose first epochs are checked
        overrides = {} if budget == "none" else {"train.budget": budget}
        check = keep / f"budget-{budget}-{args.check_epochs}-epochs"
        if budget == "none" and not (out / "timing.json").is_file():
            # a budget caps itself; the planner's own recipe may not. The plan a check run
            # was cut from is kept beside it: a rerun reads it instead of probing again.
            planned = check / "full_plan.json"
            if args.check_epochs and planned.is_file():
                row = json.loads(planned.read_text())
            else:
                row = _planned_only(budget, ml.plan(args.data, device="cpu")[0])
            hours = row["predicted_s"] / 3600
            if hours > args.max_hours:
                rows.append(row)
                print(f"{budget}: predicted {hours:.1f} h, not run", flush=True)
                if not args.check_epochs:
                    continue
                out, full = check, (row["epochs"], row["predicted_s"])
                budget = f"{budget}, {args.check_epochs} of {row['epochs']} epochs"
                overrides = {"train.epochs": args.check_epochs}
        if not (out / "timing.json").is_file():
            began = time.perf_counter()
            ml.train(args.data, output=out, device="cpu", overrides=overrides)
            command_s = round(time.perf_counter() - began, 1)
            (out / "command_seconds.json").write_text(json.dumps(command_s))
            if full is not None:
                (out / "full_plan.json").write_text(json.dumps(rows[-1]))
            print(f"{budget}: command took {command_s:.0f} s", flush=True)
        run = ml.Run.open(out)
        timing = json.loads(run.timing_file.read_text())
        command = out / "command_seconds.json"
        command_s = json.loads(command.read_text()) if command.is_file() else None
        test = run.metrics()["test"]
        plan = run.plan
        side = plan.data.preprocess.size[-1] if plan.data.preprocess else "-"
        rows.append(
            {
                "budget": budget,
                "model": plan.model.name,
                "size": side,
                "epochs": plan.train.epochs,
                "predicted_s": timing["predicted_s"],
                "actual_s": timing["actual_s"],
                "command_s": command_s,
                "ratio": timing["actual_s"] / timing["predicted_s"],
                "acc": test["acc"],
                "auc": test["auc"],
            }
        )
        if full is not None:
            checks.append(_extrapolated(rows[-1], out, *full))
    cpu = platform.processor() or platform.machine()
    print(
        f"\n{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {time.strftime('%Y-%m-%d')}\n"
    )
    header = ("budget", "model", "size", "epochs", "predicted", "real", "real/predicted")
    print("| " + " | ".join((*header, "whole command", "test ACC", "test AUC")) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["actual_s"] is None:
            print(
                f"| {r['budget']} | {r['model']} | {r['size']} | {r['epochs']} | "
                f"{r['predicted_s'] / 3600:.1f} h | not run | - | - | - | - |"
            )
            continue
        print(
            f"| {r['budget']} | {r['model']} | {r['size']} | {r['epochs']} | "
            f"{r['predicted_s'] / 60:.1f} min | {r['actual_s'] / 60:.1f} min | {r['ratio']:.2f} | "
            f"{_minutes(r['command_s'])} | {r['acc']:.3f} | {r['auc']:.3f} |"
        )
    print("\n".join(checks))
    (keep / "budget.json").write_text(json.dumps(rows, indent=2) + "\n")


def _extrapolated(row: dict, out: Path, epochs: int, predicted_s: float) -> str:
    """The whole plan's time read off its checked first epochs: the real time of the check
    run (setup, those epochs, evaluation) plus the remaining epochs at their mean real time."""
    with (out / "curves.csv").open(newline="") as f:
        epoch_s = [float(r["seconds"]) for r in csv.DictReader(f)]
    real = row["actual_s"] + (epochs - len(epoch_s)) * sum(epoch_s) / len(epoch_s)
    return (
        f"{row['budget']}: an epoch took {sum(epoch_s) / len(epoch_s) / 60:.1f} min; the "
        f"{epochs}-epoch plan, predicted {predicted_s / 3600:.2f} h, reads as "
        f"{real / 3600:.2f} h from it (real/predicted {real / predicted_s:.2f})"
    )


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def _planned_only(budget: str, plan) -> dict:
    """A row for a plan too long to train here: what it chose and its predicted time."""
    side = plan.data.preprocess.size[-1] if plan.data.preprocess else "-"
    return {
        "budget": budget,
        "model": plan.model.name,
        "size": side,
        "epochs": plan.train.epochs,
        "predicted_s": plan.train.estimated_seconds,
        "actual_s": None,
        "command_s": None,
        "ratio": None,
        "acc": None,
        "auc": None,
    }


if __name__ == "__main__":
    main()
