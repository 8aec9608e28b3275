"""How long the CLI makes a user wait to hear about a mistake.

Runs each case of issue 13 (a malformed ``--set``, a missing run directory, ``data list``,
``models``, ``plan`` with an unknown model) in a fresh Python process, best of ``--rounds``,
for this checkout's ``src`` and, with ``--baseline-src DIR``, an older checkout's ``src`` (e.g.
``git archive 7fabc69 src | tar -x -C /tmp/before``). The baseline measured in the same run is
the import of torch, timm and torchvision, the cost every argument check used to pay first.

Run: python benchmarks/cli_latency.py [--baseline-src /tmp/before/src] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
DATA = HERE.parent / "shared" / "data" / "medmnist"
CASES = {
    "malformed --set": ["train", "breastmnist", "--set", "train.epochs"],
    "missing run directory": ["evaluate", "/nonexistent/run"],
    "data list": ["data", "list", "--data-dir", str(DATA)],
    "models": ["models"],
    "plan, unknown model": ["plan", "breastmnist", "--set", "model.name=resnet181"],
}
HEAVY = ["-c", "import torch, timm, torchvision"]


def seconds(src: Path, args: list[str], rounds: int) -> tuple[float, int]:
    """Best wall time of ``python -m medlens ARGS`` (or ``python ARGS``) and its exit code."""
    env = {**os.environ, "PYTHONPATH": str(src), "MEDLENS_CACHE": "/tmp/medlens-cli-latency"}
    best, code = float("inf"), 0
    for _ in range(rounds):
        command = [sys.executable, *(args if args is HEAVY else ["-m", "medlens", *args])]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, cwd="/tmp")
        best, code = min(best, time.perf_counter() - start), done.returncode
    return best, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, help="an older checkout's src folder")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sources = {"this checkout": HERE / "src"}
    if args.baseline_src:
        sources = {"baseline checkout": args.baseline_src, **sources}
    heavy, _ = seconds(HERE / "src", HEAVY, args.rounds)
    load = os.getloadavg()[0]
    print(
        f"{os.cpu_count()} CPU cores ({platform.machine()}), load {load:.1f}, best of "
        f"{args.rounds}, {time.strftime('%Y-%m-%d')}; "
        f"import torch+timm+torchvision: {heavy:.2f} s\n"
    )
    print("| case | " + " | ".join(sources) + " |")
    print("|---|" + "---|" * len(sources))
    for name, case in CASES.items():
        cells = []
        for src in sources.values():
            took, code = seconds(src, case, args.rounds)
            cells.append(f"{took:.2f} s (exit {code})")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
