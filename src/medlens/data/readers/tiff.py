"""TIFF through Pillow, and through tifffile for what Pillow cannot read in full (float,
16-bit colour, multi-page stacks, which become (D, H, W) volumes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.data.readers.base import (
    PARSE_ERRORS,
    ImageReader,
    LoadedImage,
    Source,
    check_pixels,
    finite,
    to_gray,
)
from medlens.data.readers.pil import decode
from medlens.errors import DataError


def read(source: Source, max_pixels: int) -> LoadedImage:
    """Decode a TIFF: Pillow first, tifffile for stacks, wide colour and what Pillow refuses."""
    arr, meta = decode(source, "tiff", max_pixels, fallback=read_tifffile)
    return LoadedImage(finite(arr, source, meta), None, "tiff", None, meta)


def read_tifffile(
    path: Source, max_pixels: int, first: BaseException | None = None
) -> tuple[np.ndarray, dict]:
    """Pixels and meta of the first series through tifffile (``first``: Pillow's failure)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
            check_pixels(
                path, tuple(s for s, a in zip(shape, axes, strict=True) if a != "S"), max_pixels
            )
            arr = series.asarray()
    except DataError:
        raise
    except PARSE_ERRORS as exc:
        raise DataError(
            f"{path} is not a readable TIFF image ({type(exc).__name__}: {exc})",
            hint="check that the file is complete; compressed TIFFs may need "
            "pip install imagecodecs",
        ) from (first or exc)
    meta: dict[str, Any] = {"mode": "tifffile", "axes": axes}
    if arr.dtype.kind not in "biuf":
        raise DataError(
            f"{path} holds {arr.dtype} pixels", hint="save the image as integer or float pixels"
        )
    colour = False
    if "S" in axes:  # samples (colour channels) last
        arr = np.moveaxis(arr, axes.index("S"), -1)
        colour = arr.shape[-1] >= 3
        arr = arr[..., :3] if colour else arr[..., 0]  # RGB(A) / gray(+alpha)
    spatial = arr.ndim - colour
    if spatial not in (2, 3):
        raise DataError(
            f"{path} is a {spatial}D TIFF (axes {axes}, shape {shape})",
            hint="medlens reads 2D images and 3D stacks; save one image or stack per file",
        )
    if spatial == 3 and colour:  # a stack of colour pages: gray volume
        arr = to_gray(arr)
        meta["converted_to_gray"] = True
    if spatial == 3:
        meta["n_frames"] = int(arr.shape[0])
    return np.asarray(arr, dtype=np.float32), meta


TIFF = ImageReader("tiff", "TIFF", (".tif", ".tiff"), read, magic=(b"II*\x00", b"MM\x00*"))
