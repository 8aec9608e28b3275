"""An ensemble on ONNX Runtime (CPU): one graph holding every member, against one file per
member run in turn with the probabilities averaged in numpy (what a manifest would drive).

Exports both from an ensemble run (``medlens train ... --folds K``) into a temporary folder,
checks that they agree, and prints median latency and images/s at each batch size.

Run: python benchmarks/ensemble_export.py --run runs/crossval/breastmnist/folds-0
     [--batch-sizes 1 64] [--seconds 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from medlens.export.speed import batch_of, hardware, onnx_runner, throughput
from medlens.export.torch_to_onnx import export_module
from medlens.run import Run


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def main(argv: list[str] | None = None) -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="an ensemble run directory")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)

    run = Run.open(args.run)
    cpu = torch.device("cpu")
    ensemble, _ = run.load_model(cpu)
    members = [m.load_model(cpu)[0] for m in run.members()]
    test = run.data().splits["test"]
    from medlens.data.loader import device_arrays

    data = device_arrays(run.plan, test.images[:64], test.labels[:64], cpu)
    images = torch.cat([x for x, _ in data.batches(64)]).contiguous().numpy()
    example = torch.from_numpy(images[:2])
    opts = ort.SessionOptions()
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "ensemble.onnx"
        export_module(ensemble, example, one)
        files = []
        for i, m in enumerate(members):
            files.append(Path(tmp) / f"member-{i}.onnx")
            export_module(m, example, files[-1])
        graph = ort.InferenceSession(str(one), opts, providers=["CPUExecutionProvider"])
        sessions = [
            ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"]) for f in files
        ]
        runners = [onnx_runner(s) for s in sessions]

        def per_file(batch: np.ndarray) -> np.ndarray:
            return np.mean([_softmax(r(batch)[0]) for r in runners], axis=0)

        graph_run = onnx_runner(graph)
        diff = np.abs(_softmax(graph_run(images)[0]) - per_file(images)).max()
        size_one = one.stat().st_size
        size_files = sum(f.stat().st_size for f in files)
        rows = []
        for b in args.batch_sizes:
            batch = batch_of(images, b)
            rows.append(
                (
                    b,
                    throughput(graph_run, batch, seconds=args.seconds),
                    throughput(per_file, batch, seconds=args.seconds),
                )
            )
    print(
        f"{len(members)} members of {run.plan.model.name}; max |dp| one graph vs files: {diff:.1e}"
    )
    print(f"bytes: one graph {size_one}, {len(files)} files {size_files}")
    print("| batch | one graph: ms, images/s | one file per member: ms, images/s | ratio |")
    print("|---|---|---|---|")
    for b, g, f in rows:
        ratio = f["latency_ms"] / g["latency_ms"]
        print(
            f"| {b} | {g['latency_ms']:.2f}, {g['images_per_s']:.0f} "
            f"| {f['latency_ms']:.2f}, {f['images_per_s']:.0f} | {ratio:.2f}x |"
        )
    hw = hardware()
    print(f"hardware: {hw['cpu']}, {hw['cores']} cores, {hw['torch_threads']} torch threads")


if __name__ == "__main__":
    main()
