"""Run directories for compression: the checked input run, and what the new run gets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlens.config import Plan
from medlens.run import Run
from medlens.stages.train import start_run


@dataclass
class CompressionResult:
    """A distilled or pruned run: its directory, plan, metrics.json and compression.json."""

    run_dir: Path
    plan: Plan
    metrics: dict[str, Any]
    compression: dict[str, Any]


def compression_file(run: Run) -> Path:
    """``<run>/compression.json``: the compressed model against the one it came from."""
    return run.root / "compression.json"


def trained_run(path: str | Path, role: str) -> Run:
    """A run directory checked to hold a plan and trained weights; ``role`` names it in errors
    (``"teacher"``, ``"run"``)."""
    return Run.open(Path(path).expanduser().resolve(), role=role)


def start_compressed_run(path: Path, plan: Plan, source: Run) -> Run:
    """Create the new run: plan.yaml, the source's fingerprint.json (same data), env.json."""
    return start_run(path, plan, source.fingerprint)
