"""Preprocessing applied once per image when a cache is built: intensity, filters, size.

The input is what a reader decodes: float32 ``(H, W)`` gray, ``(H, W, 3)`` colour or
``(D, H, W)`` volume, with an optional voxel ``spacing`` (same axis order) and the ``window``
(center, width) a DICOM file suggests, with its VOI LUT Function. The output is uint8,
channel-first: ``(C, H, W)`` or ``(C, D, H, W)``.

Order: (3D) resample to ``target_spacing`` -> intensity to [0, 1] (a window, else a
normalisation) -> non-local-means denoising -> CLAHE -> resize (pad, crop or stretch) ->
channels -> uint8. The filters run after the [0, 1] mapping so that their parameters
(``clahe_clip``, the NLM strength) mean the same for CT in Hounsfield units, 16-bit X-rays and
8-bit photographs.

>>> cfg = PreprocessConfig(size=[224, 224], window="lung")
>>> preprocess(np.full((512, 512), -600.0, np.float32), cfg).shape
(1, 224, 224)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from medlens.config.preprocess import (
    WINDOW_PRESETS,
    PreprocessConfig,
    Window,
    parse_window,
)
from medlens.errors import ConfigError, DataError

__all__ = [
    "WINDOW_PRESETS",
    "PreprocessConfig",
    "Window",
    "parse_window",
    "preprocess",
    "preprocess_image",
]

if TYPE_CHECKING:
    from medlens.data.readers import LoadedImage

# Resampling to a fine target spacing can create huge volumes; 2**28 voxels is 1 GiB as float32.
MAX_RESAMPLED_VOXELS = 2**28


def apply_window(array: np.ndarray, center: float, width: float) -> np.ndarray:
    """The linear DICOM window as float32 in [0, 1]: ``center -/+ width/2`` -> 0 / 1, clipped.

    DICOM PS3.3 C.11.2.1.2.1 writes it with ``center - 0.5`` and ``width - 1`` because stored
    values are integers; on float data those terms move the result by under ``1/width``, so
    the continuous form is used and center 40, width 400 maps -160, 40, 240 to 0, 0.5, 1.
    """
    if not width > 0:
        raise ConfigError(f"window width must be positive, got {width}", hint="e.g. '40,400'")
    lo = np.float32(center - width / 2)
    out = (np.asarray(array, dtype=np.float32) - lo) * np.float32(1.0 / width)
    return np.clip(out, 0.0, 1.0, out=out)


def apply_file_window(
    array: np.ndarray,
    center: float,
    width: float,
    function: str = "LINEAR",
    *,
    inverted: bool = False,
) -> np.ndarray:
    """A DICOM file's own window, as its VOI LUT Function says, as float32 in [0, 1].

    pydicom's ``apply_windowing`` computes it (PS3.3 C.11.2.1.2-3): LINEAR with the standard's
    integer offsets (``center - 0.5``, ``width - 1``), LINEAR_EXACT, or SIGMOID
    (``1 / (1 + exp(-4 (x - center) / width))``). ``inverted``: the reader mirrored the values
    and the center of a MONOCHROME1 file (``x' = S - x``); the function is applied to the
    original values (``x - center`` is ``(-x') - (-center')``) and its output mirrored, as a
    viewer shows such a file.

    >>> apply_file_window(np.array([-160.0, 40.0, 240.0]), 40, 400, "SIGMOID").round(3)
    array([0.119, 0.5  , 0.881], dtype=float32)
    """
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_windowing

    from medlens.data.readers.dicom import WINDOW_FUNCTIONS

    if function not in WINDOW_FUNCTIONS:
        raise DataError(
            f"unknown VOI LUT Function {function!r}",
            hint=f"use one of {', '.join(WINDOW_FUNCTIONS)}",
        )
    least = "1 or more" if function == "LINEAR" else "over 0"  # PS3.3 C.11.2.1.2.1, C.11.2.1.3
    if not (width >= 1 if function == "LINEAR" else width > 0):
        raise DataError(
            f"a {function} window needs a width of {least}, got {width}",
            hint="a narrower window can be applied as LINEAR_EXACT",
        )
    # A VOI module with nothing else: MONOCHROME2, no rescale (the values are modality values
    # already) and an unsigned 1-bit range, so that pydicom's output range is [0, 1] itself.
    # FD elements take any float as it is (a DS value is a string of at most 16 characters,
    # which pydicom checks when its validation mode says so).
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored, voi.PixelRepresentation = 1, 0
    voi.add_new(0x00281050, "FD", -float(center) if inverted else float(center))  # Center
    voi.add_new(0x00281051, "FD", float(width))  # Window Width
    voi.VOILUTFunction = function
    values = np.asarray(array)
    out = apply_windowing(-values if inverted else values, voi)
    return np.asarray(1.0 - out if inverted else out, dtype=np.float32)


def to_unit_range(
    array: np.ndarray,
    cfg: PreprocessConfig,
    file_window: Window | None = None,
    meta: dict[str, Any] | None = None,
    *,
    window_function: str = "LINEAR",
    inverted: bool = False,
) -> np.ndarray:
    """Window (if configured and available) or normalise to float32 in [0, 1].

    ``file_window`` is the DICOM's own (center, width), used by ``window="file"`` with its
    ``window_function`` (see :func:`apply_file_window`); when the image has none,
    ``cfg.normalize`` applies and ``meta["window_fallback"]`` says so. Presets and
    ``"C,W"`` windows are linear (:func:`apply_window`). A constant image becomes zeros under
    percentile, minmax and zscore (no division by zero).
    """
    if cfg.window is not None:
        w = parse_window(cfg.window, file_window)
        if w is not None and cfg.window == "file":
            return apply_file_window(array, *w, window_function, inverted=inverted)
        if w is not None:
            return apply_window(array, *w)
        if meta is not None:
            meta["window_fallback"] = f"no window in the file: normalize={cfg.normalize} used"
    a = np.asarray(array, dtype=np.float32)
    if cfg.normalize == "none":  # already 0..255
        return np.clip(a * np.float32(1 / 255), 0.0, 1.0)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros_like(a)
    if cfg.normalize == "zscore":
        mean, std = float(a.mean(dtype=np.float64)), float(a.std(dtype=np.float64))
        z = np.clip((a - np.float32(mean)) / np.float32(std), -3.0, 3.0)
        return ((z + 3.0) / 6.0).astype(np.float32)
    if cfg.normalize == "percentile":
        # a regular subsample of at most 65,536 pixels: percentiles to well under one grey
        # level, and 4 ms -> 0.3 ms on a 512 x 512 image
        sample = a.ravel()[:: max(1, a.size // 65_536)]
        p_lo, p_hi = (float(p) for p in np.percentile(sample, cfg.percentiles))
        # a mostly flat image (e.g. a small object on an empty background) can have equal
        # percentiles although it is not constant: min-max keeps its object visible
        if p_hi > p_lo:
            lo, hi = p_lo, p_hi
    out = (a - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def resize_to(
    array01: np.ndarray, size: list[int] | tuple[int, ...], mode: str, fill: float | None = None
) -> np.ndarray:
    """Resize the spatial axes (all but a trailing colour axis) to ``size``, as float32.

    Works on (H, W), (H, W, C) and (D, H, W). ``pad`` keeps the aspect ratio, fits the image
    inside ``size`` and centres it on a canvas of ``fill`` (default: the image minimum);
    ``crop`` keeps the aspect ratio, fills ``size`` and centre-crops; ``stretch`` resizes
    each axis independently.
    """
    # 3D: skimage's resize, which blurs first with a Gaussian sized from the scale factor when
    # shrinking (scipy's zoom has no anti-aliasing); order=1 keeps 0..1 free of overshoot.
    # 2D goes through Pillow (see _resize_2d): 10-20x faster, the cache's hot path.

    size = [int(s) for s in size]
    n = len(size)
    if array01.ndim not in (n, n + 1):
        raise ConfigError(
            f"cannot resize an array of shape {array01.shape} to {n}D size {size}",
            hint=f"give size {n} values for {n}D images",
        )
    image = np.asarray(array01, dtype=np.float32)
    spatial = image.shape[:n]
    rest = image.shape[n:]
    if list(spatial) == size:
        return image.copy()
    if mode == "stretch":
        shape = size
    elif mode in ("pad", "crop"):
        ratio = [t / s for s, t in zip(spatial, size, strict=True)]
        factor = min(ratio) if mode == "pad" else max(ratio)
        shape = [max(1, round(s * factor)) for s in spatial]
        # rounding must not push the fitted side past the target (pad) or under it (crop)
        shape = [
            min(s, t) if mode == "pad" else max(s, t) for s, t in zip(shape, size, strict=True)
        ]
    else:
        raise ConfigError(f"unknown resize mode {mode!r}", hint="use pad, crop or stretch")
    if n == 2:
        resized = _resize_2d(image, shape)
    else:
        from skimage.transform import resize

        shrinking = any(t < s for s, t in zip(spatial, shape, strict=True))
        resized = resize(
            image, tuple(shape) + rest, order=1, preserve_range=True, anti_aliasing=shrinking
        ).astype(np.float32, copy=False)
    if mode == "stretch":
        return resized
    fill = float(image.min()) if fill is None else fill
    canvas = np.full(tuple(size) + rest, fill, np.float32)
    src, dst = [], []
    for s, t in zip(shape, size, strict=True):
        off = abs(t - s) // 2
        if s <= t:  # pad: centre the image on the canvas
            src.append(slice(0, s))
            dst.append(slice(off, off + s))
        else:  # crop: keep the centre
            src.append(slice(off, off + t))
            dst.append(slice(0, t))
    canvas[tuple(dst)] = resized[tuple(src)]
    return canvas


def _resize_2d(image: np.ndarray, shape: list[int]) -> np.ndarray:
    """Bilinear resize of (H, W) or (H, W, C) float32, one channel at a time, with Pillow.

    Pillow's float ("F") mode widens the bilinear filter by the scale factor when shrinking,
    so it is anti-aliased like skimage's Gaussian-then-resize, at ~1 ms instead of ~20 ms for a
    512 x 512 image (benchmarks/cache_speed.py). Bilinear weights are non-negative, so values
    stay within the input's range.
    """
    from PIL import Image

    planes = image[..., None] if image.ndim == 2 else image
    out = np.empty((shape[0], shape[1], planes.shape[-1]), np.float32)
    for c in range(planes.shape[-1]):
        plane = Image.fromarray(np.ascontiguousarray(planes[..., c]), mode="F")
        out[..., c] = np.asarray(plane.resize((shape[1], shape[0]), Image.Resampling.BILINEAR))
    return out[..., 0] if image.ndim == 2 else out


def _resample(
    volume: np.ndarray, spacing: tuple[float, ...] | None, target: list[float]
) -> np.ndarray:
    """Resample a (D, H, W) volume from ``spacing`` to ``target`` mm per voxel."""
    from scipy.ndimage import gaussian_filter, zoom

    if spacing is None:
        raise DataError(
            f"the volume (shape {volume.shape}) has no voxel spacing, so "
            f"target_spacing {target} cannot be applied",
            hint="use files that store their spacing (NIfTI, DICOM), or set "
            "data.preprocess.target_spacing to null",
        )
    sp = np.asarray(spacing, dtype=float)
    if sp.shape != (3,) or not (np.isfinite(sp).all() and (sp > 0).all()):
        raise DataError(
            f"the volume's spacing {tuple(spacing)} is not 3 positive values (D, H, W)",
            hint="check the file's header, or set data.preprocess.target_spacing to null",
        )
    factors = sp / np.asarray(target, dtype=float)
    if np.allclose(factors, 1.0, rtol=1e-3):
        return volume
    new_shape = np.maximum(1, np.round(np.asarray(volume.shape) * factors)).astype(int)
    if int(np.prod(new_shape)) > MAX_RESAMPLED_VOXELS:
        raise ConfigError(
            f"resampling a {volume.shape} volume with spacing {tuple(spacing)} to "
            f"{target} mm gives {tuple(new_shape.tolist())} voxels, too many",
            hint="choose a coarser data.preprocess.target_spacing",
        )
    # scipy's zoom is plain separable linear interpolation (order=1, no overshoot).
    # grid_mode=True treats voxels as cells, so a 4 mm voxel becomes exactly two 2 mm voxels,
    # and mode="nearest" repeats the border instead of fading it to zero. Axes that shrink are
    # first blurred as skimage.transform.resize does, so coarse spacings do not alias.
    sigma = np.maximum(0.0, (1.0 / factors - 1.0) / 2.0)
    if (sigma > 0).any():
        volume = gaussian_filter(volume, sigma, mode="nearest")
    out = zoom(volume, factors, order=1, mode="nearest", grid_mode=True)
    return out.astype(np.float32, copy=False)


def _denoise_nlm(image: np.ndarray, colour: bool, is_3d: bool) -> np.ndarray:
    """Non-local means with the noise level estimated from the image itself."""
    from skimage.restoration import denoise_nl_means, estimate_sigma

    axis = -1 if colour else None
    # estimate_sigma (wavelet median absolute deviation) makes the strength adapt to each
    # image; h = 0.8 * sigma with fast_mode is skimage's recommended setting, and a 5x5 patch
    # searched within 6 pixels keeps the cost near 1 ms per 100x100 pixels.
    sigma = float(estimate_sigma(image, average_sigmas=True, channel_axis=axis))
    if not sigma > 1e-6:
        return image
    kw = {"h": 0.8 * sigma, "sigma": sigma, "fast_mode": True, "patch_size": 5}
    kw["patch_distance"] = 6
    if is_3d:  # one sigma for the volume, 2D NLM per slice: 3D search windows cost ~13x more
        out = np.stack([denoise_nl_means(s, **kw) for s in image])
    else:
        out = denoise_nl_means(image, channel_axis=axis, **kw)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def _clahe(image: np.ndarray, clip: float) -> np.ndarray:
    """CLAHE on a 0..1 image: gray 2D, colour (on HSV value: hue kept) or a whole 3D volume."""
    from skimage.exposure import equalize_adapthist

    if float(image.max()) <= float(image.min()):
        return image  # constant: nothing to equalise (and skimage would rescale 0/0)
    # skimage equalises an RGB image's HSV value channel, which keeps the hues (equalising R,
    # G and B apart would shift them), and equalises a volume with 3D contextual regions
    # (1/8 of each side), which keeps slices consistent where per-slice CLAHE would give each
    # slice its own contrast.
    out = equalize_adapthist(image, clip_limit=clip)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def preprocess(
    array: np.ndarray,
    cfg: PreprocessConfig,
    *,
    spacing: tuple[float, ...] | None = None,
    window: Window | None = None,
    meta: dict[str, Any] | None = None,
    voi: np.ndarray | None = None,
    window_function: str = "LINEAR",
    inverted: bool = False,
) -> np.ndarray:
    """Decoded float image -> uint8, channel-first ``(C, H, W)`` or ``(C, D, H, W)``.

    ``voi``: the file's own non-linear VOI LUT already applied, in [0, 1] (DICOM VOI LUT
    Sequence); with ``cfg.window == "file"`` it replaces the intensity step.

    ``array`` is (H, W) gray, (H, W, 3) colour (an alpha channel is dropped) or (D, H, W);
    ``spacing`` is mm per pixel in the same axis order (needed by ``cfg.target_spacing``);
    ``window`` is the DICOM's suggested (center, width), used when ``cfg.window == "file"``
    with its VOI LUT Function ``window_function`` and ``inverted`` for a MONOCHROME1 file
    (see :func:`apply_file_window`; :func:`preprocess_image` passes all of them from a
    :class:`~medlens.data.readers.LoadedImage`). ``meta``, when given, records what was done
    differently from the config (a window fallback).

    >>> preprocess(np.zeros((40, 30, 3), np.float32), PreprocessConfig(size=[8, 8])).shape
    (1, 8, 8)
    """
    if voi is not None and cfg.window == "file":
        array = np.asarray(voi, dtype=np.float32) * np.float32(255)
        cfg = cfg.model_copy(update={"window": None, "normalize": "none"})
    a = np.asarray(array)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise DataError(f"the image has dtype {a.dtype}", hint="decode it to numbers first")
    colour = a.ndim == 3 and a.shape[-1] in (3, 4)
    if a.ndim not in (2, 3):
        raise DataError(
            f"the image has shape {a.shape}; expected (H, W), (H, W, 3) or (D, H, W)",
            hint="give a 2D image, an RGB image or a single 3D volume",
        )
    is_3d = a.ndim == 3 and not colour
    dims = 3 if is_3d else 2
    if len(cfg.size) != dims:
        example = [cfg.size[-1]] * dims
        kind = "3D (D, H, W)" if is_3d else "2D" + (" colour" if colour else "")
        raise ConfigError(
            f"preprocess size {cfg.size} has {len(cfg.size)} values but the image of shape "
            f"{a.shape} is {kind}: size needs {dims} values",
            hint=f"set data.preprocess.size to {dims} values, e.g. {example}",
        )
    a = a.astype(np.float32, copy=False)
    if colour:
        a = a[..., :3]
    bad = ~np.isfinite(a)
    if bad.any():
        raise DataError(
            f"the image holds {int(bad.sum())} NaN or infinite values (of {a.size})",
            hint="re-export the image, or skip such files with --skip-bad",
        )
    if is_3d and cfg.target_spacing is not None:
        a = _resample(a, spacing, cfg.target_spacing)
    image = to_unit_range(a, cfg, window, meta, window_function=window_function, inverted=inverted)
    if cfg.denoise == "nlm":
        image = _denoise_nlm(image, colour, is_3d)
    if cfg.clahe:
        image = _clahe(image, cfg.clahe_clip)
    if colour and cfg.channels == 1:
        # luminance (skimage's rgb2gray, BT.709 weights) before resizing: both are linear, so
        # the result is the same as converting afterwards at a third of the resizing work
        from skimage.color import rgb2gray

        image = rgb2gray(image).astype(np.float32, copy=False)
        colour = False
    image = resize_to(image, cfg.size, cfg.resize)
    # colour: channels first; gray: one channel, or three identical ones
    image = np.moveaxis(image, -1, 0) if colour else np.repeat(image[None], cfg.channels, 0)
    out = np.rint(np.clip(image, 0.0, 1.0) * 255.0)
    return np.ascontiguousarray(out, dtype=np.uint8)


def preprocess_image(img: LoadedImage, cfg: PreprocessConfig) -> np.ndarray:
    """A decoded file -> uint8 model input: :func:`preprocess` with what the file says
    (spacing, its own window and VOI LUT Function, VOI LUT, MONOCHROME1 inversion).

    >>> cfg = PreprocessConfig(size=[224, 224], window="file")
    >>> preprocess_image(read_image_file("ct.dcm"), cfg).shape  # doctest: +SKIP
    (1, 224, 224)
    """
    return preprocess(
        img.array,
        cfg,
        spacing=img.spacing,
        window=img.window,
        voi=img.voi,
        window_function=img.window_function,
        inverted=bool(img.meta.get("inverted")),
    )
