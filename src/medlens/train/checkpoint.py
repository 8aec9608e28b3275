"""Training state as a safetensors file: everything ``--resume`` needs.

``last.safetensors`` holds the model weights (under ``model.``, so :func:`load_weights` reads it
too), the weights' moving average (``ema.``) and the optimizer's tensors, with everything else
needed to resume (epoch, counters, optimizer hyper-parameters, history) as JSON in the file's
metadata. Loading never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from medlens.errors import CheckpointError
from medlens.models.checkpoint import MODEL_PREFIX, load_state, read_tensors, save_tensors

_MODEL, _OPTIM, _EMA = MODEL_PREFIX, "optim.", "ema."


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
    save_tensors(tensors, path, {"medlens": json.dumps(meta)})


def load_training_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Restore what :func:`save_training_state` wrote; returns the loop counters."""
    tensors, metadata = read_tensors(path)
    try:
        meta = json.loads(metadata["medlens"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{path} has no medlens training state",
            hint="resume needs checkpoints/last.safetensors of a medlens run",
        ) from exc
    load_state(
        model, {k[len(_MODEL) :]: v for k, v in tensors.items() if k.startswith(_MODEL)}, path
    )
    if ema is not None:
        averaged = {k[len(_EMA) :]: v for k, v in tensors.items() if k.startswith(_EMA)}
        if not averaged:
            raise CheckpointError(
                f"{path} holds no moving average of the weights, but the plan sets train.ema",
                hint="resume with the plan.yaml that wrote the checkpoint",
            )
        load_state(ema, averaged, path)
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
