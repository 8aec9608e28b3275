"""Weights and training state as safetensors files: loading never unpickles anything.

``best.safetensors`` holds the model weights alone. ``last.safetensors`` also holds the
optimizer's tensors, with everything else needed to resume (epoch, counters, optimizer
hyper-parameters, history) as JSON in the file's metadata. Files are written to a temporary
name and renamed, so an interruption never leaves a half-written checkpoint.
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

_MODEL, _OPTIM, _EMA = "model.", "optim.", "ema."


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # clone: safetensors refuses tensors that share storage (tied weights, views)
    save_file(
        {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()},
        str(tmp),
        metadata=metadata,
    )
    os.replace(tmp, path)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
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


def _load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
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
    _atomic_save(model.state_dict(), path, {"medlens": json.dumps(info or {})})


def load_weights(path: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load weights saved by :func:`save_weights` into ``model``; returns the stored info."""
    state, metadata = _read(path)
    if any(k.startswith(_MODEL) for k in state):  # a training-state file works too
        state = {k[len(_MODEL) :]: v for k, v in state.items() if k.startswith(_MODEL)}
    _load_into(model, state, path)
    return json.loads(metadata.get("medlens", "{}"))


def save_training_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    info: dict[str, Any],
    ema: torch.nn.Module | None = None,
) -> None:
    """Model, optimizer, the weights' moving average (``train.ema``) and loop counters: all
    that ``--resume`` needs."""
    tensors = {_MODEL + k: v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({_EMA + k: v for k, v in ema.state_dict().items()})
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, slots in opt["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{_OPTIM}{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    meta = {"info": info, "param_groups": opt["param_groups"], "optim_scalars": scalars}
    _atomic_save(tensors, path, {"medlens": json.dumps(meta)})


def load_training_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Restore what :func:`save_training_state` wrote; returns the loop counters."""
    tensors, metadata = _read(path)
    try:
        meta = json.loads(metadata["medlens"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{path} has no medlens training state",
            hint="resume needs checkpoints/last.safetensors of a medlens run",
        ) from exc
    _load_into(
        model, {k[len(_MODEL) :]: v for k, v in tensors.items() if k.startswith(_MODEL)}, path
    )
    if ema is not None:
        averaged = {k[len(_EMA) :]: v for k, v in tensors.items() if k.startswith(_EMA)}
        if not averaged:
            raise CheckpointError(
                f"{path} holds no moving average of the weights, but the plan sets train.ema",
                hint="resume with the plan.yaml that wrote the checkpoint",
            )
        _load_into(ema, averaged, path)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(_OPTIM):
            pid, name = key[len(_OPTIM) :].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for pid, slots in meta["optim_scalars"].items():
        state.setdefault(int(pid), {}).update(slots)
    # JSON turned tuples (Adam's betas) into lists; only "params" is a list in torch's format
    groups = [
        {k: v if k == "params" or not isinstance(v, list) else tuple(v) for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{path}: optimizer state does not fit ({exc})", hint="resume with the same plan.yaml"
        ) from exc
    return meta["info"]
