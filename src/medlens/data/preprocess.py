"""Preprocessing applied once per image when a cache is built: intensity, filters, size.

Order: (3D) resample to a target spacing -> intensity to [0, 1] (a window, or a normalisation)
-> non-local-means denoising -> CLAHE -> resize (pad, crop or stretch) -> channels -> uint8.
Filters run after the [0, 1] mapping so that their parameters mean the same for every modality.

>>> cfg = PreprocessConfig(size=[224, 224], window="lung")
>>> preprocess(np.full((512, 512), -600.0, np.float32), cfg).shape
(1, 224, 224)
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medlens.errors import ConfigError, DataError

# (center, width) in Hounsfield units: the usual radiology presets.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
}


class PreprocessConfig(BaseModel):
    """How a decoded file becomes a uint8 array of the model's size."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    size: list[int] = Field(description="target size, [H, W] or [D, H, W]")
    resize: Literal["pad", "crop", "stretch"] = Field(
        "pad", description="pad: keep aspect, fit inside; crop: keep aspect, fill; stretch"
    )
    channels: Literal[1, 3] = 1
    window: str | None = Field(
        None, description="a preset (lung, bone, ...), 'C,W', or 'file' for the DICOM's own"
    )
    normalize: Literal["percentile", "minmax", "zscore", "none"] = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    clahe: bool = False
    clahe_clip: float = Field(0.01, gt=0.0, le=1.0)
    denoise: Literal["none", "nlm"] = "none"
    target_spacing: list[float] | None = Field(None, description="3D: resample to this (mm)")


Window = tuple[float, float]


def parse_window(window: str, file_window: Window | None) -> Window | None:
    """A preset name, ``"C,W"`` or ``"file"`` -> (center, width); None when the file has none."""
    if window == "file":
        return file_window
    if window in WINDOW_PRESETS:
        return WINDOW_PRESETS[window]
    parts = window.split(",")
    if len(parts) == 2:
        try:
            return float(parts[0]), float(parts[1])
        except ValueError:
            pass
    raise ConfigError(
        f"unknown window {window!r}",
        hint=f"use one of {', '.join(WINDOW_PRESETS)}, 'C,W' or 'file'",
    )


def apply_window(array: np.ndarray, center: float, width: float) -> np.ndarray:
    """The linear DICOM window: center - width/2 -> 0, center + width/2 -> 1, clipped."""
    lo = center - width / 2
    return np.clip((array - lo) / max(width, 1e-6), 0.0, 1.0).astype(np.float32)


def to_unit_range(
    array: np.ndarray, cfg: PreprocessConfig, file_window: tuple[float, float] | None = None
) -> np.ndarray:
    """Window or normalise to float32 in [0, 1]."""
    if cfg.window is not None:
        w = parse_window(cfg.window, file_window)
        if w is not None:
            return apply_window(array, *w)
    a = array.astype(np.float32)
    if cfg.normalize == "none":
        return np.clip(a / 255.0, 0.0, 1.0)
    if cfg.normalize == "zscore":
        z = (a - a.mean()) / max(float(a.std()), 1e-6)
        return ((np.clip(z, -3, 3) + 3) / 6).astype(np.float32)
    if cfg.normalize == "percentile":
        lo, hi = np.percentile(a, cfg.percentiles)
    else:
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def resize_to(image: np.ndarray, size: list[int], mode: str, fill: float = 0.0) -> np.ndarray:
    """Resize the spatial axes (all but a trailing colour axis) to ``size``."""
    from skimage.transform import resize

    spatial = image.shape[: len(size)]
    target = np.asarray(size, dtype=float)
    if mode == "stretch":
        scale = target / np.asarray(spatial)
        shape = list(size)
    else:
        ratio = target / np.asarray(spatial)
        factor = ratio.min() if mode == "pad" else ratio.max()
        shape = [max(1, round(s * factor)) for s in spatial]
        scale = np.full(len(size), factor)
    out_shape = tuple(shape) + image.shape[len(size) :]
    resized = resize(
        image, out_shape, order=1, preserve_range=True, anti_aliasing=bool((scale < 1).any())
    ).astype(np.float32)
    if mode == "stretch":
        return resized
    canvas = np.full(tuple(size) + image.shape[len(size) :], fill, np.float32)
    src, dst = [], []
    for s, t in zip(shape, size, strict=True):
        if s <= t:  # pad: centre the image
            off = (t - s) // 2
            src.append(slice(0, s))
            dst.append(slice(off, off + s))
        else:  # crop: centre crop
            off = (s - t) // 2
            src.append(slice(off, off + t))
            dst.append(slice(0, t))
    canvas[tuple(dst)] = resized[tuple(src)]
    return canvas


def _per_slice(fn, image: np.ndarray, is_3d: bool, colour: bool) -> np.ndarray:
    if is_3d:
        return np.stack([fn(s) for s in image])
    if colour:
        return np.stack([fn(image[..., c]) for c in range(image.shape[-1])], axis=-1)
    return fn(image)


def preprocess(
    array: np.ndarray,
    cfg: PreprocessConfig,
    *,
    spacing: tuple[float, ...] | None = None,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Decoded float image -> uint8, channel-first ``(C, H, W)`` or ``(C, D, H, W)``."""
    colour = array.ndim == 3 and array.shape[-1] == 3 and len(cfg.size) == 2
    is_3d = array.ndim == 3 and not colour
    dims = 3 if is_3d else 2
    if len(cfg.size) != dims:
        raise ConfigError(
            f"preprocess.size has {len(cfg.size)} values but the images are {dims}D",
            hint=f"give {dims} values, e.g. {[cfg.size[0]] * dims}",
        )
    if np.isnan(array).any():
        raise DataError("the image holds NaN values", hint="re-export the image")
    if is_3d and cfg.target_spacing is not None and spacing is not None:
        from scipy.ndimage import zoom

        array = zoom(array, np.asarray(spacing) / np.asarray(cfg.target_spacing), order=1)
    image = to_unit_range(array, cfg, window)
    if cfg.denoise == "nlm":
        from skimage.restoration import denoise_nl_means, estimate_sigma

        def nlm(s: np.ndarray) -> np.ndarray:
            sigma = float(estimate_sigma(s))
            if sigma <= 0:
                return s
            return denoise_nl_means(
                s, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6
            ).astype(np.float32)

        image = _per_slice(nlm, image, is_3d, colour)
    if cfg.clahe:
        from skimage.exposure import equalize_adapthist

        image = _per_slice(
            lambda s: equalize_adapthist(s, clip_limit=cfg.clahe_clip).astype(np.float32),
            image,
            is_3d,
            colour,
        )
    image = resize_to(image, cfg.size, cfg.resize, fill=float(image.min()))
    if colour and cfg.channels == 1:
        from skimage.color import rgb2gray

        image = rgb2gray(image)[None]
    elif colour:
        image = np.moveaxis(image, -1, 0)
    else:
        image = np.repeat(image[None], cfg.channels, axis=0)
    return np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
