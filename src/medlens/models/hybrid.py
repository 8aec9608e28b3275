"""A hybrid CNN-Transformer ("cnn_transformer"): CNN feature maps become transformer tokens.

A timm ResNet-18 up to its third stage turns the image into a grid of local features; each
grid cell is projected to a token, a [CLS] token and 2D sine-cosine positions are added, and a
pre-norm transformer encoder relates every region to every other before the [CLS] token is
classified. The CNN supplies the locality and translation bias that plain ViTs lack on small
medical datasets; the encoder supplies global context (cf. TransMed, Dai et al. 2021; BoTNet).

For small images (under 112 px, e.g. MedMNIST's 28 px) the CNN keeps full resolution in its
stem (3x3 stride-1 conv, no max-pool), so a 28 px image still gives a 7x7 token grid; larger
grids are average-pooled to at most ``max_grid`` x ``max_grid`` tokens to bound attention cost.
"""

from __future__ import annotations

import torch
from torch import nn

from medlens.errors import ModelError


def sincos_positions(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """(h*w, dim) 2D sine-cosine position embedding (MAE's), for any grid size."""
    if dim % 4:
        raise ModelError(f"embedding width {dim} must be a multiple of 4")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    y = ys.reshape(-1, 1) * omega
    x = xs.reshape(-1, 1) * omega
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1)


class CnnTransformer(nn.Module):
    """CNN stages -> 1x1 projection -> tokens + [CLS] + positions -> encoder -> head."""

    def __init__(
        self,
        *,
        in_chans: int,
        num_classes: int,
        img_size: int = 224,
        dim: int = 256,
        depth: int = 4,
        heads: int = 8,
        max_grid: int = 14,
        drop_rate: float = 0.0,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        import timm

        from medlens.models.resnet_medmnist import medmnist_stem

        cnn = timm.create_model(
            "resnet18", pretrained=pretrained, in_chans=in_chans, num_classes=0, global_pool=""
        )
        if img_size < 112:
            medmnist_stem(cnn, in_chans)
        cnn.layer4 = nn.Identity()  # stop after the third stage (256 channels)
        self.cnn = cnn
        self.proj = nn.Conv2d(256, dim, kernel_size=1)
        self.pool = nn.AdaptiveAvgPool2d(max_grid)
        self.max_grid = max_grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=4 * dim, dropout=0.1, activation="gelu",
            batch_first=True, norm_first=True,
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The CNN's feature map after projection, (N, dim, h, w)."""
        f = self.proj(self.cnn.forward_features(x))
        if max(f.shape[-2:]) > self.max_grid:
            f = self.pool(f)
        return f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.forward_features(x)
        n, d, h, w = f.shape
        tokens = f.flatten(2).transpose(1, 2) + sincos_positions(h, w, d, f.device).to(f.dtype)
        tokens = torch.cat([self.cls_token.expand(n, -1, -1).to(f.dtype), tokens], dim=1)
        out = self.norm(self.encoder(tokens))[:, 0]
        return self.head(self.head_drop(out))


def build(
    *, in_chans: int, num_classes: int, pretrained: bool, drop_rate: float, img_size: int = 224
) -> nn.Module:
    """The medlens hybrid; ``pretrained`` loads timm's ImageNet ResNet-18 into the CNN part."""
    if img_size < 16:
        raise ModelError(f"cnn_transformer needs images of at least 16 px, got {img_size}")
    return CnnTransformer(
        in_chans=in_chans,
        num_classes=num_classes,
        img_size=img_size,
        drop_rate=drop_rate,
        pretrained=pretrained,
    )
