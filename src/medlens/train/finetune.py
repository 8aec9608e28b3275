"""Transfer learning: layer groups, starting weights, frozen or gradually unfrozen backbones,
and layer-wise learning-rate decay.

A model is seen as an ordered list of *layer groups*, from the stem to the classifier: timm's
own coarse grouping (``group_matcher``: stem, each stage, head) where the model has one, else
its top-level children. The same groups drive

- ``model.freeze=backbone``: only the classifier trains (a linear probe on the features);
- ``model.freeze=gradual``: the classifier first, then one more group from the top every
  ``model.unfreeze_every`` epochs (ULMFiT's gradual unfreezing, Howard & Ruder 2018);
- ``optim.layer_decay``: group ``i`` of ``G`` trains at ``lr * decay ** (G - 1 - i)``
  (BEiT / ELECTRA-style layer-wise decay), so the generic early layers move least.

Frozen groups also keep their BatchNorm statistics: a frozen backbone must compute what it
computed when its weights were learned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from medlens.config import Plan

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def _timm_groups(model: nn.Module, prefix: str = "") -> list[list[str]] | None:
    """timm's coarse parameter groups (stem, stages, head), in order; None without a matcher."""
    matcher = getattr(model, "group_matcher", None)
    if matcher is None:
        return None
    from timm.models import group_parameters

    try:
        grouped = group_parameters(model, matcher(coarse=True))
    except (AttributeError, KeyError, TypeError, re.error):
        return None
    return [[prefix + n for n in names] for _, names in sorted(grouped.items())]


def _child_groups(model: nn.Module) -> list[list[str]]:
    """Groups of a model without timm's matcher: a timm child's own groups, one group per
    block of a container child (MONAI's ``features``), else one group per child."""
    groups: list[list[str]] = []
    for child, module in model.named_children():
        sub = _timm_groups(module, f"{child}.")
        if sub is None and isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            sub = [
                [f"{child}.{block}.{n}" for n, _ in part.named_parameters()]
                for block, part in module.named_children()
            ]
        if sub is None:
            sub = [[f"{child}.{n}" for n, _ in module.named_parameters()]]
        groups.extend(g for g in sub if g)
    return groups


def layer_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names in groups ordered from the input to the output; the classifier's
    parameters always form the last group, and parameters of no group (a [CLS] token held by
    the model itself) join the group before it."""
    from medlens.models.weights import classifier_names

    head = classifier_names(model)
    groups = _timm_groups(model) or _child_groups(model)
    groups = [[n for n in g if n not in head] for g in groups]
    groups = [g for g in groups if g]
    placed = {n for g in groups for n in g} | head
    rest = [n for n, _ in model.named_parameters() if n not in placed]
    if rest:
        groups.append(rest)
    return [*groups, sorted(head)]


def optimizer_groups(model: nn.Module, weight_decay: float, layer_decay: float | None) -> list:
    """Parameter groups for the optimizer: no weight decay on biases and norm weights (timm's
    rule) and, with ``layer_decay``, an ``lr_scale`` per layer group (timm's schedulers apply
    it)."""
    groups = layer_groups(model)
    params = dict(model.named_parameters())
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    out = []
    for i, names in enumerate(groups):
        scale = 1.0 if layer_decay is None else layer_decay ** (len(groups) - 1 - i)
        decay = [params[n] for n in names if params[n].ndim > 1 and n not in skip]
        no_decay = [params[n] for n in names if params[n].ndim <= 1 or n in skip]
        for members, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if members:
                out.append({"params": members, "weight_decay": wd, "lr_scale": scale})
    return out


@dataclass
class Freezer:
    """Which layer groups train in which epoch (``model.freeze``), applied to a model."""

    groups: list[list[str]]
    mode: str = "none"
    every: int = 1

    @classmethod
    def for_plan(cls, model: nn.Module, plan: Plan) -> Freezer:
        return cls(layer_groups(model), plan.model.freeze, plan.model.unfreeze_every)

    def trainable_groups(self, epoch: int) -> int:
        """How many groups, counted from the classifier down, train in ``epoch`` (0-based)."""
        if self.mode == "none":
            return len(self.groups)
        if self.mode == "backbone":
            return 1
        return min(len(self.groups), 1 + epoch // self.every)

    def frozen_names(self, epoch: int) -> set[str]:
        cut = len(self.groups) - self.trainable_groups(epoch)
        return {n for g in self.groups[:cut] for n in g}

    def apply(self, model: nn.Module, epoch: int) -> int:
        """Set ``requires_grad`` for ``epoch`` and put frozen norm layers in eval mode (call
        after ``model.train()``); returns the number of trainable parameters."""
        if self.mode == "none":
            return sum(p.numel() for p in model.parameters())
        frozen = self.frozen_names(epoch)
        for name, p in model.named_parameters():
            p.requires_grad_(name not in frozen)
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if isinstance(module, _NORMS) and own and not any(p.requires_grad for p in own):
                module.eval()
        return sum(p.numel() for p in model.parameters() if p.requires_grad)


def starting_weights(model: nn.Module, plan: Plan) -> list[str]:
    """Load ``model.weights`` (a pretrained file) and then ``model.init`` (an earlier run);
    lines saying what was loaded, for the log."""
    from medlens.models.weights import load_initial_weights

    lines = []
    for what, path in (("weights", plan.model.weights), ("init", plan.model.init)):
        if path:
            report = load_initial_weights(unwrap_backbone(model, path), path)
            line = f"model.{what}: {report.loaded} tensors from {report.path}"
            if report.reinitialised:
                line += f"; new classifier ({', '.join(report.reinitialised)})"
            if report.adapted:
                line += f"; stem adapted to the input channels ({', '.join(report.adapted)})"
            lines.append(line)
    return lines


def unwrap_backbone(model: nn.Module, path: str) -> nn.Module:
    """The module a weights file is for: the 2D backbone of a 2.5D model when the file holds
    2D weights (no ``backbone.`` names), else the model itself."""
    from medlens.models.slices import SliceStack
    from medlens.models.weights import read_state_dict

    if isinstance(model, SliceStack):
        keys = read_state_dict(path)
        if not any(k.startswith("backbone.") for k in keys):
            return model.backbone
    return model
