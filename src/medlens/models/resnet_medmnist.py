"""ResNets for small (28 px) images, as in the MedMNIST papers ("resnet18_medmnist", ...).

timm's ResNet stem is a 7x7 stride-2 conv followed by a 3x3 stride-2 max-pool: it shrinks the
input 4x before the first stage, so a 28 px MedMNIST image would be 7 px at layer1 and 1 px at
layer4, leaving almost nothing for the residual stages to work on. As in the MedMNIST
benchmark (Yang et al., 2021/2023), the stem here is a 3x3 stride-1 conv and the max-pool is
removed, so a 28 px input reaches layer4 at 4x4. timm's bn1/act1 and all later stages are kept.
"""

from __future__ import annotations

from torch import nn

# timm base architecture for each medlens name.
BASE_ARCH: dict[str, str] = {
    "resnet18_medmnist": "resnet18",
    "resnet50_medmnist": "resnet50",
}


def medmnist_stem(model: nn.Module, in_chans: int) -> nn.Module:
    """Swap a timm ResNet's 7x7/2 stem conv and max-pool for a 3x3/1 conv and no pooling.

    The new conv is freshly initialised (kaiming normal, fan_out, relu), also when the rest of
    the model holds pretrained weights: a 7x7 pretrained kernel does not map onto 3x3.
    """
    stem_width = model.conv1.out_channels  # 64 for resnet18/50: bn1 expects this many
    conv = nn.Conv2d(in_chans, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    model.conv1 = conv
    model.maxpool = nn.Identity()
    # Keep timm's feature metadata honest: the stem no longer downsamples (was 2x conv, 2x pool).
    for info in getattr(model, "feature_info", []):
        info["reduction"] = 1 if info["module"] == "act1" else info["reduction"] // 4
    return model


def build(
    name: str, *, in_chans: int, num_classes: int, pretrained: bool, drop_rate: float
) -> nn.Module:
    """timm ResNet (pretrained passed through) with the MedMNIST small-input stem."""
    import timm  # lazy: timm is slow to import

    model = timm.create_model(
        BASE_ARCH[name],
        pretrained=pretrained,
        in_chans=in_chans,
        num_classes=num_classes,
        drop_rate=drop_rate,
    )
    return medmnist_stem(model, in_chans)
