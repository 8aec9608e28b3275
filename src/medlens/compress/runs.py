"""Run directories for compression: the checked input run, and what the new run gets."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlens.config import Plan
from medlens.data.dataset import ArrayDataset
from medlens.errors import CheckpointError
from medlens.rundir import RunDir, environment, write_json


@dataclass
class CompressionResult:
    """A distilled or pruned run: its directory, plan, metrics.json and compression.json."""

    run_dir: Path
    plan: Plan
    metrics: dict[str, Any]
    compression: dict[str, Any]


def compression_file(run: RunDir) -> Path:
    """``<run>/compression.json``: the compressed model against the one it came from."""
    return run.root / "compression.json"


def trained_run(path: str | Path, role: str) -> RunDir:
    """A run directory checked to hold a plan and trained weights; ``role`` names it in errors
    (``"teacher"``, ``"run"``)."""
    run = RunDir(Path(path).expanduser().resolve())
    if not run.root.is_dir():
        raise CheckpointError(
            f"{role} {run.root} does not exist",
            hint="pass the run directory of a trained model (`medlens train ... --output DIR`)",
        )
    if not run.plan.is_file():
        raise CheckpointError(
            f"{role} {run.root} is not a medlens run (no plan.yaml)",
            hint="pass the run directory that `medlens train` wrote",
        )
    if not run.best.is_file():
        raise CheckpointError(
            f"{role} {run.root} has no trained weights ({run.best} is missing)",
            hint="finish training it first (`medlens train --resume --output DIR`)",
        )
    return run


def start_run(run: RunDir, plan: Plan, source: RunDir, ds: ArrayDataset) -> None:
    """Create the new run: plan.yaml, the source's fingerprint.json (same data), env.json."""
    from medlens.config import save_plan
    from medlens.data.fingerprint import fingerprint
    from medlens.train.device import resolve_device

    run.root.mkdir(parents=True, exist_ok=True)
    save_plan(plan, run.plan)
    if source.fingerprint.is_file():
        shutil.copyfile(source.fingerprint, run.fingerprint)
    else:
        write_json(run.fingerprint, fingerprint(ds).model_dump(mode="json"))
    write_json(run.env, environment(plan.train.seed, str(resolve_device(plan.train.device))))
