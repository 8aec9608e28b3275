"""What every reader shares: the decoded image, the reader interface, and the checks on both.

A format is one module beside this one that builds an :class:`ImageReader` (its suffixes, the
bytes its content starts with, its ``read``); ``readers/__init__.py`` lists them.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medlens.errors import DataError, ImageTooLargeError

DEFAULT_MAX_PIXELS = 16384 * 16384

# What the parsers (Pillow, tifffile, pydicom, nibabel, numpy) raise for a broken or hostile
# file, beyond their own exception types; fuzzing the readers turned up each of these.
READ_ERRORS = (OSError, EOFError, ValueError, SyntaxError, zlib.error, struct.error)
PARSE_ERRORS = (
    *READ_ERRORS,
    ArithmeticError,  # ZeroDivisionError, OverflowError from nonsense header fields
    TypeError,
    IndexError,
    KeyError,
    AttributeError,  # pydicom: a required element missing
    RuntimeError,  # pydicom: no decoder plugin for the transfer syntax
    NotImplementedError,
)
# ITU-R BT.601 luma, to turn colour volumes (ultrasound cine loops) into gray volumes.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(eq=False, repr=False)
class LoadedImage:
    """One decoded image, as float32.

    ``array`` is (H, W) gray, (H, W, 3) colour, or (D, H, W) for a volume; ``spacing`` is mm
    per pixel/voxel in the same axis order ((row, col) or (slice, row, col)) when the file
    says; ``window`` is the (center, width) the file suggests (DICOM only), in the units of
    ``array``, and ``window_function`` the DICOM VOI LUT Function it is meant for (LINEAR,
    LINEAR_EXACT or SIGMOID); ``meta`` holds non-identifying technical facts (modality,
    photometric, ...).

    >>> img = LoadedImage(np.zeros((4, 5), np.float32), (0.5, 0.5), "png")
    >>> img
    LoadedImage(kind='png', shape=(4, 5), spacing=(0.5, 0.5), window=None, meta={})
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None
    kind: str
    window: tuple[float, float] | None = None
    meta: dict = field(default_factory=dict)
    voi: np.ndarray | None = None  # DICOM VOI LUT Sequence applied, in [0, 1] (else None)
    window_function: str = "LINEAR"

    def __repr__(self) -> str:  # the shape, not the pixel values
        function = "" if self.window_function == "LINEAR" else f" {self.window_function}"
        return (
            f"LoadedImage(kind={self.kind!r}, shape={tuple(self.array.shape)}, "
            f"spacing={self.spacing}, window={self.window}{function}, meta={self.meta})"
        )


class InMemoryFile(io.BytesIO):
    """A file held in memory (an upload): the readers take it wherever they take a path, and
    ``str()`` gives the name their messages use. Nothing is written to disk.

    >>> str(InMemoryFile(b"...", "upload.png"))
    'upload.png'
    """

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name


Source = Path | InMemoryFile


@dataclass(frozen=True)
class ImageReader:
    """One image format: the names its files have, the bytes its content starts with, and
    how to decode it (as MONAI's ``ImageReader`` classes and nnU-Net's readers declare theirs).

    ``read(source, max_pixels)`` decodes a path or an :class:`InMemoryFile` and raises
    :class:`DataError` naming it. ``magic`` (any of them, at ``magic_offset``) says by content
    that data is of this format; ``sniff`` replaces that test where leading bytes cannot say it
    (a gzipped NIfTI). ``uploads``: :func:`~medlens.data.readers.read_image_bytes` accepts the
    format. ``suffixless``: a file without a suffix, or with a numeric one, is of this format
    when its content says so (DICOM files named ``IM0001`` or by their UID).

    >>> raw = ImageReader("raw", "RAW", (".raw",), read=print, magic=(b"RAW1",))
    >>> raw.verify_suffix(".RAW"), raw.matches(b"RAW1 ..."), raw.matches(b"PK")
    (True, True, False)
    """

    kind: str
    label: str
    suffixes: tuple[str, ...]
    read: Callable[[Source, int], LoadedImage]
    magic: tuple[bytes, ...] = ()
    magic_offset: int = 0
    sniff: Callable[[bytes], bool] | None = None
    uploads: bool = True
    suffixless: bool = False

    def verify_suffix(self, suffix: str) -> bool:
        """True for one of this format's suffixes (``.nii.gz`` counts as one)."""
        return suffix.lower() in self.suffixes

    def matches(self, data: bytes) -> bool:
        """True when ``data`` (a file's first bytes, or all of them) is of this format."""
        if self.sniff is not None:
            return self.sniff(data)
        head = data[self.magic_offset :]
        return any(head.startswith(m) for m in self.magic)


def check_pixels(path: Source, size: tuple[int, ...], max_pixels: int) -> None:
    """Refuse, before decoding, an image of more than ``max_pixels`` pixels or voxels."""
    n = math.prod(int(s) for s in size)
    if n > max_pixels:
        dims = " x ".join(str(int(s)) for s in size)
        raise ImageTooLargeError(
            f"{path} is {dims} = {n:,} pixels, over the limit of {max_pixels:,} pixels "
            "(a decompression bomb or a very large image)",
            hint="downsample or crop it first, or raise max_pixels if the image is genuine",
        )


def finite(array: np.ndarray, path: Source, meta: dict) -> np.ndarray:
    """float32, C-ordered, with NaN/inf replaced by the smallest finite value (noted in meta)."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.size == 0:
        raise DataError(f"{path} holds an empty image {array.shape}", hint="export it again")
    bad = ~np.isfinite(array)
    if not bad.any():
        return array
    if bad.all():
        what = "only NaN values" if np.isnan(array).all() else "no finite values"
        raise DataError(f"{path} holds {what}", hint="re-export the image; it carries no data")
    meta["nan_fraction"] = round(float(bad.mean()), 6)
    if not array.flags.writeable:
        array = array.copy()
    array[bad] = array[~bad].min()
    return array


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """Colour (..., 3 or 4) -> gray (...), BT.601 luma."""
    return np.asarray(rgb[..., :3], dtype=np.float32) @ _LUMA
