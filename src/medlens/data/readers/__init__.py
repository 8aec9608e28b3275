"""Read any medical image file into a float32 array, with errors that name the file.

One entry point, :func:`read_image_file` (and :func:`read_image_bytes` for uploads), over one
reader per format, each in its own module:

- ``pil``: PNG, JPEG and BMP through Pillow (8 or 16 bit; 16-bit values are kept as they are);
- ``tiff``: TIFF through Pillow, and tifffile for what Pillow cannot read (float, 16-bit colour,
  multi-page stacks);
- ``dicom``: DICOM through pydicom: the modality LUT is applied (rescale slope/intercept, e.g.
  Hounsfield units for CT; RT dose grid scaling), MONOCHROME1 is inverted so that higher is
  brighter, PALETTE COLOR becomes RGB, multi-frame files become volumes, and the file's own
  window and its VOI LUT Function are returned alongside (applied by ``window: file``);
- ``nifti``: NIfTI through nibabel: reoriented to RAS, axes as (D, H, W) = (z, y, x), first
  volume of a 4D series;
- ``npy``: ``.npy`` arrays (2D or 3D, numeric).

Arrays are float32, shaped (H, W), (H, W, 3) or (D, H, W); ``spacing`` lists mm per pixel or
voxel in the array's own axis order. Every failure is a :class:`~medlens.errors.DataError`
whose message names the file and what was wrong. A file's format comes from its suffix (a file
without one is taken as DICOM when it carries the ``DICM`` marker); an upload's from its
content, never its name. A new format is one module that builds an
:class:`~medlens.data.readers.base.ImageReader`, and one entry in :data:`READERS`.

Privacy: nothing identifying (names, ids, dates, institutions, UIDs) is copied out of a DICOM
header; ``meta`` holds technical facts only, messages name the file path alone, and pydicom's
warnings and log records (which quote malformed header values) are held back while a DICOM
file is read.

>>> img = read_image_file("ct.dcm")  # doctest: +SKIP
>>> img.array.shape, img.spacing, img.window  # doctest: +SKIP
((512, 512), (0.7, 0.7), (40.0, 400.0))
"""

from __future__ import annotations

from pathlib import Path

from medlens.data.readers.base import (
    DEFAULT_MAX_PIXELS,
    ImageReader,
    InMemoryFile,
    LoadedImage,
    Source,
)
from medlens.data.readers.dicom import DICOM
from medlens.data.readers.nifti import NIFTI
from medlens.data.readers.npy import NPY
from medlens.data.readers.pil import BMP, JPEG, PNG
from medlens.data.readers.tiff import TIFF
from medlens.errors import DataError, UnsupportedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "READERS",
    "UPLOAD_KINDS",
    "ImageReader",
    "InMemoryFile",
    "LoadedImage",
    "Source",
    "image_kind",
    "read_image_bytes",
    "read_image_file",
    "reader_for",
    "sniff_kind",
]

#: Every format medlens reads, in the order messages list them.
READERS: tuple[ImageReader, ...] = (PNG, JPEG, TIFF, BMP, DICOM, NIFTI, NPY)
#: Every suffix :func:`read_image_file` understands (lower case). ``""`` stands for files
#: without a suffix (``IM0001``, as DICOM exports often name them): those are read as DICOM
#: when they carry the ``DICM`` marker, and rejected with a clear error otherwise.
IMAGE_SUFFIXES: frozenset[str] = frozenset({*(s for r in READERS for s in r.suffixes), ""})
# enough for every reader's content test (a gzipped NIfTI header inflates from its first 4 KiB)
_HEAD_BYTES = 4096


def _listing(readers) -> str:
    labels = [r.label for r in readers]
    return ", ".join(labels[:-1]) + " or " + labels[-1]


#: What :func:`read_image_bytes` accepts, for messages.
UPLOAD_KINDS = _listing(r for r in READERS if r.uploads)
_FILE_KINDS = _listing(READERS)


def reader_for(kind: str) -> ImageReader:
    """The reader of a kind (``"png"``, ``"dicom"``, ...), as :func:`image_kind` names them.

    >>> reader_for("nifti").suffixes
    ('.nii', '.nii.gz')
    """
    reader = next((r for r in READERS if r.kind == kind), None)
    if reader is None:
        raise ValueError(f"no reader for {kind!r}; the kinds are {[r.kind for r in READERS]}")
    return reader


def _by_content() -> list[ImageReader]:
    """The readers in the order content is tested: the marks that sit furthest into a file
    first, since the bytes before such a mark are free (a DICOM file's 128-byte preamble may
    itself hold a TIFF header, in dual-personality files); otherwise in list order."""
    return sorted(READERS, key=lambda r: -r.magic_offset)


def image_kind(path: str | Path) -> str | None:
    """The reader for a file by its suffix (``.nii.gz`` is one suffix), or None if unknown.

    A file without a suffix, or with a numeric one (DICOM files are often named by their UID,
    ``1.2.840.113619.2.55.3``), is "dicom" when it carries the DICOM ``DICM`` marker.

    >>> image_kind("scan.nii.gz"), image_kind("xray.PNG"), image_kind("notes.txt")
    ('nifti', 'png', None)
    """
    path = Path(path)
    name = Path(path.name.lower())
    for suffix in ("".join(name.suffixes[-2:]), name.suffix):  # ".nii.gz", then ".gz"
        reader = next((r for r in READERS if r.verify_suffix(suffix)), None)
        if reader is not None:
            return reader.kind
    if name.suffix == "" or name.suffix[1:].isdigit():
        head = _head(path)
        return next((r.kind for r in _by_content() if r.suffixless and r.matches(head)), None)
    return None


def _head(path: Path) -> bytes:
    """The file's first bytes, or none when it cannot be read."""
    try:
        with path.open("rb") as f:
            return f.read(_HEAD_BYTES)
    except OSError:
        return b""


def read_image_file(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode one image file into a float32 :class:`LoadedImage`.

    ``max_pixels`` caps the pixels (voxels for a volume, colour channels not counted) a file
    may decode to; it is checked from the header before any decoding, so a decompression bomb
    costs nothing. Pillow's own bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) also applies to
    PNG, JPEG, BMP and TIFF. Any problem raises :class:`DataError` naming the file.

    >>> img = read_image_file("scan.nii.gz")  # doctest: +SKIP
    >>> img.array.shape, img.spacing  # doctest: +SKIP
    ((24, 96, 128), (2.2, 2.0, 2.0))
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist", hint="check the path and the file name")
    if not path.is_file():
        raise DataError(f"{path} is not a file", hint="give the path of an image file")
    try:
        empty = path.stat().st_size == 0
    except OSError as exc:
        raise DataError(
            f"{path} cannot be read ({exc.strerror})", hint="check its permissions"
        ) from None
    if empty:
        raise DataError(f"{path} is an empty file", hint="copy or export it again")
    kind = image_kind(path)
    if kind is None:
        suffix = path.suffix.lower()
        what = (
            "has no suffix and is not a DICOM file (no 'DICM' marker)"
            if suffix == "" or suffix[1:].isdigit()
            else f"has a suffix medlens does not read ({suffix})"
        )
        raise DataError(f"{path} {what}", hint=f"give {_FILE_KINDS} files")
    return reader_for(kind).read(path, max_pixels)


def sniff_kind(data: bytes) -> str | None:
    """The image kind by content (never by name), or None: png, jpeg, tiff, bmp, dicom, nifti.

    >>> sniff_kind(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(8)), sniff_kind(b"hello")
    ('png', None)
    """
    return next((r.kind for r in _by_content() if r.uploads and r.matches(data)), None)


def read_image_bytes(
    data: bytes, name: str = "upload", *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """Decode an image held in memory (an upload); its kind is read from the content.

    Like :func:`read_image_file` (same limits, same :class:`DataError`\\s, named ``name``) for
    PNG, JPEG, TIFF, BMP, DICOM and NIfTI (plain or gzipped); nothing touches the disk.

    >>> img = read_image_bytes(Path("xray.png").read_bytes())  # doctest: +SKIP
    """
    if not data:
        raise DataError(f"{name} is empty", hint="send the image file's contents")
    kind = sniff_kind(data)
    if kind is None:
        raise UnsupportedImageError(
            f"{name} is not an image medlens reads (its content matches none of {UPLOAD_KINDS})",
            hint=f"send a {UPLOAD_KINDS} file",
        )
    return reader_for(kind).read(InMemoryFile(data, name), max_pixels)
