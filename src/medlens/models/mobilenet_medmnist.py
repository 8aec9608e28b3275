"""MobileNetV3-Small for small (28 px) images ("mobilenetv3_small_medmnist").

timm's ``mobilenetv3_small_100`` downsamples 32x: a 28 px MedMNIST image is 7 px after its
first block and 1 px in its last three stages, where batch norm then sees one value per
channel and image. As the MedMNIST ResNets do (``resnet_medmnist``), the stem conv and the
first block's depthwise conv get stride 1 here, so the network downsamples 8x and a 28 px
input reaches the last stage at 4x4. The layers and their weights' shapes are timm's, so
``pretrained`` loads timm's weights (the stride does not change a kernel).
"""

from __future__ import annotations

from torch import nn


def medmnist_strides(model: nn.Module) -> nn.Module:
    """Stride 1 in a timm MobileNetV3's stem conv and first block's depthwise conv."""
    model.conv_stem.stride = (1, 1)
    first = model.blocks[0][0]
    first.conv_dw.stride = (1, 1)
    for info in getattr(model, "feature_info", []):
        info["reduction"] = max(1, info["reduction"] // 4)
    return model


def build(
    name: str, *, in_chans: int, num_classes: int, pretrained: bool, drop_rate: float
) -> nn.Module:
    """timm ``mobilenetv3_small_100`` (pretrained passed through) with 8x downsampling."""
    import timm  # lazy: timm is slow to import

    model = timm.create_model(
        "mobilenetv3_small_100",
        pretrained=pretrained,
        in_chans=in_chans,
        num_classes=num_classes,
        drop_rate=drop_rate,
    )
    return medmnist_strides(model)
