"""Read single image files (PNG, JPEG, TIFF, BMP, .npy) for prediction, at the model's size."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medlens.data.readers import image_kind
from medlens.errors import DataError

# Refuse images over this many pixels: a 50,000 x 50,000 PNG decompresses to gigabytes.
MAX_PIXELS = 16_384 * 16_384


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    return (
        np.zeros(arr.shape, np.uint8)
        if hi <= lo
        else np.rint((arr - lo) / (hi - lo) * 255).astype(np.uint8)
    )


def _read_pil(path: Path, in_chans: int, shape: tuple[int, ...]) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise DataError(
                        f"{path} is {img.width} x {img.height} pixels, over the "
                        f"{MAX_PIXELS:,}-pixel limit",
                        hint="downsample it first",
                    )
                img.load()
                if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    img = Image.fromarray(_to_uint8(np.asarray(img)))
                img = img.convert("L" if in_chans == 1 else "RGB")
                img = img.resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    except DataError:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        ValueError,
        SyntaxError,
    ) as exc:
        raise DataError(
            f"{path} is not a readable image ({type(exc).__name__}: {exc})",
            hint="check that the file is a complete PNG, JPEG, TIFF or BMP",
        ) from exc
    arr = np.asarray(img)
    return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)


def _read_npy(path: Path, in_chans: int, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path} is not a readable .npy array ({exc})") from exc
    if arr.ndim == len(shape):
        arr = arr[None]
    if arr.shape[1:] != tuple(shape) or arr.shape[0] != in_chans:
        raise DataError(
            f"{path} has shape {arr.shape}; the model takes {(in_chans, *shape)}",
            hint="resample the array to that shape",
        )
    return _to_uint8(arr)


def read_image(path: str | Path, in_chans: int, shape: tuple[int, ...]) -> np.ndarray:
    """One image as uint8 (C, H, W) or (C, D, H, W), ready for the model.

    >>> read_image("scan.png", in_chans=1, shape=(28, 28)).shape  # doctest: +SKIP
    (1, 28, 28)
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is an empty file")
    if path.suffix.lower() == ".npy":
        return _read_npy(path, in_chans, shape)
    if len(shape) == 3:
        raise DataError(
            f"{path}: the model takes 3D volumes, not 2D images",
            hint="pass volumes as .npy arrays of shape (D, H, W)",
        )
    return _read_pil(path, in_chans, shape)


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given, and the image files inside any folder, sorted."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and image_kind(f)))
        else:
            out.append(p)
    if not out:
        raise DataError("no image files found in " + ", ".join(map(str, inputs)))
    return out
