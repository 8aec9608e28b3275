"""NIfTI-1 and -2 through nibabel, plain or gzipped: reoriented to RAS, axes as (D, H, W) =
(z, y, x), the first volume of a 4D series; a single slice becomes a 2D image."""

from __future__ import annotations

import zlib
from pathlib import Path
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
from medlens.errors import DataError

#: NIfTI-1's magic at byte 344 (single file, header and image pair); NIfTI-2's at byte 4.
MAGIC_1, MAGIC_2 = (b"n+1\x00", b"ni1\x00"), b"n+2\x00"
_HEADER_BYTES = 352
_GZIP = b"\x1f\x8b"


def sniff(data: bytes) -> bool:
    """True for a NIfTI header, or a gzip stream whose first 352 bytes inflate to one.

    >>> sniff(bytes(344) + b"n+1\\x00" + bytes(4)), sniff(b"\\x1f\\x8b not gzip")
    (True, False)
    """
    head = data[:_HEADER_BYTES]
    if data[:2] == _GZIP:
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[:4096], _HEADER_BYTES)
        except zlib.error:
            return False
    return head[344:348] in MAGIC_1 or head[4:8] == MAGIC_2


def read(path: Source, max_pixels: int) -> LoadedImage:
    """Decode a NIfTI file (from disk or memory), the size checked from the header first."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.orientations import OrientationError
    from nibabel.spatialimages import (
        HeaderDataError,
        HeaderTypeError,
        ImageDataError,
        SpatialImage,
    )

    errors = (
        ImageFileError,
        HeaderDataError,
        HeaderTypeError,
        ImageDataError,
        OrientationError,
        *PARSE_ERRORS,
    )
    hint = "check that the file is complete; copy or export it again"
    try:
        img = _nifti_image(path)
    except errors as exc:
        raise DataError(
            f"{path} is not a readable NIfTI file ({type(exc).__name__}: {exc})", hint=hint
        ) from exc
    if not isinstance(img, SpatialImage):
        raise DataError(
            f"{path} is a {type(img).__name__}, not an image volume",
            hint="give a NIfTI image (CIFTI and other surface files are not images)",
        )
    shape = tuple(int(s) for s in img.shape)
    meta: dict[str, Any] = {}
    if len(shape) not in (2, 3, 4):
        raise DataError(
            f"{path} has {len(shape)} dimensions {shape}", hint="give a 2D, 3D or 4D NIfTI image"
        )
    check_pixels(path, shape[:3], max_pixels)
    try:
        meta["orientation"] = "".join(c or "?" for c in nib.aff2axcodes(img.affine))
        if len(shape) == 4:  # a series (fMRI, DWI): its first volume only
            meta["n_volumes"] = shape[3]
            img = img.__class__(np.asanyarray(img.dataobj[..., 0]), img.affine, img.header)
        img = nib.as_closest_canonical(img)  # RAS: the same orientation for every file
        data = img.get_fdata(dtype=np.float32)
        zooms = tuple(float(z) for z in img.header.get_zooms()[: data.ndim])
    except errors as exc:
        raise DataError(
            f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})", hint=hint
        ) from exc
    # nibabel's (x, y, z) -> (z, y, x): axis 0 walks through the slices, rows run along y.
    order = tuple(reversed(range(data.ndim)))
    data, spacing = np.transpose(data, order), tuple(zooms[i] for i in order)
    if data.ndim == 3 and data.shape.count(1) == 1:  # a single slice: a 2D image
        keep = [i for i, s in enumerate(data.shape) if s != 1]
        data, spacing = data.reshape([data.shape[i] for i in keep]), tuple(spacing[i] for i in keep)
    if any(s <= 0 for s in spacing):
        spacing = None
    return LoadedImage(finite(data, path, meta), spacing, "nifti", None, meta)


def _nifti_image(source: Source):
    """``nib.load`` for a path; for a file in memory, NIfTI-1 or -2, plain or gzipped (lazily:
    the pixels are inflated only when read, after the size check)."""
    import gzip

    import nibabel as nib

    if isinstance(source, Path):
        return nib.load(source)
    gzipped = source.getvalue()[:2] == b"\x1f\x8b"
    fileobj = gzip.GzipFile(fileobj=source) if gzipped else source
    sizeof_hdr = fileobj.read(4)
    fileobj.seek(0)
    two = 540 in (int.from_bytes(sizeof_hdr, "little"), int.from_bytes(sizeof_hdr, "big"))
    holder = nib.FileHolder(fileobj=fileobj)
    cls = nib.Nifti2Image if two else nib.Nifti1Image
    return cls.from_file_map({"header": holder, "image": holder})


NIFTI = ImageReader("nifti", "NIfTI (.nii, .nii.gz)", (".nii", ".nii.gz"), read, sniff=sniff)
