"""The run directory: every file a stage reads or writes, and the environment it ran in.

::

    runs/<name>/
      plan.yaml  fingerprint.json  env.json  log.txt  curves.csv
      checkpoints/best.safetensors  checkpoints/last.safetensors
      metrics.json  predictions.csv  trust.json  calibration.json  tensorboard/
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from medlens.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    root: Path

    @property
    def plan(self) -> Path:
        return self.root / "plan.yaml"

    @property
    def fingerprint(self) -> Path:
        return self.root / "fingerprint.json"

    @property
    def env(self) -> Path:
        return self.root / "env.json"

    @property
    def log(self) -> Path:
        return self.root / "log.txt"

    @property
    def curves(self) -> Path:
        return self.root / "curves.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def trust(self) -> Path:
        return self.root / "trust.json"

    @property
    def calibration(self) -> Path:
        """Temperature and conformal threshold that ``predict`` applies to new cases."""
        return self.root / "calibration.json"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.safetensors"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.safetensors"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def has_training(self) -> bool:
        return self.last.exists() or self.best.exists()

    def require_trained(self) -> None:
        if not self.plan.is_file():
            raise CheckpointError(
                f"{self.root} is not a medlens run (no plan.yaml)",
                hint="pass the run directory that `medlens train` wrote",
            )
        if not self.best.is_file():
            raise CheckpointError(f"{self.best} is missing", hint="train the run first")


def default_run_name(dataset: str, model: str) -> str:
    return f"{Path(dataset).stem}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_output(run: RunDir, resume: bool) -> None:
    """Refuse to overwrite a run that already holds training results."""
    if resume:
        if not run.last.is_file():
            raise ConfigError(
                f"nothing to resume in {run.root} (no checkpoints/last.safetensors)",
                hint="drop --resume to start a new run",
            )
        return
    if run.has_training() or run.metrics.exists():
        raise ConfigError(
            f"{run.root} already holds a trained run",
            hint="add --resume to continue it, or choose another --output",
        )


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(seed: int, device: str) -> dict[str, Any]:
    """Versions, hardware, command line and seed: what a reproduction needs."""
    import torch

    versions = {}
    for pkg in (
        "medlens",
        "torch",
        "torchvision",
        "timm",
        "monai",
        "numpy",
        "scikit-learn",
        "safetensors",
        "medmnist",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "medlens_git_commit": _git_commit(),
        "device": device,
        "gpu": gpu,
        "cpu_threads": torch.get_num_threads(),
        "seed": seed,
    }


def file_logger(run: RunDir) -> logging.Logger:
    """A logger that appends to the run's log.txt (one per run directory)."""
    logger = logging.getLogger(f"medlens.run.{run.root.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        run.root.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run.log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
    return logger
