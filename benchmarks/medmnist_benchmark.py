"""Train the default plan on every MedMNIST dataset in a folder and compare with the paper.

For each ``<flag>.npz`` (MedMNIST's naming; ``<flag>_64.npz`` and the like are other sizes, taken
with ``--size 64`` and skipped otherwise) this trains what ``medlens train <flag>`` would train
(the planner's choices for the device, from scratch, no pretrained weights) into
``<runs>/<flag>``, reads the test ACC and AUC (MedMNIST's definitions, best checkpoint by
validation AUC) and writes a markdown table beside the MedMNIST v2 paper's baselines
(``benchmarks/medmnist_baselines.py``), with the wall-clock time per dataset and in total, the
hardware and the date.

Resume-friendly: a dataset whose run already has metrics.json is read, not retrained (its time
is the one recorded then); a run interrupted mid-training continues from its last checkpoint.
``--force`` retrains from scratch.

Run: python benchmarks/medmnist_benchmark.py --data-dir ../shared/data/medmnist [--device cuda]
     [--datasets breastmnist pneumoniamnist] [--out docs/medmnist_benchmark.md] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import medmnist_baselines as paper  # run as a script: benchmarks/ is sys.path[0]

_HERE = Path(__file__).resolve().parent


baselines, best_resnet_28, methods = paper.baselines, paper.best_resnet_28, paper.methods

_FILE = re.compile(r"^(?P<flag>[a-z]+mnist(?:3d)?)(?:_(?P<size>\d+))?\.npz$")
TIMING_FILE = "benchmark.json"


@dataclass
class Result:
    flag: str
    acc: float
    auc: float
    seconds: float
    model: str
    epochs: int
    batch_size: int


def find_datasets(
    data_dir: Path, size: int = 28, wanted: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """(flags to run, lines saying what was skipped and why) for the .npz files in data_dir."""
    flags, skipped = [], []
    for path in sorted(data_dir.glob("*.npz")):
        m = _FILE.match(path.name)
        if m is None:
            skipped.append(f"{path.name}: not a MedMNIST file name")
            continue
        file_size = int(m["size"] or 28)
        if file_size != size:
            skipped.append(
                f"{path.name}: {file_size} px (this run is at {size}; --size {file_size})"
            )
        elif wanted is None or m["flag"] in wanted:
            flags.append(m["flag"])
        else:
            skipped.append(f"{path.name}: not in --datasets")
    missing = sorted(set(wanted or []) - set(flags))
    skipped += [f"{flag}: no {flag}.npz at {size} px in {data_dir}" for flag in missing]
    return flags, skipped


def _read_result(flag: str, run: Path) -> Result:
    metrics = json.loads((run / "metrics.json").read_text())
    timing = json.loads((run / TIMING_FILE).read_text()) if (run / TIMING_FILE).is_file() else {}
    import yaml

    plan = yaml.safe_load((run / "plan.yaml").read_text())
    return Result(
        flag=flag,
        acc=float(metrics["test"]["acc"]),
        auc=float(metrics["test"]["auc"]),
        seconds=float(timing.get("seconds", float("nan"))),
        model=plan["model"]["name"],
        epochs=int(plan["train"]["epochs"]),
        batch_size=int(plan["train"]["batch_size"]),
    )


def run_dataset(flag: str, args: argparse.Namespace) -> Result:
    """Train (or read back) the default plan on one dataset."""
    import medlens.api as ml

    run = Path(args.runs) / flag
    if args.force and run.exists():
        shutil.rmtree(run)
    if (run / "metrics.json").is_file():
        print(f"{flag}: already done in {run}, read back (--force retrains)")
        return _read_result(flag, run)
    resume = (run / "checkpoints" / "last.safetensors").is_file()
    start = time.perf_counter()
    if resume:
        print(f"{flag}: continuing {run} from its last checkpoint")
        ml.train(output=run, resume=True, data_dir=str(args.data_dir))
    else:
        ml.train(
            flag,
            data_dir=str(args.data_dir),
            size=args.size,
            output=run,
            device=args.device,
            epochs=args.epochs,
            download=False,
        )
    seconds = time.perf_counter() - start
    (run / TIMING_FILE).write_text(json.dumps({"seconds": seconds, "resumed": resume}) + "\n")
    return _read_result(flag, run)


def duration(seconds: float) -> str:
    """``95.2`` -> ``"1 min 35 s"``."""
    if seconds != seconds:  # NaN: not recorded
        return "?"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m} min" if h else f"{m} min {s} s" if m else f"{s} s"


def _cell(score) -> str:
    if score is None:
        return "n/s"
    acc = "n/s" if score.acc is None else f"{score.acc:.3f}"
    return f"{acc} / {score.auc:.3f}"


def beats_paper(result: Result) -> str:
    """Whether medlens beats the paper's best ResNet at 28 px on both test ACC and AUC."""
    best_auc, best_acc, compared = best_resnet_28(result.flag)
    if best_auc is None or best_acc is None:
        return "n/a"
    verdict = "yes" if result.acc > best_acc and result.auc > best_auc else "no"
    expected = 2 if not result.flag.endswith("3d") else 6
    return verdict if len(compared) == expected else f"{verdict} (vs {', '.join(compared)})"


def table(results: list[Result]) -> list[str]:
    """Markdown rows for results of one kind (all 2D or all 3D)."""
    cols = methods(results[0].flag)
    head = "| dataset | model, epochs, batch | medlens ACC | medlens AUC | time | "
    head += " | ".join(f"{m} ACC / AUC" for m in cols) + " | beats best ResNet (28)? |"
    lines = [head, "|" + "---|" * (6 + len(cols))]
    for r in results:
        row = baselines(r.flag)
        cells = [_cell(row.get(m)) for m in cols]
        lines.append(
            f"| {r.flag} | {r.model}, {r.epochs}, {r.batch_size} | {r.acc:.3f} | {r.auc:.3f} | "
            f"{duration(r.seconds)} | " + " | ".join(cells) + f" | {beats_paper(r)} |"
        )
    return lines


def report(
    results: list[Result],
    *,
    hardware_line: str,
    command: str,
    today: str,
    notes: list[str] | None = None,
) -> str:
    """The whole markdown section: title, command, hardware, tables, total time, notes."""
    total = sum(r.seconds for r in results if r.seconds == r.seconds)
    out = [
        f"## MedMNIST benchmark ({today})",
        "",
        f"Command: `{command}`",
        "",
        f"Hardware: {hardware_line}",
        "",
    ]
    for kind in (False, True):
        part = [r for r in results if r.flag.endswith("3d") == kind]
        if part:
            out += [*table(part), ""]
    out += [
        f"Total wall-clock: {duration(total)} for {len(results)} dataset(s) (training, "
        "evaluation with 1,000 bootstrap resamples, report files).",
        "",
        "Cells are test ACC / AUC. Paper: MedMNIST v2 (Yang et al., Scientific Data 2023), "
        "mean of at least 3 runs; n/s: not sourced (see benchmarks/medmnist_baselines.py). "
        "'beats' needs both a higher ACC and a higher AUC than the best of the paper's ResNets "
        "at 28 px (28^3 for 3D), compared per metric.",
    ]
    out += ["", *notes] if notes else []
    return "\n".join(out) + "\n"


def hardware_line(device: str) -> str:
    import torch

    from medlens.device import resolve_device
    from medlens.export.speed import hardware

    hw = hardware()
    dev = resolve_device(device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "no GPU"
    return (
        f"{gpu}; {hw['cpu']}, {hw['cores']} cores, torch using {hw['torch_threads']} "
        f"thread(s); torch {hw['torch']}, timm {hw['timm']}"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="folder of MedMNIST .npz files")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--datasets", nargs="*", help="flags to run (default: every file found)")
    p.add_argument("--out", type=Path, help="write the markdown here too")
    p.add_argument("--epochs", type=int, help="override the planner's epochs (a time budget)")
    p.add_argument("--size", type=int, default=28, help="MedMNIST size to run (28, 64, ...)")
    p.add_argument("--runs", default="runs/medmnist_benchmark", help="where the runs go")
    p.add_argument("--force", action="store_true", help="retrain runs that are already done")
    args = p.parse_args(argv)
    flags, skipped = find_datasets(args.data_dir, args.size, args.datasets)
    for line in skipped:
        print(f"skipped {line}")
    results = []
    for flag in flags:
        results.append(run_dataset(flag, args))
        r = results[-1]
        print(f"{flag}: test ACC {r.acc:.3f} AUC {r.auc:.3f} in {duration(r.seconds)}")
    if not results:
        raise SystemExit(f"no MedMNIST {args.size} px .npz files to run in {args.data_dir}")
    notes = [f"Skipped: {line}." for line in skipped]
    if args.epochs:
        notes.append(f"Epochs capped at {args.epochs} (--epochs) instead of the planner's choice.")
    text = report(
        results,
        hardware_line=hardware_line(args.device),
        command=" ".join(["python benchmarks/medmnist_benchmark.py", *(argv or sys.argv[1:])]),
        today=str(date.today()),
        notes=notes,
    )
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
