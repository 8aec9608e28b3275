"""The channel structure of a pruned model: recorded as layer shapes, rebuilt from them.

A pruned network no longer matches the architecture its name builds. Its structure is the
channel counts of the layers that pruning changed (``plan.prune.shapes``): ``[out, in]`` for
convolutions and linear layers, ``[features]`` for norm layers. :func:`apply_shapes` rebuilds
it from a freshly built model by keeping the first channels of each changed layer; the pruned
weights are then loaded over it. Slicing (rather than re-creating) the layers keeps their
initialisation, so a pruned plan can also be trained from scratch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from medlens.errors import ModelError

_HINT = "use the plan.yaml of the run that was pruned, unchanged"


def layer_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Channel counts of every conv, linear and norm layer, by module name."""
    shapes: dict[str, list[int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, _ConvNd):
            shapes[name] = [m.out_channels, m.in_channels]
        elif isinstance(m, nn.Linear):
            shapes[name] = [m.out_features, m.in_features]
        elif isinstance(m, _BatchNorm):
            shapes[name] = [m.num_features]
        elif isinstance(m, nn.GroupNorm):
            shapes[name] = [m.num_channels]
        elif isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
            shapes[name] = [m.normalized_shape[0]]
    return shapes


def changed_shapes(pruned: nn.Module, reference: nn.Module) -> dict[str, list[int]]:
    """The layers of ``pruned`` whose channel counts differ from ``reference`` (unpruned)."""
    ref = layer_shapes(reference)
    return {k: v for k, v in layer_shapes(pruned).items() if ref.get(k) != v}


def tensor_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor in the state dict (to check that a rebuild is exact)."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _param(t: torch.Tensor | None) -> nn.Parameter | None:
    return None if t is None else nn.Parameter(t.detach().clone())


def _check_dims(name: str, dims: list[int], n: int, limit: list[int]) -> None:
    if len(dims) != n:
        kind = "[out, in]" if n == 2 else "[features]"
        raise ModelError(f"plan.prune.shapes.{name} must be {kind}, got {dims}", hint=_HINT)
    if any(d > lim for d, lim in zip(dims, limit, strict=True)):
        raise ModelError(
            f"plan.prune.shapes.{name} {dims} is larger than the unpruned layer {limit}",
            hint=_HINT,
        )


def _resize_conv(name: str, m: _ConvNd, dims: list[int]) -> None:
    _check_dims(name, dims, 2, [m.out_channels, m.in_channels])
    out, inc = dims
    if m.groups > 1 and m.groups == m.in_channels:  # depthwise stays depthwise
        groups = inc
        if out % inc or out // inc != m.out_channels // m.in_channels:
            raise ModelError(
                f"plan.prune.shapes.{name}: depthwise conv {dims} changes its channel multiplier",
                hint=_HINT,
            )
    else:
        groups = m.groups
        if inc % groups or out % groups:
            raise ModelError(
                f"plan.prune.shapes.{name}: {dims} is not divisible by the conv's {groups} groups",
                hint=_HINT,
            )
    m.weight = _param(m.weight[:out, : inc // groups])
    if m.bias is not None:
        m.bias = _param(m.bias[:out])
    m.out_channels, m.in_channels, m.groups = out, inc, groups


def _resize_linear(name: str, m: nn.Linear, dims: list[int]) -> None:
    _check_dims(name, dims, 2, [m.out_features, m.in_features])
    out, inc = dims
    m.weight = _param(m.weight[:out, :inc])
    if m.bias is not None:
        m.bias = _param(m.bias[:out])
    m.out_features, m.in_features = out, inc


def _resize_norm(name: str, m: nn.Module, dims: list[int]) -> None:
    n_now = layer_shapes(m)[""][0]
    _check_dims(name, dims, 1, [n_now])
    n = dims[0]
    if getattr(m, "weight", None) is not None:
        m.weight = _param(m.weight[:n])
    if getattr(m, "bias", None) is not None:
        m.bias = _param(m.bias[:n])
    if isinstance(m, _BatchNorm):
        if m.running_mean is not None:
            m.running_mean = m.running_mean[:n].clone()
            m.running_var = m.running_var[:n].clone()
        m.num_features = n
    elif isinstance(m, nn.GroupNorm):
        if n % m.num_groups:
            raise ModelError(
                f"plan.prune.shapes.{name}: {n} channels do not split into {m.num_groups} groups",
                hint=_HINT,
            )
        m.num_channels = n
    else:
        m.normalized_shape = (n,)


def apply_shapes(model: nn.Module, shapes: dict[str, list[int]]) -> nn.Module:
    """Slim ``model`` in place to the pruned channel counts ``shapes``; returns it."""
    modules = dict(model.named_modules())
    known = layer_shapes(model)
    missing = [name for name in shapes if name not in known]
    if missing:
        raise ModelError(
            f"plan.prune.shapes names layers that {type(model).__name__} has not got as conv, "
            f"linear or norm layers: {', '.join(missing[:5])}",
            hint=_HINT,
        )
    for name, dims in shapes.items():
        m = modules[name]
        if isinstance(m, _ConvNd):
            _resize_conv(name, m, dims)
        elif isinstance(m, nn.Linear):
            _resize_linear(name, m, dims)
        else:
            _resize_norm(name, m, dims)
    return model
