"""Batched augmentation on the training device, for 2D and 3D images.

Every geometric transform (flips, 90-degree turns, rotation, zoom, shift, random resized crop)
is folded into one affine matrix per image; an elastic displacement field, when enabled, is
added to the sampling grid; so a whole batch is warped by a single ``grid_sample`` call on the
GPU (or CPU) instead of one Python call per image. With ``align_corners=False`` flips and
90-degree turns between sides of equal length map pixel centres onto pixel centres, so they
stay exact. Rotations are done in pixel units, so they stay rotations on non-square images.
Intensity follows: brightness/contrast, then gamma.

Randomness comes from the generator passed in, so a seed reproduces an epoch exactly. An option
that is off draws nothing, so the options added later leave the draws of older plans as they
were. Images left alone (probability ``1 - p``) come back bit for bit.
"""

from __future__ import annotations

import itertools
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


def _rotation(angle: torch.Tensor, i: int, j: int, dims: int) -> torch.Tensor:
    """(n, dims, dims) rotations by ``angle`` turning axis i towards axis j."""
    r = torch.eye(dims, device=angle.device).repeat(len(angle), 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    r[:, i, i], r[:, j, j], r[:, j, i], r[:, i, j] = cos, cos, sin, -sin
    return r


def _cube_rotations() -> torch.Tensor:
    """(24, 3, 3): the rotations of a cube, signed permutation matrices with determinant +1."""
    found = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = torch.zeros(3, 3)
            m[[0, 1, 2], list(perm)] = torch.tensor(signs)
            if torch.linalg.det(m) > 0:
                found.append(m)
    return torch.stack(found)


CUBE_ROTATIONS = _cube_rotations()


def _turns(cfg: AugmentConfig, shape: list[int], g: torch.Generator, device) -> torch.Tensor:
    """(n, dims, dims) exact quarter turns: any of the 24 for cubes, else in-plane (x, y)."""
    n, dims = shape[0], len(shape) - 1
    if not cfg.rot90:
        return torch.eye(dims, device=device).expand(n, dims, dims)
    if dims == 3 and len(set(shape[1:])) == 1:
        return CUBE_ROTATIONS.to(device)[torch.randint(0, 24, (n,), generator=g, device=device)]
    quarter = torch.randint(0, 4, (n,), generator=g, device=device).float()
    return _rotation(quarter * (math.pi / 2), 0, 1, dims).round()


def _crop(
    cfg: AugmentConfig, side: torch.Tensor, n: int, g: torch.Generator, tries: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random resized crop as (n, dims) side fractions and centres in normalised coordinates.

    torchvision's RandomResizedCrop: the area (volume) fraction is uniform in ``crop_scale``,
    the aspect ratio of each side to the height log-uniform in ``crop_ratio``; the first of
    ``tries`` draws that fits the image is kept, else the whole image.
    """
    device, dims = side.device, len(side)
    lo, hi = cfg.crop_scale
    area = torch.rand(n, tries, 1, generator=g, device=device) * (hi - lo) + lo
    r_lo, r_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
    log_ratio = torch.rand(n, tries, dims, generator=g, device=device) * (r_hi - r_lo) + r_lo
    log_ratio[..., 1] = 0.0  # sides relative to the height (axis y)
    log_side = (area.log() + side.log().sum() - log_ratio.sum(-1, keepdim=True)) / dims
    frac = torch.exp(log_side + log_ratio - side.log())  # crop side / image side
    fits = (frac <= 1 + 1e-6).all(-1)
    first = fits.float().argmax(1)  # the first try that fits
    frac = frac[torch.arange(n, device=device), first].clamp(max=1.0)
    frac = torch.where(fits.any(1, keepdim=True), frac, 1.0)
    centre = (1 - frac) * (torch.rand(n, dims, generator=g, device=device) * 2 - 1)
    return frac, centre


def _affine(cfg: AugmentConfig, shape: list[int], g: torch.Generator, device) -> torch.Tensor:
    """(n, dims, dims + 1) matrices in normalised (x=W, y=H[, z=D]) coordinates, for a batch
    of ``shape`` (n, [D,] H, W).

    grid_sample samples the input at theta @ output coordinates: the output is the input
    cropped, then zoomed, rotated, turned and flipped. The first draws keep the order of
    earlier releases, so that an old plan augments as it did.
    """
    n, dims = shape[0], len(shape) - 1
    side = torch.tensor(shape[:0:-1], dtype=torch.float32, device=device)  # (W, H[, D])
    angle = _uniform(n, -cfg.rotate_deg, cfg.rotate_deg, g, device) * (math.pi / 180)
    turn = _turns(cfg, shape, g, device)
    # zooming in by s means sampling a region 1/s as large
    zoom = [1.0 / _uniform(n, cfg.scale[0], cfg.scale[1], g, device)] * 2
    flip = [_sign(n, cfg.hflip, g, device), _sign(n, cfg.vflip, g, device)]
    shift = [_uniform(n, -cfg.translate, cfg.translate, g, device) * 2 for _ in range(2)]
    rot = _rotation(angle, 0, 1, dims)
    if dims == 3:
        zoom.append(1.0 / _uniform(n, cfg.scale[0], cfg.scale[1], g, device))
        shift.append(_uniform(n, -cfg.translate, cfg.translate, g, device) * 2)
        if cfg.rotate_deg > 0:  # about the y and the x axis too
            for i, j in ((2, 0), (1, 2)):
                tilt = _uniform(n, -cfg.rotate_deg, cfg.rotate_deg, g, device) * (math.pi / 180)
                rot = rot @ _rotation(tilt, i, j, 3)
        flip.append(_sign(n, cfg.dflip, g, device))
    rot = rot * side / side[:, None]  # a rotation in pixel units: S^-1 R S, S = diag(side)
    matrix = torch.stack(zoom, 1)[:, :, None] * rot @ turn * torch.stack(flip, 1)[:, None, :]
    offset = torch.stack(shift, 1)
    if cfg.crop_scale is not None:
        frac, centre = _crop(cfg, side, n, g)
        matrix, offset = frac[:, :, None] * matrix, frac * offset + centre
    return torch.cat([matrix, offset[:, :, None]], dim=2)


def _spline_weights(k: int, size: int, device) -> torch.Tensor:
    """(size, k) cubic B-spline weights of k control points at ``size`` points spanning them.

    B-spline weights are positive and sum to one, so the field never exceeds its largest
    control value (an interpolating bicubic overshoots by up to a third).
    """
    pos = torch.linspace(0, k - 1, size, device=device)
    base = pos.floor().clamp(max=k - 2)
    t = pos - base
    basis = ((1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3)
    weights = torch.zeros(size, k, device=device)
    for offset, b in zip((-1, 0, 1, 2), basis, strict=True):
        idx = (base + offset).clamp(0, k - 1).long()
        weights.scatter_add_(1, idx[:, None], b[:, None] / 6)
    return weights


def _elastic(cfg: AugmentConfig, shape: list[int], g: torch.Generator, device) -> torch.Tensor:
    """(n, [D,] H, W, dims) smooth displacements in normalised units, at most ``elastic``
    of the image side along each axis: random offsets on a coarse control grid, smoothed."""
    n, spatial = shape[0], shape[1:]
    dims, k = len(spatial), cfg.elastic_grid
    ctrl = torch.rand((n, dims) + (k,) * dims, generator=g, device=device) * 2 - 1
    ctrl = ctrl * (2 * cfg.elastic)  # normalised coordinates span 2 per side
    weights = [_spline_weights(k, s, device) for s in spatial]
    axes = "dhw"[-dims:]  # 2D "nzHW,hH,wW->nhwz": control grid (upper case) to pixels
    spec = f"nz{axes.upper()}," + ",".join(a + a.upper() for a in axes) + f"->n{axes}z"
    return torch.einsum(spec, ctrl, *weights)


def is_geometric(cfg: AugmentConfig) -> bool:
    return bool(
        cfg.hflip
        or cfg.vflip
        or cfg.dflip
        or cfg.rot90
        or cfg.rotate_deg > 0
        or cfg.translate > 0
        or cfg.scale != (1.0, 1.0)
        or cfg.crop_scale is not None
        or cfg.elastic > 0
    )


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment a float batch in [0, 1], shape (B, C, H, W) or (B, C, D, H, W): one warp by
    the affine grid (plus the elastic field), then brightness/contrast, then gamma.

    >>> g = torch.Generator().manual_seed(0)
    >>> augment_batch(torch.rand(4, 1, 28, 28), AugmentConfig(hflip=True), g).shape
    torch.Size([4, 1, 28, 28])
    """
    n, device, original = x.shape[0], x.device, x
    per_image = (n,) + (1,) * (x.ndim - 1)
    keep = torch.rand(n, generator=generator, device=device) >= cfg.p  # images left untouched
    if is_geometric(cfg):
        shape = [n, *x.shape[2:]]
        theta = _affine(cfg, shape, generator, device).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        if cfg.elastic > 0:
            grid = grid + _elastic(cfg, shape, generator, device).to(x.dtype)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.brightness > 0 or cfg.contrast > 0:
        gain = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, generator, device)
        shift = _uniform(n, -cfg.brightness, cfg.brightness, generator, device)
        mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
        gain, shift = gain.view(per_image).to(x.dtype), shift.view(per_image).to(x.dtype)
        x = ((x - mean) * gain + mean + shift).clamp_(0.0, 1.0)
    if cfg.gamma > 0:
        gamma = torch.exp(_uniform(n, -cfg.gamma, cfg.gamma, generator, device))  # log-uniform
        x = x.clamp(0.0, 1.0).pow(gamma.view(per_image).to(x.dtype))
    if x is not original and cfg.p < 1:
        x = torch.where(keep.view(per_image), original, x)
    return x
