"""2.5D: a 2D network over stacks of neighbouring slices, for volumes (``model.slices``).

A volume (N, 1, D, H, W) is cut into ``D`` windows of ``slices`` neighbouring slices (edge
slices repeated at the ends); each window is one ``slices``-channel 2D image. With
``slices=3`` a window looks like an RGB image, so ImageNet weights (from the hub or a local
file) fit the stem as they are: the 2D backbone is shared by all windows, its pooled features
are averaged and max-pooled over depth, and a linear head classifies the volume. This reuses
the much larger body of 2D pretraining for CT and MR, at a fraction of a 3D CNN's memory.

>>> model = SliceStack(backbone, slices=3, num_classes=11)  # doctest: +SKIP
>>> model(torch.zeros(2, 1, 28, 28, 28)).shape  # doctest: +SKIP
torch.Size([2, 11])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from medlens.errors import ModelError


class SliceStack(nn.Module):
    """A 2D ``backbone`` (timm, ``num_classes=0``: pooled features out) over slice windows."""

    def __init__(
        self, backbone: nn.Module, *, slices: int, num_classes: int, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        if slices < 1 or slices % 2 == 0:
            raise ModelError(
                f"model.slices must be an odd number of slices (1, 3, 5...), got {slices}",
                hint="use 3 to reuse RGB-pretrained 2D weights",
            )
        self.backbone = backbone
        self.slices = slices
        width = backbone.num_features
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(2 * width, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.head

    def windows(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, D, H, W) -> (N * D, C * slices, H, W): each slice with its neighbours."""
        n, c, d, h, w = x.shape
        half = self.slices // 2
        padded = F.pad(x, (0, 0, 0, 0, half, half), mode="replicate") if half else x
        win = padded.unfold(2, self.slices, 1)  # (N, C, D, H, W, slices)
        return win.permute(0, 2, 1, 5, 3, 4).reshape(n * d, c * self.slices, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ModelError(f"a 2.5D model takes volumes (N, C, D, H, W), got {tuple(x.shape)}")
        n, d = x.shape[0], x.shape[2]
        feats = self.backbone(self.windows(x)).reshape(n, d, -1)
        pooled = torch.cat([feats.mean(dim=1), feats.amax(dim=1)], dim=1)
        return self.head(self.head_drop(pooled))


def build(
    name: str,
    *,
    slices: int,
    in_chans: int,
    num_classes: int,
    pretrained: bool,
    drop_rate: float,
    make_2d,
) -> nn.Module:
    """SliceStack over the 2D model ``name``, built by ``make_2d(name, in_chans=..., ...)``."""
    backbone = make_2d(
        name, in_chans=in_chans * slices, num_classes=0, pretrained=pretrained, drop_rate=0.0
    )
    if not hasattr(backbone, "num_features"):
        raise ModelError(
            f"{name} cannot be used in 2.5D mode (it exposes no pooled feature width)",
            hint="use a timm model such as resnet18 or efficientnet_b0",
        )
    return SliceStack(backbone, slices=slices, num_classes=num_classes, drop_rate=drop_rate)
