"""A small baseline CNN for 2D images and 3D volumes ("small_cnn", "small_cnn_3d").

Four conv3x3-BN-ReLU blocks (widths 32, 64, 128, 256) with a 2x max-pool after each of the
first three, global average pooling, dropout and a linear head. About 0.4 M parameters in 2D:
quick to train on CPU and a sanity baseline for the larger models.
"""

from __future__ import annotations

import torch
from torch import nn

from medlens.errors import ModelError

WIDTHS: tuple[int, ...] = (32, 64, 128, 256)

_CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM: dict[int, type[nn.Module]] = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL: dict[int, type[nn.Module]] = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_GAP: dict[int, type[nn.Module]] = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


def _conv_block(in_chs: int, out_chs: int, spatial_dims: int) -> nn.Sequential:
    """conv3x3 (no bias: BN follows) -> BN -> ReLU."""
    return nn.Sequential(
        _CONV[spatial_dims](in_chs, out_chs, kernel_size=3, padding=1, bias=False),
        _NORM[spatial_dims](out_chs),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Small baseline CNN; ``spatial_dims`` picks 2D (images) or 3D (volumes).

    Follows timm's interface: ``forward_features`` returns the last feature map (B, 256, ...),
    ``forward_head`` pools and classifies, ``get_classifier`` returns the linear head.
    ``features`` is the last conv block, the natural Grad-CAM target layer.
    """

    def __init__(
        self,
        in_chans: int,
        num_classes: int,
        spatial_dims: int = 2,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in _CONV:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims = spatial_dims
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = WIDTHS[-1]
        self.drop_rate = drop_rate

        layers: list[nn.Module] = []
        chs = in_chans
        for width in WIDTHS[:-1]:
            layers += [_conv_block(chs, width, spatial_dims), _POOL[spatial_dims](kernel_size=2)]
            chs = width
        self.blocks = nn.Sequential(*layers)
        self.features = _conv_block(chs, WIDTHS[-1], spatial_dims)
        self.global_pool = nn.Sequential(_GAP[spatial_dims](1), nn.Flatten(1))
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled feature map of the last conv block: (B, 256, *spatial / 8)."""
        return self.features(self.blocks(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, dropout and (unless ``pre_logits``) the linear head."""
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The linear classification head."""
        return self.fc


def _refuse_pretrained(name: str, pretrained: bool) -> None:
    """Raise ModelError when pretrained weights are asked for: none exist for this model."""
    if pretrained:
        raise ModelError(
            f"{name} has no pretrained weights: it is a small baseline trained from scratch",
            hint="set pretrained to false, or pick a timm model such as resnet18 for pretraining",
        )


def small_cnn(
    *, in_chans: int, num_classes: int, pretrained: bool = False, drop_rate: float = 0.0
) -> SmallCNN:
    """2D small baseline CNN, trained from scratch (there are no pretrained weights)."""
    _refuse_pretrained("small_cnn", pretrained)
    return SmallCNN(in_chans, num_classes, spatial_dims=2, drop_rate=drop_rate)


def small_cnn_3d(
    *, in_chans: int, num_classes: int, pretrained: bool = False, drop_rate: float = 0.0
) -> SmallCNN:
    """3D small baseline CNN, trained from scratch (there are no pretrained weights)."""
    _refuse_pretrained("small_cnn_3d", pretrained)
    return SmallCNN(in_chans, num_classes, spatial_dims=3, drop_rate=drop_rate)
