"""Near-duplicate check speed: seconds for ``near_duplicates`` over N images in three splits.

The check hashes every image (perceptual hash, 64 bits) and compares every pair across splits
(XOR and popcount on 64-bit words, in blocks of about a million pairs). Random 28 x 28 images,
80/10/10 splits; the best of ``--repeat`` runs. Correctness at these sizes is tested in
tests/test_splits.py; timings live here, not in tests.

Run: python benchmarks/near_duplicates_speed.py [--sizes 5000 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from medlens.data.splits import near_duplicates


def measure(n: int, repeat: int, side: int = 28) -> tuple[int, float]:
    """(pairs across splits, best seconds) for ``n`` random images."""
    rng = np.random.default_rng(0)
    images = list(rng.integers(0, 256, (n, 1, side, side), dtype=np.uint8))
    sizes = [n * 8 // 10, n // 10]
    splits = np.repeat(["train", "val", "test"], [*sizes, n - sum(sizes)])
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        near_duplicates(images, splits)
        best = min(best, time.perf_counter() - start)
    counts = np.unique(splits, return_counts=True)[1]
    return (n * n - int((counts**2).sum())) // 2, best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    print(f"CPU: {platform.processor() or platform.machine()}, numpy {np.__version__}\n")
    print("| images | pairs across splits | seconds (hash + compare) | images per s |")
    print("|---|---|---|---|")
    for n in args.sizes:
        pairs, seconds = measure(n, args.repeat)
        print(f"| {n:,} | {pairs:,} | {seconds:.2f} | {n / seconds:,.0f} |")


if __name__ == "__main__":
    main()
