"""3D ResNets for small volumes ("resnet18_3d", "resnet50_3d"), built on MONAI's ResNet.

MONAI's default stem (7x7x7 conv + 3x3x3 stride-2 max-pool) is meant for large CT/MR
volumes; for MedMNIST-3D's 28^3 volumes it is swapped, as for the 2D MedMNIST ResNets, for
a 3x3x3 stride-1 conv and no max-pool, so a 28^3 input reaches layer4 at 4^3.
MONAI is imported inside the builders: it is slow to import and 2D training never needs it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from medlens.errors import ModelError

# MONAI factory function (in monai.networks.nets) for each medlens name.
MONAI_ARCH: dict[str, str] = {
    "resnet18_3d": "resnet18",
    "resnet50_3d": "resnet50",
}


class DropoutLinear(nn.Linear):
    """A Linear layer that applies dropout to its input first.

    MONAI's ResNet has no dropout option; swapping its ``fc`` for this class adds dropout
    before the head while keeping the state-dict keys (``fc.weight``, ``fc.bias``) unchanged.
    """

    def __init__(self, in_features: int, out_features: int, drop_rate: float = 0.0) -> None:
        super().__init__(in_features, out_features)
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout (training only), then the affine map."""
        return super().forward(F.dropout(x, self.drop_rate, self.training))

    def extra_repr(self) -> str:
        """Show the dropout rate next to the Linear sizes."""
        return f"{super().extra_repr()}, drop_rate={self.drop_rate}"


def zero_init_last_bn(model: nn.Module) -> None:
    """Zero the last BN scale of every residual block, so each block starts as the identity.

    timm's 2D ResNets do this by default (``zero_init_last``); MONAI's do not, and without it
    the 16 bottleneck blocks of the 3D ResNet-50 start with large activations that make the
    first SGD steps unstable (Goyal et al., 2017, "Accurate, Large Minibatch SGD").
    """
    from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck

    for module in model.modules():
        if isinstance(module, ResNetBottleneck):
            nn.init.zeros_(module.bn3.weight)
        elif isinstance(module, ResNetBlock):
            nn.init.zeros_(module.bn2.weight)


def build(
    name: str, *, in_chans: int, num_classes: int, pretrained: bool, drop_rate: float
) -> nn.Module:
    """MONAI 3D ResNet: 3^3 stride-1 stem, no max-pool, zero-init last BN, head dropout."""
    if pretrained:
        raise ModelError(
            f"no pretrained 3D weights are bundled for {name}",
            hint="set pretrained to false to train it from scratch",
        )
    from monai.networks import nets  # lazy: slow import, 3D only

    model: nn.Module = getattr(nets, MONAI_ARCH[name])(
        spatial_dims=3,
        n_input_channels=in_chans,
        num_classes=num_classes,
        conv1_t_size=3,  # stem kernel 3x3x3 (MONAI default 7)
        conv1_t_stride=1,  # stem stride 1 (MONAI's default is 1 too; explicit on purpose)
        no_max_pool=True,  # skip the stride-2 max-pool after the stem
    )
    zero_init_last_bn(model)
    if drop_rate > 0:
        fc = model.fc
        head = DropoutLinear(fc.in_features, fc.out_features, drop_rate)
        head.load_state_dict(fc.state_dict())
        model.fc = head
    return model
