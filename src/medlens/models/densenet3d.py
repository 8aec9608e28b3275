"""MONAI's 3D DenseNet-121 ("densenet121_3d") for volumes.

MONAI is imported inside the builder: it is slow to import and 2D training never needs it.
"""

from __future__ import annotations

from torch import nn

from medlens.errors import ModelError


def build(*, in_chans: int, num_classes: int, pretrained: bool, drop_rate: float) -> nn.Module:
    """MONAI DenseNet121 with ``spatial_dims=3``; ``drop_rate`` is its dropout before the head."""
    if pretrained:
        raise ModelError(
            "no pretrained 3D weights are bundled for densenet121_3d",
            hint="set pretrained to false, or start from a local file with model.weights",
        )
    from monai.networks.nets import DenseNet121

    return DenseNet121(
        spatial_dims=3, in_channels=in_chans, out_channels=num_classes, dropout_prob=drop_rate
    )
