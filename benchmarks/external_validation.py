"""Will a PneumoniaMNIST run work on the real chest X-ray JPEGs? External validation,
dataset shift, local recalibration and the OOD guard, measured end to end.

Trains a small_cnn on PneumoniaMNIST (28 px, ``--epochs``), then:

1. ``evaluate_external`` on ``--data`` (default ``../shared/data/chest_xray``, every image of
   both split folders): internal test vs external with CIs and the unpaired drop, the shift
   score, the OOD guard's flagged share;
2. ``recalibrate`` (``--fraction`` of the site) on the chest X-ray folder and on a generated
   shifted site (PneumoniaMNIST val+test through a gamma of 0.5: brighter, flatter contrast):
   ECE, operating-point rates and set coverage on the held-back part, before and after;
3. the OOD rates per method: BreastMNIST (all splits) and AdrenalMNIST3D test slices flagged,
   PneumoniaMNIST test passed.

Prints markdown tables (pasted into docs/results.md).

Run: python benchmarks/external_validation.py [--epochs 4] [--quick] [--keep /tmp/ext-bench]
``--quick`` uses 100 images per class and split folder instead of the whole folder.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np


def shifted_site(path: Path, medmnist: Path) -> Path:
    """PneumoniaMNIST val+test images through a gamma of 0.5 (brighter, flatter contrast),
    as a MedMNIST-layout .npz at ``path`` (800 train, 150 val, the rest test)."""
    z = np.load(medmnist / "pneumoniamnist.npz")
    x = np.concatenate([z["val_images"], z["test_images"]]).astype(float)
    y = np.concatenate([z["val_labels"], z["test_labels"]])
    x = np.clip(255 * (x / 255) ** 0.5, 0, 255).astype(np.uint8)  # gamma 0.5: washed out
    np.savez(path, train_images=x[:800], train_labels=y[:800], val_images=x[800:950],
             val_labels=y[800:950], test_images=x[950:], test_labels=y[950:])  # fmt: skip
    return path


def subset(src: Path, dst: Path, per_class: int) -> Path:
    for split in ("train", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            (dst / split / cls).mkdir(parents=True, exist_ok=True)
            for f in sorted((src / split / cls).iterdir())[:per_class]:
                if not (dst / split / cls / f.name).exists():
                    (dst / split / cls / f.name).symlink_to(f)
    return dst


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def recal_rows(name: str, r: dict) -> list[str]:
    old, new = r["held_out"]["previous"], r["held_out"]["new"]
    out = [
        f"| {name} | ECE | {fmt(old['calibration']['after']['ece'])} | "
        f"{fmt(new['calibration']['after']['ece'])} |"
    ]
    for a, b in zip(old.get("operating_points", []), new.get("operating_points", []), strict=True):
        for rate in ("sensitivity", "specificity"):
            out.append(
                f"| {name} | {rate} at the {a['target']} {a['value']:.0%} point | "
                f"{fmt(a['site'][rate]['value'])} | {fmt(b['site'][rate]['value'])} |"
            )
    if "conformal" in old:
        out.append(
            f"| {name} | set coverage (target {old['conformal']['target_coverage']:.0%}) | "
            f"{fmt(old['conformal']['coverage'])} | {fmt(new['conformal']['coverage'])} |"
        )
    return out


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(here.parent / "shared/data/chest_xray"))
    parser.add_argument("--medmnist", default=str(here.parent / "shared/data/medmnist"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", default="/tmp/medlens-external-bench")
    args = parser.parse_args()

    import torch

    import medlens.api as ml
    from medlens.analyse.ood_guard import case_features
    from medlens.evaluate.ood import ood_scores
    from medlens.run import Run

    keep, medmnist = Path(args.keep), Path(args.medmnist)
    keep.mkdir(parents=True, exist_ok=True)
    run_dir = keep / "pneumonia-small_cnn"
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    ml.train("pneumoniamnist", data_dir=str(medmnist), output=run_dir, device="cpu",
             model="small_cnn", epochs=args.epochs)  # fmt: skip
    print(f"train + evaluate: {time.perf_counter() - t0:.0f} s", flush=True)
    data = Path(args.data)
    if args.quick:
        data = subset(data, keep / "chest_subset", 100)
    t0 = time.perf_counter()
    ext = ml.evaluate_external(run_dir, str(data), name="chest_xray")
    print(f"evaluate --on ({ext['n_images']} images): {time.perf_counter() - t0:.0f} s")

    print(f"\n{platform.node()}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n")  # fmt: skip
    print(f"### {ext['n_images']} chest X-ray JPEGs (external) vs the PneumoniaMNIST test split\n")
    print("| metric | internal test | external | external 95% CI | drop (95% CI) |")
    print("|---|---|---|---|---|")
    cis = ext["confidence_intervals"]
    for k, d in ext["drop"]["metrics"].items():
        c = cis[k]
        drop = f"{fmt(d['drop'])} ({fmt(d['low'])}, {fmt(d['high'])})"
        print(f"| {k} | {fmt(d['internal'])} | {fmt(d['external'])} | {fmt(c['low'])} - "
              f"{fmt(c['high'])} | {drop} |")  # fmt: skip
    cal = ext["calibration"]
    print(f"\nECE {fmt(cal['before']['ece'])} before, {fmt(cal['after']['ece'])} after the run's "
          f"temperature {cal['temperature']:.3f}")  # fmt: skip
    for p in ext.get("operating_points", []):
        print(f"- {p['target']} {p['value']:.0%} point (val threshold {p['threshold']:.3f}): "
              f"site sensitivity {fmt(p['site']['sensitivity']['value'])}, specificity "
              f"{fmt(p['site']['specificity']['value'])}")  # fmt: skip
    if "conformal" in ext:
        print(f"- conformal coverage {fmt(ext['conformal']['coverage'])} "
              f"(target {ext['conformal']['target_coverage']:.0%})")  # fmt: skip
    print(f"- shift: {ext['shift']['statement']}; intensity difference (external - training) "
          f"{json.dumps(ext['shift']['intensity_difference'])}")  # fmt: skip
    print(f"- OOD guard: {ext['ood']['flagged_share']:.1%} of the external images flagged, "
          f"{ext['ood']['internal_test_flagged_share']:.1%} of the internal test")  # fmt: skip

    print(f"\n### Recalibration on {args.fraction:.0%} of the site, judged on the rest\n")
    print("| site | on the held-out part | run's calibration | recalibrated |")
    print("|---|---|---|---|")
    for name, source, label_map in (
        ("chest X-ray folder", str(data), None),
        ("shifted PneumoniaMNIST (generated)", str(shifted_site(keep / "site_b.npz", medmnist)),
         {"0": "normal", "1": "pneumonia"}),
    ):  # fmt: skip
        copy = keep / "recal"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(run_dir, copy)
        r = ml.recalibrate(copy, source, fraction=args.fraction, label_map=label_map)
        print("\n".join(recal_rows(name, r)))

    run = Run.open(run_dir)
    record = json.loads(run.ood_file.read_text())
    with np.load(run.ood_stats_file) as z:
        stats = {k: z[k] for k in z.files}
    model, _ = run.load_model(torch.device("cpu"))
    sets = {
        "PneumoniaMNIST test (passed)": np.load(medmnist / "pneumoniamnist.npz")["test_images"],
        "BreastMNIST, all splits (flagged)": np.concatenate(
            [np.load(medmnist / "breastmnist.npz")[f"{s}_images"] for s in ("train", "val", "test")]
        ),
        "AdrenalMNIST3D test slices (flagged)": np.load(medmnist / "adrenalmnist3d.npz")[
            "test_images"
        ].reshape(-1, 28, 28),
    }
    print(f"\n### OOD guard, threshold at {record['false_alarm']:.0%} false alarms on val\n")
    print("| images | n | " + " | ".join(record["methods"]) + " |")
    print("|---|---|" + "---|" * len(record["methods"]))
    for name, images in sets.items():
        feats, logits = case_features(model, run.plan, images[:, None], torch.device("cpu"))
        shares = []
        for m, s in record["methods"].items():
            flagged = float((ood_scores(m, feats, logits, stats) > s["threshold"]).mean())
            shares.append(1 - flagged if "passed" in name else flagged)
        print(f"| {name} | {len(images)} | " + " | ".join(f"{v:.1%}" for v in shares) + " |")


if __name__ == "__main__":
    main()
