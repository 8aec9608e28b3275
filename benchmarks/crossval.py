"""One run against a k-fold cross-validation ensemble, per dataset and seed, on this machine.

For each dataset and seed this trains what ``medlens train <flag> --seed S`` trains (the
default plan for the device) and what ``medlens train <flag> --seed S --folds K`` trains (K
fold runs and their ensemble), and writes a markdown table of test ACC / AUC (mean ± sd over
the seeds) and wall time, beside the MedMNIST v2 ResNet-18 (28) cell of the paper.

Resume-friendly: a run whose metrics.json exists is read, not retrained (its time is the one
recorded then, in ``<runs>/results.json``), and an interrupted cross-validation finishes
its folds when the script is run again. Each finished run is added to results.json at once,
so what is there when the script is stopped is measured.

A recipe variant is measured with ``--set KEY=VALUE`` (as ``medlens train --set``; give it its
own ``--runs``, since runs are found by dataset, kind and seed), ``--folds-only`` leaving out the
one-run rows. Its choice should rest on the out-of-fold columns, not on the test split.

Run: python benchmarks/crossval.py --data-dir ../shared/data/medmnist --runs /tmp/cv_runs
     [--datasets breastmnist pneumoniamnist] [--seeds 0 1 2] [--folds 5] [--out table.md]
     [--set train.epochs=100 ...] [--folds-only]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import medmnist_baselines as paper  # run as a script: benchmarks/ is sys.path[0]

_HERE = Path(__file__).resolve().parent
RESNET_18_28 = "ResNet-18 (28)"


def run_once(flag: str, seed: int, folds: int | None, args, results: dict) -> dict:
    """Train (or read) one run; its test ACC/AUC and wall time, recorded in ``results``."""
    import medlens.api as ml
    from medlens.config.plan import parse_set_options

    key = f"{flag}/{'folds' if folds else 'single'}-{seed}"
    out = Path(args.runs) / key
    if key in results and (out / "metrics.json").is_file():
        return results[key]
    start = time.perf_counter()
    result = ml.train(
        flag,
        data_dir=args.data_dir,
        output=out,
        seed=seed,
        folds=folds,
        device=args.device,
        overrides=parse_set_options(args.set),
    )
    m = result.metrics
    row = {
        "dataset": flag,
        "kind": f"{folds}-fold ensemble" if folds else "one run",
        "seed": seed,
        "test_acc": m["test"]["acc"],
        "test_auc": m["test"]["auc"],
        "seconds": round(time.perf_counter() - start, 1),
        "model": result.plan.model.name,
        "epochs": result.plan.train.epochs,
    }
    if folds:
        cv = m["cross_validation"]
        row["oof_acc"], row["oof_auc"] = m["val"]["acc"], m["val"]["auc"]
        row["oof_auc_ci"] = [cv["oof_ci"]["auc"]["low"], cv["oof_ci"]["auc"]["high"]]
        row["fold_test_auc_mean"] = cv["spread"]["test_auc"]["mean"]
        row["fold_test_auc_sd"] = cv["spread"]["test_auc"]["sd"]
    results[key] = row
    _save(args, results)
    print(json.dumps(row), flush=True)
    return row


def _save(args, results: dict) -> None:
    path = Path(args.runs) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def _mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(results: dict, folds: int) -> str:
    """The markdown table: one row per dataset and kind of run."""
    lines = [
        "| dataset | run | seeds | test ACC | test AUC | wall time per run | OOF ACC | OOF AUC "
        "| paper ResNet-18 (28) ACC / AUC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    flags = list(dict.fromkeys(r["dataset"] for r in results.values()))
    for flag in flags:
        for kind in ("one run", f"{folds}-fold ensemble"):
            rows = [r for r in results.values() if r["dataset"] == flag and r["kind"] == kind]
            if not rows:
                continue
            ref = paper.baselines(flag).get(RESNET_18_28)
            cell = f"{ref.acc:.3f} / {ref.auc:.3f}" if ref else "-"
            oof = [r["oof_auc"] for r in rows if "oof_auc" in r]
            oof_acc = [r["oof_acc"] for r in rows if "oof_acc" in r]
            lines.append(
                f"| {flag} | {kind} ({rows[0]['model']}, {rows[0]['epochs']} epochs) "
                f"| {', '.join(str(r['seed']) for r in rows)} "
                f"| {_mean_sd([r['test_acc'] for r in rows])} "
                f"| {_mean_sd([r['test_auc'] for r in rows])} "
                f"| {statistics.mean(r['seconds'] for r in rows):.0f} s "
                f"| {_mean_sd(oof_acc) if oof_acc else '-'} "
                f"| {_mean_sd(oof) if oof else '-'} | {cell} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(_HERE.parents[1] / "shared/data/medmnist"))
    parser.add_argument("--runs", default="runs/crossval")
    parser.add_argument("--datasets", nargs="+", default=["breastmnist", "pneumoniamnist"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="write the table here (markdown)")
    parser.add_argument("--set", action="append", default=[], help="a plan field, KEY=VALUE")
    parser.add_argument("--folds-only", action="store_true", help="no one-run rows")
    args = parser.parse_args(argv)

    path = Path(args.runs) / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    start = time.perf_counter()
    for flag in args.datasets:
        for seed in args.seeds:
            for folds in (args.folds,) if args.folds_only else (None, args.folds):
                run_once(flag, seed, folds, args, results)
    text = (
        f"{table(results, args.folds)}\n\n{' '.join(args.set) or 'default plan'}; "
        f"{date.today()}, {platform.processor() or 'CPU'}, "
        f"{platform.platform()}; {time.perf_counter() - start:.0f} s this invocation\n"
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
