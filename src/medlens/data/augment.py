"""Batched augmentation on the training device, for 2D and 3D images.

Every geometric transform (flips, 90-degree turns, rotation, zoom, shift) is folded into one
affine matrix per image, so a whole batch is warped by a single ``grid_sample`` call on the
GPU (or CPU) instead of one Python call per image. With ``align_corners=False`` flips and
90-degree turns of square images map pixel centres onto pixel centres, so they stay exact.
Randomness comes from the generator passed in, so a seed reproduces an epoch exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medlens.config import AugmentConfig


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def _sign(n: int, enabled: bool, g: torch.Generator, device) -> torch.Tensor:
    if not enabled:
        return torch.ones(n, device=device)
    return torch.where(torch.rand(n, generator=g, device=device) < 0.5, -1.0, 1.0)


def _inplane_matrix(cfg: AugmentConfig, n: int, g: torch.Generator, device) -> torch.Tensor:
    """(n, 2, 3) affine matrices in normalised (x=W, y=H) coordinates."""
    angle = _uniform(n, -cfg.rotate_deg, cfg.rotate_deg, g, device) * (math.pi / 180)
    if cfg.rot90:
        quarter = torch.randint(0, 4, (n,), generator=g, device=device).float()
        angle = angle + quarter * (math.pi / 2)
    # grid_sample samples the input at theta @ output coordinates, so zooming in by s means
    # sampling a region 1/s as large.
    zoom = 1.0 / _uniform(n, cfg.scale[0], cfg.scale[1], g, device)
    fx = _sign(n, cfg.hflip, g, device)
    fy = _sign(n, cfg.vflip, g, device)
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    tx = _uniform(n, -cfg.translate, cfg.translate, g, device) * 2
    ty = _uniform(n, -cfg.translate, cfg.translate, g, device) * 2
    row0 = torch.stack([cos * fx, -sin * fy, tx], dim=1)
    row1 = torch.stack([sin * fx, cos * fy, ty], dim=1)
    return torch.stack([row0, row1], dim=1)


def _volume_matrix(cfg: AugmentConfig, n: int, g: torch.Generator, device) -> torch.Tensor:
    """(n, 3, 4) matrices for (x=W, y=H, z=D): the in-plane transform plus a depth shift."""
    inplane = _inplane_matrix(cfg, n, g, device)
    theta = torch.zeros(n, 3, 4, device=device)
    theta[:, :2, :2] = inplane[:, :, :2]
    theta[:, :2, 3] = inplane[:, :, 2]
    theta[:, 2, 2] = 1.0 / _uniform(n, cfg.scale[0], cfg.scale[1], g, device)
    theta[:, 2, 3] = _uniform(n, -cfg.translate, cfg.translate, g, device) * 2
    return theta


def is_geometric(cfg: AugmentConfig) -> bool:
    return bool(
        cfg.hflip
        or cfg.vflip
        or cfg.rot90
        or cfg.rotate_deg > 0
        or cfg.translate > 0
        or cfg.scale != (1.0, 1.0)
    )


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment a float batch in [0, 1], shape (B, C, H, W) or (B, C, D, H, W).

    >>> g = torch.Generator().manual_seed(0)
    >>> augment_batch(torch.rand(4, 1, 28, 28), AugmentConfig(hflip=True), g).shape
    torch.Size([4, 1, 28, 28])
    """
    n, device = x.shape[0], x.device
    keep = torch.rand(n, generator=generator, device=device) >= cfg.p  # images left untouched
    if is_geometric(cfg):
        if x.ndim == 4:
            theta = _inplane_matrix(cfg, n, generator, device)
            identity = torch.eye(2, 3, device=device)
        else:
            theta = _volume_matrix(cfg, n, generator, device)
            identity = torch.eye(3, 4, device=device)
        theta = torch.where(keep.view(-1, 1, 1), identity, theta)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.brightness > 0 or cfg.contrast > 0:
        shape = (n,) + (1,) * (x.ndim - 1)
        gain = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, generator, device)
        shift = _uniform(n, -cfg.brightness, cfg.brightness, generator, device)
        gain = torch.where(keep, 1.0, gain).view(shape).to(x.dtype)
        shift = torch.where(keep, 0.0, shift).view(shape).to(x.dtype)
        mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
        x = ((x - mean) * gain + mean + shift).clamp_(0.0, 1.0)
    return x
