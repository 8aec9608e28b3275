"""Model weights as safetensors files: loading never unpickles anything.

``best.safetensors`` holds the model weights alone; a training-state file
(``last.safetensors``, see :mod:`medlens.train.checkpoint`) holds them under ``model.`` beside
the optimizer's tensors, and :func:`load_weights` reads either. Files are written to a
temporary name and renamed, so an interruption never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from medlens.errors import CheckpointError

MODEL_PREFIX = "model."


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write ``tensors`` (and string ``metadata``) atomically: a temporary file, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # clone: safetensors refuses tensors that share storage (tied weights, views)
    save_file(
        {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()},
        str(tmp),
        metadata=metadata,
    )
    os.replace(tmp, path)


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, or a CheckpointError saying what is wrong."""
    if not path.is_file():
        raise CheckpointError(
            f"weights file {path} does not exist", hint="train first, or check the run directory"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc})",
            hint="the file is corrupt or was tampered with; retrain or restore it",
        ) from exc


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``model.load_state_dict(state)``, or a CheckpointError naming what does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shapes differ: " + "; ".join(wrong[:5]))
        if missing:
            parts.append("missing: " + ", ".join(missing[:5]))
        if unexpected:
            parts.append("unexpected: " + ", ".join(unexpected[:5]))
        raise CheckpointError(
            f"{path} does not fit the model ({' | '.join(parts)})",
            hint="use the plan.yaml of the run that wrote these weights",
        )
    model.load_state_dict(state)


def save_weights(path: Path, model: torch.nn.Module, info: dict[str, Any] | None = None) -> None:
    """Model weights alone, with ``info`` (JSON-able) in the metadata."""
    save_tensors(model.state_dict(), path, {"medlens": json.dumps(info or {})})


def load_weights(path: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load weights saved by :func:`save_weights` into ``model``; returns the stored info."""
    state, metadata = read_tensors(path)
    if any(k.startswith(MODEL_PREFIX) for k in state):  # a training-state file works too
        state = {k[len(MODEL_PREFIX) :]: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}
    load_state(model, state, path)
    return json.loads(metadata.get("medlens", "{}"))
