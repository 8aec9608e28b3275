"""The plan's model: the one place a :class:`~medlens.config.Plan` becomes a network.

>>> model = build_model(plan, torch.device("cpu"))  # doctest: +SKIP
"""

from __future__ import annotations

import torch

from medlens.config import Plan
from medlens.models.registry import create_model
from medlens.models.structure import apply_shapes


def plan_image_size(plan: Plan) -> int | None:
    """The side of the plan's images (the last axis), when the plan says."""
    if plan.data.preprocess is not None:
        return int(plan.data.preprocess.size[-1])
    return plan.data.size


def use_pretrained(plan: Plan) -> bool:
    """Whether the plan's model starts from ImageNet weights: ``model.pretrained``, with
    ``auto`` resolved (weights in the local cache or downloadable, and no ``model.weights``)."""
    wanted = plan.model.pretrained
    if wanted != "auto":
        return bool(wanted)
    if plan.model.weights or plan.model.init or plan.data.spatial_dims != 2:
        return False
    from medlens.models.weights import pretrained_source

    return pretrained_source(plan.model.name)[0] in ("cache", "hub")


def build_model(
    plan: Plan, device: torch.device, *, pretrained: bool | None = None
) -> torch.nn.Module:
    """The plan's model on ``device``; with ``plan.prune``, slimmed to its pruned channels.

    ``pretrained=False`` builds the bare architecture whatever the plan says (for weights that
    are loaded right after, from a checkpoint).
    """
    model = create_model(
        plan.model.name,
        in_chans=plan.data.in_chans,
        num_classes=plan.data.n_classes,
        spatial_dims=plan.data.spatial_dims,
        pretrained=use_pretrained(plan) if pretrained is None else pretrained,
        drop_rate=plan.model.drop_rate,
        img_size=plan.model.img_size or plan_image_size(plan),
        slices=plan.model.slices,
    )
    if plan.prune is not None:
        apply_shapes(model, plan.prune.shapes)
    model = model.to(device)
    if plan.train.channels_last and plan.data.spatial_dims == 2:
        model = model.to(memory_format=torch.channels_last)
    return model
