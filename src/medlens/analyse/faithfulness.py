"""Deletion and insertion scores of saliency maps (Petsiuk et al., RISE, BMVC 2018).

Deletion: in ``steps`` equal steps, replace the most salient pixels (voxels) first by a blurred
copy of the image and record the target class's probability; the score is the area under that
curve over the removed fraction (0 to 1): a faithful map makes it drop fast, so **lower is
better**. Insertion starts from the blurred image and puts the original pixels back, most
salient first: **higher is better**. The same scores for a random map are the chance level a
useful map must beat. All steps of a group of images are scored in batched forward passes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medlens.inference import probabilities

BASELINES = ("blur", "mean")
_BATCH_VOXELS = 2**21  # input pixels/voxels per forward pass
_GROUP_FLOATS = 2**24  # floats of perturbed images held at once


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a batch (N, C, H, W) or (N, C, D, H, W), edges replicated."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    n_spatial, chans = x.ndim - 2, x.shape[1]
    conv = F.conv2d if n_spatial == 2 else F.conv3d
    out = x.float().contiguous()
    for axis in range(n_spatial):
        shape = [1] * n_spatial
        shape[axis] = kernel.numel()
        weight = kernel.view(1, 1, *shape).repeat(chans, 1, *[1] * n_spatial)
        pad = [0] * (2 * n_spatial)
        pad[2 * (n_spatial - 1 - axis)] = pad[2 * (n_spatial - 1 - axis) + 1] = radius
        out = conv(F.pad(out, pad, mode="replicate"), weight, groups=chans)
    return out


def removed_baseline(x: torch.Tensor, baseline: str = "blur") -> torch.Tensor:
    """What removed pixels become: a strong blur (sigma a tenth of the size) or the mean."""
    if baseline == "blur":
        return gaussian_blur(x, sigma=max(1.0, max(x.shape[2:]) / 10))
    if baseline == "mean":
        dims = tuple(range(2, x.ndim))
        return x.float().mean(dim=dims, keepdim=True).expand_as(x).contiguous()
    raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")


def _ranks(maps: torch.Tensor, seed: int) -> torch.Tensor:
    """Per image, each pixel's rank by saliency (0: most salient); ties broken at random."""
    flat = maps.flatten(1).double()
    gen = torch.Generator().manual_seed(seed)
    jitter = torch.rand(flat.shape, generator=gen, dtype=torch.float64) * 1e-9
    order = torch.argsort(flat + jitter.to(flat.device), dim=1, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def _area(curves: np.ndarray) -> np.ndarray:
    """Area under curves sampled at evenly spaced fractions 0..1 (trapezoid rule)."""
    k = curves.shape[1] - 1
    return (curves[:, :-1] + curves[:, 1:]).sum(axis=1) / (2 * k)


@torch.no_grad()
def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 20,
    baseline: str = "blur",
    task: str = "multi-class",
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Deletion and insertion curves (N, steps + 1) and their areas (N,) for ``maps``.

    ``x`` is the normalised batch the maps explain (on the model's device), ``maps`` (N, *S)
    their saliency, ``targets`` the class whose probability is followed.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    model.eval()
    device = x.device
    n, spatial = x.shape[0], x.shape[2:]
    pixels = math.prod(spatial)
    targets = torch.as_tensor(targets, device=device).long().reshape(-1)
    ranks = _ranks(maps.to(device), seed).view(n, 1, 1, *spatial)
    counts = torch.round(torch.arange(steps + 1, device=device) * pixels / steps).long()
    counts = counts.view(1, steps + 1, 1, *[1] * len(spatial))
    blurred = removed_baseline(x, baseline)
    # images per forward pass, and images whose steps are built at once (~64 MB of floats)
    batch = max(1, min(batch_size, _BATCH_VOXELS // pixels))
    per_group = max(1, _GROUP_FLOATS // ((steps + 1) * x.shape[1] * pixels))
    curves: dict[str, list[torch.Tensor]] = {"deletion": [], "insertion": []}
    for start in range(0, n, per_group):
        sl = slice(start, start + per_group)
        removed = ranks[sl] < counts  # (g, steps + 1, 1, *S): True where a pixel is removed
        orig, blur = x[sl].float().unsqueeze(1), blurred[sl].unsqueeze(1)
        tgt = targets[sl].repeat_interleave(steps + 1)
        for name, (first, second) in {
            "deletion": (blur, orig),
            "insertion": (orig, blur),
        }.items():
            images = torch.where(removed, first, second).flatten(0, 1)
            probs = torch.cat(
                [
                    probabilities(model(images[i : i + batch]), task)
                    for i in range(0, len(images), batch)
                ]
            )
            score = probs.gather(1, tgt.view(-1, 1)).view(-1, steps + 1)
            curves[name].append(score.float().cpu())
    out: dict[str, np.ndarray] = {}
    for name, parts in curves.items():
        curve = torch.cat(parts).numpy().astype(np.float64)
        out[f"{name}_curve"] = curve
        out[name] = _area(curve)
    return out


def faithfulness_scores(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 20,
    baseline: str = "blur",
    task: str = "multi-class",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Deletion/insertion areas (N,) of ``maps`` and of a random map (the chance level).

    Keys: ``deletion``, ``insertion`` (lower / higher is better), ``random_deletion``,
    ``random_insertion``. The random map is drawn from ``seed``, so scores are repeatable.
    """
    scores = deletion_insertion(model, x, maps, targets, steps, baseline, task, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    random_maps = torch.rand(tuple(maps.shape), generator=gen)
    chance = deletion_insertion(model, x, random_maps, targets, steps, baseline, task, seed=seed)
    return {
        "deletion": scores["deletion"],
        "insertion": scores["insertion"],
        "random_deletion": chance["deletion"],
        "random_insertion": chance["insertion"],
    }
