"""PNG, JPEG and BMP through Pillow: 8 or 16 bit gray (16-bit values kept as they are) or RGB.

Pillow's own decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) applies besides
``max_pixels``; EXIF orientation (phone photos) is applied so the image is shown as viewed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from medlens.data.readers.base import (
    PARSE_ERRORS,
    ImageReader,
    LoadedImage,
    Source,
    check_pixels,
    finite,
)
from medlens.errors import DataError, ImageTooLargeError

#: A reader that takes over what Pillow cannot decode in full: (source, max_pixels, first=
#: Pillow's exception or None) -> (pixels, meta).
Fallback = Callable[..., tuple[np.ndarray, dict]]


def read(source: Source, max_pixels: int, kind: str) -> LoadedImage:
    """Decode a PNG, JPEG or BMP (``kind`` names it in messages and in the result)."""
    arr, meta = decode(source, kind, max_pixels)
    return LoadedImage(finite(arr, source, meta), None, kind, None, meta)


def decode(
    path: Source, kind: str, max_pixels: int, fallback: Fallback | None = None
) -> tuple[np.ndarray, dict]:
    """Pixels and meta through Pillow, the size checked from the header before decoding.

    With ``fallback``, a file Pillow cannot parse, or would decode incompletely (a page stack,
    or colour wider than 8 bits), goes to ``fallback`` instead (TIFF: tifffile).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    label = kind.upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # parses the header only; decoding comes later
                check_pixels(path, (img.height, img.width), max_pixels)
                if fallback and (getattr(img, "n_frames", 1) > 1 or narrows_precision(img)):
                    img = None  # a page stack or 16-bit colour: the fallback keeps it whole
                else:
                    meta: dict[str, Any] = {"mode": img.mode, "format": img.format}
                    if narrows_precision(img):  # 16-bit colour PNG: Pillow keeps the high byte
                        meta["reduced_to_8_bit"] = True
                    arr = _pixels(img, ImageOps, meta)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            f"{path} is too large to decode safely: {exc}",
            hint="downsample it first, or raise PIL.Image.MAX_IMAGE_PIXELS if it is genuine",
        ) from exc
    except (UnidentifiedImageError, *PARSE_ERRORS) as exc:
        if fallback:  # float64, 16-bit colour, odd compressions: the fallback may manage
            return fallback(path, max_pixels, first=exc)
        raise DataError(
            f"{path} is not a readable {label} image ({type(exc).__name__}: {exc})",
            hint=f"check that the file is complete and really a {label}; export it again",
        ) from exc
    if img is None:
        return fallback(path, max_pixels)
    return arr, meta


def narrows_precision(img) -> bool:
    """True when Pillow would decode at a lower precision than stored (16-bit colour, uint32)."""
    wide = img.mode in ("I", "F") or img.mode.startswith("I;16")
    tags = getattr(img, "tag_v2", None)
    if tags is not None:  # TIFF: BitsPerSample and SampleFormat (1 = unsigned)
        bits = tags.get(258) or (1,)
        bits = max(bits) if isinstance(bits, tuple) else int(bits)
        fmt = tags.get(339) or (1,)
        fmt = fmt[0] if isinstance(fmt, tuple) else int(fmt)
        return (bits > 8 and not wide) or (img.mode == "I" and bits == 32 and fmt == 1)
    tile = getattr(img, "tile", None)
    rawmode = str(tile[0].args) if tile and isinstance(tile[0].args, str) else ""
    return ";16" in rawmode and not wide


def _pixels(img, image_ops, meta: dict) -> np.ndarray:
    """Pixels of an open Pillow image: gray stays 2D (16-bit values kept), colour becomes RGB."""
    if img.getexif().get(0x0112, 1) != 1:  # EXIF orientation (phone photos): show as viewed
        img = image_ops.exif_transpose(img)
        meta["exif_transposed"] = True
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float32)  # 16/32-bit gray: the real values, no rescale
    if mode in ("1", "L", "LA", "La"):
        return np.asarray(img.convert("L"), dtype=np.float32)
    if mode in ("P", "PA"):  # palette: colour unless every entry is gray
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
        gray = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
        return rgb[..., 0].copy() if gray else rgb
    return np.asarray(img.convert("RGB"), dtype=np.float32)  # RGB, RGBA, CMYK, YCbCr, ...


PNG = ImageReader("png", "PNG", (".png",), partial(read, kind="png"), magic=(b"\x89PNG\r\n\x1a\n",))
JPEG = ImageReader(
    "jpeg", "JPEG", (".jpg", ".jpeg"), partial(read, kind="jpeg"), magic=(b"\xff\xd8\xff",)
)
BMP = ImageReader("bmp", "BMP", (".bmp",), partial(read, kind="bmp"), magic=(b"BM",))
