"""Which layer Grad-CAM reads: a module named by the user, or one chosen from the model.

The automatic choice is timm's last feature stage (``model.feature_info[-1]["module"]``) when
it gives a spatial map, else the last convolutional module (a conv, or a block holding one) to
run whose output is a spatial map with more than one position (medlens' small CNNs:
``features``; MONAI's 3D ResNets: ``layer4``; a plain ViT: its patch embedding ``proj``).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import torch
from torch import nn

from medlens.errors import ModelError


@dataclass(frozen=True)
class TargetLayer:
    """A module to read activations from; ``channels_last`` when it outputs (N, *S, C)."""

    name: str
    module: nn.Module
    channels_last: bool = False


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule with dotted ``name`` (as in ``model.named_modules()``), or ModelError."""
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    examples = close or [n for n in names if n.count(".") == 0][-6:]
    raise ModelError(
        f"the model has no layer named {name!r}",
        hint=f"name a module as listed by model.named_modules(), e.g. {', '.join(examples)}",
    )


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def _is_spatial(shape: tuple[int, ...], ndim: int) -> bool:
    return len(shape) == ndim and math.prod(shape[2:]) > 1


def output_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape of every submodule that returns a tensor, in the order they finish.

    Runs one image of ``x`` through the model (eval mode, no gradients); the hooks are removed
    afterwards whatever happens.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def keep(name: str):
        def hook(_module, _args, output):
            if isinstance(output, torch.Tensor):
                shapes.pop(name, None)  # a module run twice counts where it ran last
                shapes[name] = tuple(output.shape)

        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in model.named_modules() if n]
    try:
        model.eval()
        with torch.no_grad():
            model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _timm_feature(model: nn.Module) -> tuple[str, int] | None:
    """(module name, channels) of timm's last feature stage, when the model has feature_info."""
    info = getattr(model, "feature_info", None)
    if not info:
        return None
    try:
        last = info[-1]
        return str(last["module"]), int(last["num_chs"])
    except (KeyError, TypeError, IndexError):
        return None


def _channels(model: nn.Module, name: str) -> int | None:
    for entry in getattr(model, "feature_info", None) or []:
        if isinstance(entry, dict) and entry.get("module") == name:
            return entry.get("num_chs")
    return None


def choose_target_layer(model: nn.Module, x: torch.Tensor, name: str | None = None) -> TargetLayer:
    """The Grad-CAM layer for ``model`` on inputs like ``x``: ``name``, or chosen as above.

    Raises ModelError for an unknown name, or a layer whose output is not a spatial map.
    """
    ndim = x.ndim
    if name is not None:
        module = find_module(model, name)
    shapes = output_shapes(model, x)

    def layout(layer: str) -> tuple[bool, bool]:
        """(spatial, channels_last) for ``layer``'s output."""
        shape = shapes.get(layer, ())
        chs = _channels(model, layer)
        last = chs is not None and len(shape) == ndim and shape[1] != chs and shape[-1] == chs
        if last:  # timm stages that output (N, H, W, C), e.g. Swin
            shape = (shape[0], shape[-1], *shape[1:-1])
        return _is_spatial(shape, ndim), last

    modules = dict(model.named_modules())
    candidates = [n for n in shapes if layout(n)[0] and _has_conv(modules[n])]
    if name is not None:
        spatial, last = layout(name)
        if name not in shapes:
            raise ModelError(
                f"layer {name!r} did not run when the model saw the images",
                hint=f"name a layer on the forward path, e.g. {', '.join(candidates[-4:])}",
            )
        if not spatial:
            raise ModelError(
                f"layer {name!r} outputs shape {shapes[name]}, not a spatial feature map "
                f"(N, C, {'D, ' if ndim == 5 else ''}H, W) with more than one position",
                hint="name a convolutional layer, e.g. "
                + (", ".join(candidates[-4:]) or "none found: use method rollout"),
            )
        return TargetLayer(name, module, last)
    preferred = _timm_feature(model)
    if preferred is not None and layout(preferred[0])[0]:
        chosen = preferred[0]
    elif candidates:
        chosen = candidates[-1]
    else:
        raise ModelError(
            "no layer of the model outputs a spatial feature map for Grad-CAM",
            hint="use method rollout for a Vision Transformer, or name a layer",
        )
    return TargetLayer(chosen, find_module(model, chosen), layout(chosen)[1])
