"""Saliency maps drawn over their images: an RGB heat-map overlay and a side-by-side PNG."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image


def peak_slice(cam: np.ndarray) -> int:
    """The axial slice (first axis) of a (D, H, W) map that holds its maximum."""
    return int(np.unravel_index(int(np.argmax(cam)), cam.shape)[0])


def _slice_pair(image: np.ndarray, cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image (C, H, W), map (H, W)); for a volume, the slice where the map peaks."""
    image, cam = np.asarray(image), np.asarray(cam, dtype=np.float64)
    if image.ndim == 4 and cam.ndim == 3:
        d = peak_slice(cam)
        image, cam = image[:, d], cam[d]
    if image.ndim != 3 or cam.ndim != 2 or image.shape[1:] != cam.shape:
        raise ValueError(
            f"image {image.shape} and map {cam.shape} do not match: expected (C, H, W) with "
            "(H, W), or (C, D, H, W) with (D, H, W)"
        )
    return image, cam


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (C, H, W) -> (H, W, 3): grey repeated, RGB as is, other channel counts averaged."""
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.shape[0] == 3:
        return np.ascontiguousarray(np.moveaxis(image, 0, -1))
    grey = image[0] if image.shape[0] == 1 else image.mean(axis=0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def overlay_image(
    image: np.ndarray, cam: np.ndarray, alpha: float = 0.45, colormap: str = "jet"
) -> np.ndarray:
    """RGB uint8 (H, W, 3): ``image`` blended with ``cam`` drawn in a matplotlib colormap.

    ``image`` is uint8 channel-first, (C, H, W) with 1 or 3 channels, or a volume
    (C, D, H, W); ``cam`` is (H, W) or (D, H, W) in [0, 1]. For a volume the axial slice where
    the map peaks is drawn.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    image, cam = _slice_pair(image, cam)
    heat = colormaps[colormap](np.clip(cam, 0.0, 1.0))[..., :3] * 255.0
    blend = (1.0 - alpha) * _rgb(image).astype(np.float64) + alpha * heat
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def image_and_overlay(
    image: np.ndarray, cam: np.ndarray, alpha: float = 0.45
) -> tuple[np.ndarray, np.ndarray]:
    """(the image as RGB, its overlay), both (H, W, 3) uint8; for a volume, the peak slice."""
    return _rgb(_slice_pair(image, cam)[0]), overlay_image(image, cam, alpha)


def save_side_by_side(
    path: str | Path,
    image: np.ndarray,
    cam: np.ndarray,
    alpha: float = 0.45,
    min_size: int = 256,
) -> Path:
    """Write a PNG of the image and its overlay side by side (original | overlay).

    Small images are enlarged as :func:`enlarged` does.
    """
    small = image_and_overlay(image, cam, alpha)
    original, overlay = (enlarged(part, min_size) for part in small)
    h, w = original.shape[:2]
    gap = 4 * (h // small[0].shape[0])  # 4 pixels of the original image
    canvas = np.full((h, 2 * w + gap, 3), 255, dtype=np.uint8)
    for i, part in enumerate((original, overlay)):
        x0 = i * (w + gap)
        canvas[:, x0 : x0 + w] = part
    path = Path(path)
    Image.fromarray(canvas).save(path)
    return path


def enlarged(rgb: np.ndarray, min_size: int = 160) -> np.ndarray:
    """An RGB image enlarged by a whole factor (nearest neighbour) until its longer side is at
    least ``min_size`` pixels, so that a 28 px image stays readable."""
    factor = max(1, -(-min_size // max(rgb.shape[:2])))
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def png_data_uri(rgb: np.ndarray, min_size: int = 160) -> str:
    """An RGB uint8 image as a PNG ``data:`` URI, enlarged as :func:`enlarged` does."""
    buf = io.BytesIO()
    Image.fromarray(enlarged(rgb, min_size)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
