"""CPU speed of a ResNet-18 at 224 px: PyTorch fp32 eager against ONNX Runtime fp32 and INT8,
and the test AUC that INT8 costs on real MedMNIST test splits.

Part 1 (speed): timm ``resnet18`` (random init, 1 input channel, 2 classes) exported the way
``medlens export`` does it (torch.export-based exporter, then static INT8: QDQ, per-channel,
7-bit weights, percentile ranges), timed at each batch size for ``--seconds`` after a warm-up;
each cell is the best of ``--rounds`` interleaved rounds. PyTorch runs eager fp32 in both
memory layouts; the ratio is taken against the faster one. ONNX Runtime uses
``intra_op_num_threads`` = PyTorch's thread count and graph optimisation level ALL.

Part 2 (accuracy): for each ``--dataset`` (a quick default-plan medlens run at 28 px, trained
into a temporary folder, or into ``--keep`` and reused from there, unless ``--run`` names
existing runs), ``export_run(int8=True)`` and
the test AUC of PyTorch, ONNX fp32 and ONNX INT8. ``--resnet224-epochs N`` also trains timm's
ResNet-18 at 224 px on BreastMNIST upsampled from 28 px (N epochs on the CPU) and reports its
INT8 AUC change: the model of part 1, on real (if upsampled) images.

Run: python benchmarks/export_speed.py [--seconds 3] [--dataset breastmnist pneumoniamnist]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medlens.export.quantize import quantize_int8
from medlens.export.runtime import make_session
from medlens.export.speed import batch_of, hardware, onnx_runner, throughput, torch_runner
from medlens.export.torch_to_onnx import export_module


def speed_table(
    size: int, batch_sizes: list[int], seconds: float, rounds: int, tmp: Path
) -> list[dict]:
    """Best images/s over ``rounds`` interleaved rounds, per variant and batch size."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", in_chans=1, num_classes=2, zero_init_last=False).eval()
    rng = np.random.default_rng(0)
    images = rng.standard_normal((64, 1, size, size)).astype(np.float32)
    fp32, int8, qop = tmp / "r18.onnx", tmp / "r18.int8.onnx", tmp / "r18.int8.qop.onnx"
    graph = export_module(model, torch.from_numpy(images[:2]), fp32)
    calib = [images[i : i + 16] for i in range(0, 64, 16)]
    quantize_int8(fp32, int8, iter(calib))
    quantize_int8(fp32, qop, iter(calib), quant_format="QOperator")
    channels_last = model.to(memory_format=torch.channels_last)
    variants = {
        "PyTorch fp32 eager (NCHW)": torch_runner(model, channels_last=False),
        "PyTorch fp32 eager (channels_last)": torch_runner(channels_last, channels_last=True),
        "ONNX Runtime fp32": onnx_runner(make_session(fp32)),
        "ONNX Runtime INT8 (QDQ)": onnx_runner(make_session(int8)),
        "ONNX Runtime INT8 (QOperator)": onnx_runner(make_session(qop)),
    }
    sizes = {"ONNX Runtime fp32": fp32, "ONNX Runtime INT8 (QDQ)": int8}
    sizes["ONNX Runtime INT8 (QOperator)"] = qop
    rows = [
        {
            "name": name,
            "speed": {},
            "mb": sizes[name].stat().st_size / 1e6 if name in sizes else None,
        }
        for name in variants
    ]
    for _ in range(rounds):  # interleaved, so that a noisy moment hits every variant alike
        for row, run in zip(rows, variants.values(), strict=True):
            for b in batch_sizes:
                got = throughput(run, batch_of(images, b), seconds=seconds)
                best = row["speed"].get(b)
                if best is None or got["images_per_s"] > best["images_per_s"]:
                    row["speed"][b] = got
    torch_rows = [r for r in rows if r["name"].startswith("PyTorch")]
    for b in batch_sizes:
        base = max(r["speed"][b]["images_per_s"] for r in torch_rows)
        for r in rows:
            r.setdefault("ratio", {})[b] = r["speed"][b]["images_per_s"] / base
    print(f"exporter: {graph['exporter']}, opset {graph['opset']}")
    return rows


def _upsampled_breast(data_dir: str, size: int, out: Path) -> Path:
    """BreastMNIST with every image resized from 28 px to ``size`` (bilinear), MedMNIST .npz."""
    from PIL import Image

    src = np.load(Path(data_dir) / "breastmnist.npz")
    arrays = {}
    for split in ("train", "val", "test"):
        imgs = src[f"{split}_images"]
        arrays[f"{split}_images"] = np.stack(
            [
                np.asarray(Image.fromarray(i).resize((size, size), Image.Resampling.BILINEAR))
                for i in imgs
            ]
        )
        arrays[f"{split}_labels"] = src[f"{split}_labels"]
    path = out / f"breastmnist{size}up.npz"
    np.savez(path, **arrays)
    return path


def auc_rows(args, tmp: Path) -> list[dict]:
    """Test AUC of PyTorch, ONNX fp32 and ONNX INT8 for each run."""
    import medlens.api as ml
    from medlens.export import export_run

    runs: list[tuple[str, Path, float]] = [(Path(r).name, Path(r), 0.0) for r in args.run or []]
    where = Path(args.keep) if args.keep else tmp
    for name in args.dataset if not args.run else []:
        start = time.perf_counter()
        out = where / f"{name}-small_cnn"
        if not (out / "calibration.json").is_file():
            ml.train(name, data_dir=args.data_dir, output=out, device="cpu")
        runs.append((f"{name} (small_cnn, 28 px)", out, time.perf_counter() - start))
    if args.resnet224_epochs:
        start = time.perf_counter()
        out = where / f"breastmnist224up-resnet18-{args.resnet224_epochs}ep"
        if not (out / "calibration.json").is_file():
            npz = _upsampled_breast(args.data_dir, 224, tmp)
            ml.train(
                str(npz),
                output=out,
                device="cpu",
                model="resnet18",
                epochs=args.resnet224_epochs,
                batch_size=32,
            )
        label = f"breastmnist upsampled to 224 px (resnet18, {args.resnet224_epochs} epochs)"
        runs.append((label, out, time.perf_counter() - start))
    rows = []
    for label, run, train_s in runs:
        info = export_run(run, int8=True, benchmark_seconds=args.seconds / 3)
        v = info["variants"]
        rows.append({"label": label, "train_s": train_s, "n_test": info["test"]["n_images"], **v})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="image side for the speed part")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    parser.add_argument("--data-dir", default="../shared/data/medmnist")
    parser.add_argument(
        "--dataset", nargs="*", default=["breastmnist", "pneumoniamnist"], help="28 px runs"
    )
    parser.add_argument("--run", nargs="*", help="existing run directories instead of training")
    parser.add_argument("--resnet224-epochs", type=int, default=0)
    parser.add_argument(
        "--keep", help="train runs into this folder and reuse them there (default: temporary)"
    )
    args = parser.parse_args()

    hw = hardware()
    print(
        f"hardware: {hw['cpu']}, {hw['cores']} cores ({', '.join(hw['isa']) or 'no AVX2'}), "
        f"torch {hw['torch']} ({hw['torch_threads']} threads), onnxruntime {hw['onnxruntime']}, "
        f"onnx {hw['onnx']}; {time.strftime('%Y-%m-%d')}"
    )
    with tempfile.TemporaryDirectory(prefix="medlens-export-bench-") as tmp:
        tmp = Path(tmp)
        rows = speed_table(args.size, args.batch_sizes, args.seconds, args.rounds, tmp)
        print(
            f"\nResNet-18 (timm, 1 channel, 2 classes), {args.size} x {args.size}, CPU; best of "
            f"{args.rounds} interleaved rounds of {args.seconds:g} s per cell\n"
        )
        head = " | ".join(f"images/s b{b} | x PyTorch b{b}" for b in args.batch_sizes)
        print(f"| variant | file MB | {head} |")
        print("|---|---|" + "---|---|" * len(args.batch_sizes))
        for r in rows:
            cells = " | ".join(
                f"{r['speed'][b]['images_per_s']:.1f} | {r['ratio'][b]:.2f}x"
                for b in args.batch_sizes
            )
            mb = "-" if r["mb"] is None else f"{r['mb']:.1f}"
            print(f"| {r['name']} | {mb} | {cells} |")

        results = auc_rows(args, tmp)
    print("\nTest AUC on real MedMNIST test splits (export_run(int8=True))\n")
    print(
        "| run | test images | PyTorch fp32 AUC | ONNX fp32 AUC | ONNX INT8 AUC | INT8 change "
        "| max abs dp INT8 vs PyTorch | INT8 / fp32 ONNX images/s b64 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        pt, fp, q = r["pytorch_fp32"], r["onnx_fp32"], r["onnx_int8"]
        speedup = q["speed"]["64"]["images_per_s"] / fp["speed"]["64"]["images_per_s"]
        print(
            f"| {r['label']} | {r['n_test']} | {pt['test_auc']:.4f} | {fp['test_auc']:.4f} | "
            f"{q['test_auc']:.4f} | {q['test_auc'] - fp['test_auc']:+.4f} | "
            f"{q['max_abs_prob_diff']:.3f} | {speedup:.2f}x |"
        )


if __name__ == "__main__":
    main()
