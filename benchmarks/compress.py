"""Compression on the CPU: a ResNet-50 teacher, a distilled MobileNetV3 and a pruned ResNet-50.

1. Teacher: ``resnet50_medmnist`` (3x3 stride-1 stem, 28 px) trained on ``--dataset`` with the
   default plan except ``--teacher-epochs``, batch 32 and lr 1e-3 (or ``--teacher RUN``).
2. Student: ``medlens distill`` into ``--student`` (default ``mobilenetv3_small_medmnist``) for
   ``--student-epochs`` with ``--alpha`` and ``--temperature``; the teacher runs on every
   augmented batch, which dominates the time on a CPU.
3. Pruned: ``medlens prune`` of the teacher, ``--amount`` of the channels by L2 filter norm,
   then ``--finetune-epochs``.

Then every model's parameters, MACs, test AUC/ACC (MedMNIST definitions, official test split)
and PyTorch fp32 CPU speed (batch 1 latency, batch 64 images/s; best of ``--rounds``
interleaved rounds of ``--seconds`` each) are printed as a markdown table, and written to
``<keep>/benchmark.json``. Runs are kept in ``--keep`` and reused from there when present.

Run: python benchmarks/compress.py --data-dir ../shared/data/medmnist --keep /tmp/compress
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def _timed(label: str, step, timings: dict[str, float]):
    start = time.perf_counter()
    out = step()
    timings[label] = round(time.perf_counter() - start, 1)
    print(f"{label}: {timings[label]:.0f} s", flush=True)
    return out


def build_runs(args) -> tuple[dict[str, Path], dict[str, float]]:
    """Teacher, student and pruned run directories (trained unless found in --keep)."""
    import medlens.api as ml

    keep = Path(args.keep)
    keep.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    teacher = Path(args.teacher) if args.teacher else keep / "teacher"
    if not (teacher / "metrics.json").is_file():
        _timed(
            "train teacher",
            lambda: ml.train(
                args.dataset,
                data_dir=args.data_dir,
                output=teacher,
                device="cpu",
                model="resnet50_medmnist",
                epochs=args.teacher_epochs,
                batch_size=32,
                lr=1e-3,
            ),
            timings,
        )
    student = keep / (
        f"student-{args.student}-a{args.alpha:g}-t{args.temperature:g}-e{args.student_epochs}"
    )
    if not (student / "compression.json").is_file():
        _timed(
            "distill student",
            lambda: ml.distill(
                teacher,
                student=args.student,
                epochs=args.student_epochs,
                alpha=args.alpha,
                temperature=args.temperature,
                output=student,
                data_dir=args.data_dir,
                device="cpu",
                latency_seconds=0,
            ),
            timings,
        )
    pruned = keep / f"pruned-{round(args.amount * 100)}"
    if not (pruned / "compression.json").is_file():
        _timed(
            "prune + fine-tune",
            lambda: ml.prune(
                teacher,
                amount=args.amount,
                finetune_epochs=args.finetune_epochs,
                output=pruned,
                data_dir=args.data_dir,
                device="cpu",
                latency_seconds=0,
            ),
            timings,
        )
    return {"teacher": teacher, "student": student, "pruned": pruned}, timings


def measure(runs: dict[str, Path], args) -> dict[str, dict]:
    """Parameters, MACs, test scores and best-of-rounds CPU speed of each run's best model."""
    from medlens.api import Run
    from medlens.compress.measure import count_macs, cpu_speed, normalised, test_scores
    from medlens.models.registry import count_parameters

    cpu = torch.device("cpu")
    models, rows = {}, {}
    for label, path in runs.items():
        run = Run.open(path)
        plan = run.plan
        ds = run.data(args.data_dir)
        model, _ = run.load_model(cpu)
        inputs = normalised(plan, ds.splits["test"].images[:64])
        models[label] = (model, inputs, plan.train.channels_last)
        rows[label] = {
            "run": str(path),
            "model": plan.model.name + (" (pruned)" if plan.prune else ""),
            "parameters": count_parameters(model),
            "macs": count_macs(model, torch.from_numpy(inputs[:1])),
            "test": test_scores(model, plan, ds),
            "cpu": {},
        }
    for _ in range(args.rounds):  # interleaved: a noisy moment on a shared CPU hits all alike
        for label, (model, inputs, channels_last) in models.items():
            got = cpu_speed(model, inputs, channels_last=channels_last, seconds=args.seconds)
            for b, speed in got.items():
                best = rows[label]["cpu"].get(b)
                if best is None or speed["images_per_s"] > best["images_per_s"]:
                    rows[label]["cpu"][b] = speed
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/medmnist")
    parser.add_argument("--dataset", default="breastmnist")
    parser.add_argument("--keep", default="runs/compress-benchmark", help="runs are kept here")
    parser.add_argument("--teacher", help="an existing teacher run instead of training one")
    parser.add_argument("--teacher-epochs", type=int, default=12)
    # timm's mobilenetv3_small_100 shrinks 28 px to 1 px; the MedMNIST-stem variant keeps 4x4
    parser.add_argument("--student", default="mobilenetv3_small_medmnist")
    parser.add_argument("--student-epochs", type=int, default=40)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--amount", type=float, default=0.5, help="pruned channel fraction")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    args = parser.parse_args()

    from medlens.export.speed import hardware

    runs, timings = build_runs(args)
    rows = measure(runs, args)
    hw = hardware()
    print(
        f"\nhardware: {hw['cpu']}, {hw['cores']} cores ({', '.join(hw['isa']) or 'no AVX2'}), "
        f"torch {hw['torch']} ({hw['torch_threads']} threads), timm {hw['timm']}; "
        f"{time.strftime('%Y-%m-%d')}\n"
    )
    teacher = rows["teacher"]
    print(
        "| model | run | params | MACs | test AUC | AUC - teacher | test ACC "
        "| CPU ms b1 | CPU images/s b64 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        diff = r["test"]["auc"] - teacher["test"]["auc"]
        print(
            f"| {label} | {r['model']} | {r['parameters'] / 1e6:.2f} M | {r['macs'] / 1e6:.0f} M "
            f"| {r['test']['auc']:.4f} | {diff:+.4f} | {r['test']['acc']:.4f} "
            f"| {r['cpu']['1']['latency_ms']:.1f} | {r['cpu']['64']['images_per_s']:.0f} |"
        )
    record = {"hardware": hw, "timings_s": timings, "args": vars(args), "models": rows}
    out = Path(args.keep) / "benchmark.json"
    out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
