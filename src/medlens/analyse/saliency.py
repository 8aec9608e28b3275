"""One entry point for saliency maps: Grad-CAM, Grad-CAM++ and attention rollout.

>>> maps = saliency_maps(model, x)  # doctest: +SKIP
>>> maps.shape  # doctest: +SKIP
(N, H, W) for images, (N, D, H, W) for volumes, values in [0, 1]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from medlens.analyse.gradcam import grad_cam
from medlens.analyse.layers import choose_target_layer
from medlens.analyse.rollout import attention_modules, attention_rollout
from medlens.errors import ConfigError, DataError
from medlens.models.ensemble import EnsembleModel

METHODS = ("gradcam", "gradcam++", "rollout")

# Images per forward/backward pass: about 2**20 input pixels/voxels, at most 32 images.
_CHUNK_VOXELS = 2**20
_MAX_CHUNK = 32


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`METHODS`, else ConfigError naming them."""
    if method not in METHODS:
        raise ConfigError(
            f"unknown explanation method {method!r}", hint=f"use one of {', '.join(METHODS)}"
        )
    return method


def default_method(model: nn.Module) -> str:
    """``"rollout"`` for Vision Transformers (timm attention blocks), ``"gradcam"`` otherwise."""
    return "rollout" if attention_modules(model) else "gradcam"


def _targets(targets: torch.Tensor | Sequence[int] | None, n: int, device) -> torch.Tensor | None:
    if targets is None:
        return None
    t = torch.as_tensor(targets, device=device).long().reshape(-1)
    if t.numel() != n:
        raise DataError(f"{t.numel()} targets for {n} images", hint="give one class per image")
    return t


def saliency_maps(
    model: torch.nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor | None = None,
    method: str = "gradcam",
    target_layer: str | None = None,
) -> torch.Tensor:
    """Saliency maps of a normalised batch ``x`` (N, C, H, W) or (N, C, D, H, W).

    ``targets`` are class indices (default: each image's predicted class; rollout ignores
    them: it is class-agnostic). ``target_layer`` names the Grad-CAM layer as in
    ``model.named_modules()`` (default: the last feature stage). Returns float32 maps on the
    CPU, (N, H, W) or (N, D, H, W) at the input's size, each scaled to [0, 1]. The model is
    left in eval mode without hooks.
    """
    check_method(method)
    if isinstance(model, EnsembleModel):
        return ensemble_maps(model, x, targets, method, target_layer)
    if x.ndim not in (4, 5):
        raise DataError(
            f"expected a batch (N, C, H, W) or (N, C, D, H, W), got shape {tuple(x.shape)}"
        )
    t = _targets(targets, x.shape[0], x.device)
    if method == "rollout" and target_layer is not None:
        raise ConfigError(
            "a target layer applies to gradcam and gradcam++ only",
            hint="drop the layer, or use method gradcam",
        )
    model.eval()
    layer = None if method == "rollout" else choose_target_layer(model, x, target_layer)
    chunk = max(1, min(_MAX_CHUNK, _CHUNK_VOXELS // math.prod(x.shape[2:])))
    out = []
    for start in range(0, x.shape[0], chunk):
        xb = x[start : start + chunk]
        if layer is None:
            maps = attention_rollout(model, xb)
        else:
            tb = None if t is None else t[start : start + chunk]
            maps = grad_cam(model, xb, tb, layer, plus=method == "gradcam++")
        out.append(maps.float().cpu())
    model.eval()
    return torch.cat(out)


def ensemble_maps(
    model: EnsembleModel,
    x: torch.Tensor,
    targets: torch.Tensor | None,
    method: str,
    target_layer: str | None,
) -> torch.Tensor:
    """An ensemble's saliency: the mean of its members' maps, each for the ensemble's class.

    ``target_layer`` may name a member's layer as the ensemble names it (``members.2.stage3``,
    what :func:`choose_target_layer` picks on the ensemble): every member uses its own layer of
    that name (``stage3``), as members share one architecture.
    """
    if targets is None:
        with torch.no_grad():
            targets = model.eval()(x).argmax(1)
    layer = target_layer
    if layer is not None and layer.startswith("members."):
        layer = layer.split(".", 2)[2] if layer.count(".") >= 2 else None
    maps = [saliency_maps(m, x, targets, method, layer) for m in model.members]
    return torch.stack(maps).mean(0)
