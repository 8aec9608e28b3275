"""Penultimate features of any classifier: what its classification layer sees.

A forward hook on the classifier layer's input works for every model medlens builds (timm,
MONAI, its own) without knowing its ``forward``: timm's ``forward_head(pre_logits=True)``
exists for timm models only. A model that holds several copies of a head (an ensemble of
folds, ``members.0.fc``, ``members.1.fc``...) has every copy hooked and their inputs
concatenated in module order. A model with no linear head gives its logits as features.

>>> feats, logits = penultimate_features(model, arrays)  # doctest: +SKIP
>>> feats.shape, logits.shape  # doctest: +SKIP
((524, 128), (524, 2))
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from medlens.data.loader import DeviceArrays
from medlens.device import autocast
from medlens.models.weights import classifier_names


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The classifier layer(s) of ``model``: the one :func:`classifier_names` finds, and every
    module whose name differs from it only in numeric indices (one per ensemble member)."""
    params = sorted(classifier_names(model))
    if not params:
        return []
    name = params[0].rsplit(".", 1)[0] if "." in params[0] else ""
    modules = dict(model.named_modules())
    if name not in modules:
        return []
    head = modules[name]
    # an index inside the name (members.3.fc), never the head's own (classifier.1)
    pattern = re.compile("^" + re.sub(r"(?<=\\\.)\d+(?=\\\.)", r"\\d+", re.escape(name)) + "$")
    same = [m for n, m in model.named_modules() if pattern.match(n) and type(m) is type(head)]
    return same or [head]


@torch.inference_mode()
def penultimate_features(
    model: nn.Module, data: DeviceArrays, batch_size: int = 256, amp: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), logits (N, K)), float64, over every image of ``data`` in order."""
    model.eval()
    heads = head_modules(model)
    caught: list[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        caught.append(inputs[0].detach().float().flatten(1))

    handles = [h.register_forward_pre_hook(hook) for h in heads]
    feats, logits = [], []
    try:
        for x, _ in data.batches(batch_size, shuffle=False):
            caught.clear()
            with autocast(data.device, amp):
                out = model(x).float()
            logits.append(out.cpu())
            feats.append(torch.cat(caught, dim=1).cpu() if caught else out.cpu())
    finally:
        for h in handles:
            h.remove()
    return torch.cat(feats).double().numpy(), torch.cat(logits).double().numpy()
