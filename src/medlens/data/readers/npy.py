"""``.npy`` arrays through numpy: numeric, 2D (H, W), (H, W, 3) or 3D (D, H, W), never pickles.

Files only: an upload is never taken for an array (``uploads=False``).
"""

from __future__ import annotations

import tokenize
from pathlib import Path
from typing import Any

import numpy as np

from medlens.data.readers.base import (
    PARSE_ERRORS,
    READ_ERRORS,
    ImageReader,
    LoadedImage,
    check_pixels,
    finite,
)
from medlens.errors import DataError

MAGIC = b"\x93NUMPY"


def read(path: Path, max_pixels: int) -> LoadedImage:
    """Load a numeric array, its shape and size checked from the header before loading."""
    with path.open("rb") as f:
        magic = f.read(6)
    if magic.startswith(b"PK"):  # a zip: an .npz archive named .npy
        raise DataError(
            f"{path} is an .npz archive, not a .npy array",
            hint="rename it to .npz or save one array with numpy.save",
        )
    if magic != MAGIC:
        raise DataError(
            f"{path} is not a .npy array file (no NUMPY header)",
            hint="save the array with numpy.save(path, array)",
        )
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)  # the header first, no decoding
    except (*PARSE_ERRORS, tokenize.TokenError) as exc:
        objects = "pickle" in str(exc) or "Python objects" in str(exc)
        why = "holds Python objects" if objects else "is truncated or corrupt"
        raise DataError(
            f"{path} {why} ({type(exc).__name__})",
            hint="save a numeric array with numpy.save(path, array)",
        ) from exc
    if arr.ndim not in (2, 3) or arr.dtype.kind not in "biuf":
        raise DataError(
            f"{path} holds a {arr.dtype} array of shape {arr.shape}",
            hint="give a numeric 2D (H, W), (H, W, 3) or 3D (D, H, W) array",
        )
    colour = arr.ndim == 3 and arr.shape[-1] == 3
    check_pixels(path, arr.shape[:2] if colour else arr.shape, max_pixels)
    meta: dict[str, Any] = {"dtype": str(arr.dtype)}
    try:
        data = np.array(arr, dtype=np.float32)
    except (*READ_ERRORS,) as exc:
        raise DataError(
            f"{path} is truncated ({type(exc).__name__})", hint="save it again"
        ) from exc
    return LoadedImage(finite(data, path, meta), None, "npy", None, meta)


NPY = ImageReader("npy", ".npy", (".npy",), read, magic=(MAGIC,), uploads=False)
