"""Cache-building speed: files per second for a folder of PNGs and one of DICOMs.

Compares, in the same run and on the same files:
  baseline    a plain one-process loop: PIL / pydicom read, PIL resize to the target size
  medlens x1  medlens' cache builder with one worker (full pipeline: percentile normalisation,
              aspect-keeping pad, uint8 cache on disk)
  medlens xN  the same with one worker per CPU core

Run: python benchmarks/cache_speed.py [--n 400] [--size 224]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file

from medlens.data.cache import build_cache
from medlens.data.folders import scan_folder
from medlens.data.preprocess import PreprocessConfig


def make_pngs(root: Path, n: int, side: int = 512) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        img = rng.normal(120, 40, (side, side)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:05d}.png")


def make_dicoms(root: Path, n: int) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    tile = ds.pixel_array.astype(np.int16)
    big = np.tile(tile, (4, 4))  # 512 x 512, a CT slice's usual size
    ds.Rows, ds.Columns = big.shape
    ds.PixelData = big.tobytes()
    for i in range(n):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        ds.save_as(folder / f"{i:05d}.dcm")


def baseline(folder: Path, size: int) -> float:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    start = time.perf_counter()
    out = []
    for f in files:
        if f.suffix == ".dcm":
            arr = pydicom.dcmread(f).pixel_array.astype(np.float32)
            arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-6) * 255
            img = Image.fromarray(arr.astype(np.uint8))
        else:
            img = Image.open(f).convert("L")
        out.append(np.asarray(img.resize((size, size), Image.Resampling.BILINEAR)))
    return len(files) / (time.perf_counter() - start)


def medlens_speed(folder: Path, size: int, workers: int, cache: Path) -> float:
    shutil.rmtree(cache, ignore_errors=True)
    m = scan_folder(folder)
    cfg = PreprocessConfig(size=[size, size])
    start = time.perf_counter()
    build_cache(m, cfg, cache, name=folder.name, workers=workers)
    return len(m) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="files per format")
    parser.add_argument("--size", type=int, default=224, help="target side in pixels")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_pngs(tmp / "png", args.n)
        make_dicoms(tmp / "dicom", args.n)
        for name in ("png", "dicom"):
            base = baseline(tmp / name, args.size)
            one = medlens_speed(tmp / name, args.size, 1, tmp / "cache")
            many = medlens_speed(tmp / name, args.size, cores, tmp / "cache")
            rows.append((name, base, one, many))
    print(f"cache building, {args.n} files per format, 512x512 -> {args.size}x{args.size}")
    print(
        f"hardware: {platform.processor() or platform.machine()}, {cores} CPU cores; "
        f"python {platform.python_version()}"
    )
    print(
        f"| format | baseline loop (files/s) | medlens x1 | medlens x{cores} "
        f"| x{cores} / baseline |"
    )
    print("|---|---|---|---|---|")
    for name, base, one, many in rows:
        print(f"| {name} | {base:.0f} | {one:.0f} | {many:.0f} | {many / base:.2f} |")


if __name__ == "__main__":
    main()
