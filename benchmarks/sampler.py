"""Does class-balanced sampling help? ``train.sampler`` none / sqrt / balanced, several seeds.

Trains the default plan of each dataset (``medlens train <flag> --seed S --set
train.sampler=...``) and prints test ACC, AUC and balanced accuracy (mean ± sd over the seeds)
per sampler, with the class shares of the training split: the evidence the planner's choice
of ``train.sampler`` rests on (see ``plan.notes``).

Resume-friendly: a run whose metrics.json exists is read, not retrained.

Run: python benchmarks/sampler.py [--data-dir ../shared/data/medmnist] [--runs /tmp/sampler]
     [--datasets breastmnist] [--seeds 0 1 2] [--samplers none sqrt balanced]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
SAMPLERS = ("none", "sqrt", "balanced")
METRICS = ("acc", "auc", "balanced_accuracy")


def _mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def run_once(flag: str, sampler: str, seed: int, args) -> dict:
    """Train (or read) one run; its test metrics and wall time."""
    import medlens.api as ml

    out = Path(args.runs) / flag / f"{sampler}-{seed}"
    timing = out / "bench_seconds.json"
    if (out / "metrics.json").is_file() and timing.is_file():
        run = ml.Run.open(out)
        return {**run.metrics()["test"], "seconds": json.loads(timing.read_text())}
    start = time.perf_counter()
    result = ml.train(
        flag,
        data_dir=args.data_dir,
        output=out,
        seed=seed,
        device="cpu",
        overrides={"train.sampler": sampler},
    )
    seconds = round(time.perf_counter() - start, 1)
    timing.write_text(json.dumps(seconds))
    return {**result.metrics["test"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(_HERE.parents[1] / "shared/data/medmnist"))
    parser.add_argument("--runs", default="/tmp/medlens-sampler")
    parser.add_argument("--datasets", nargs="+", default=["breastmnist"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    args = parser.parse_args()

    import numpy as np
    import torch

    lines = [
        "| dataset (train class shares) | sampler | seeds | test ACC | test AUC "
        "| balanced accuracy | time per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for flag in args.datasets:
        labels = np.load(Path(args.data_dir) / f"{flag}.npz")["train_labels"].ravel()
        shares = "/".join(f"{c / len(labels):.2f}" for c in np.bincount(labels))
        for sampler in args.samplers:
            rows = [run_once(flag, sampler, seed, args) for seed in args.seeds]
            cells = [_mean_sd([r[m] for r in rows]) for m in METRICS]
            seconds = statistics.mean(r["seconds"] for r in rows)
            lines.append(
                f"| {flag} ({shares}) | {sampler} | {', '.join(map(str, args.seeds))} "
                f"| {' | '.join(cells)} | {seconds:.0f} s |"
            )
            print(lines[-1], flush=True)
    cpu = platform.processor() or platform.machine()
    print(
        f"\n{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {time.strftime('%Y-%m-%d')}\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
