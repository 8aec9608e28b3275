"""Saliency-map post-processing shared by every method: scaling to [0, 1] and the peak."""

from __future__ import annotations

import numpy as np
import torch


def unit_scale(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map of a batch (N, ...) to [0, 1] by its own min and max.

    A constant map (Grad-CAM whose ReLU removed everything) becomes all zeros rather than NaN.
    """
    flat = maps.detach().float().flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - lo
    scaled = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return scaled.view_as(maps)


def peak_location(cam: np.ndarray | torch.Tensor) -> tuple[int, ...]:
    """Index of the map's maximum: (row, col) for a 2D map, (slice, row, col) for 3D."""
    arr = cam.detach().cpu().numpy() if isinstance(cam, torch.Tensor) else np.asarray(cam)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(arr)), arr.shape))
