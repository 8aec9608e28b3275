"""Read any medical image file into a float32 array, with errors that name the file.

One entry point, :func:`read_image_file`, for

- PNG, JPEG, BMP and TIFF through Pillow (8 or 16 bit; 16-bit values are kept as they are),
  with tifffile for the TIFFs Pillow cannot read (float, 16-bit colour, multi-page stacks);
- DICOM through pydicom: the modality LUT is applied (rescale slope/intercept, e.g. Hounsfield
  units for CT; RT dose grid scaling), MONOCHROME1 is inverted so that higher is brighter,
  PALETTE COLOR becomes RGB, multi-frame files become volumes, and the file's own window is
  returned alongside (never applied);
- NIfTI through nibabel: reoriented to RAS, axes as (D, H, W) = (z, y, x), first volume of a 4D
  series;
- ``.npy`` arrays (2D or 3D, numeric).

Arrays are float32, shaped (H, W), (H, W, 3) or (D, H, W); ``spacing`` lists mm per pixel or
voxel in the array's own axis order. Every failure is a :class:`~medlens.errors.DataError`
whose message names the file and what was wrong.

Privacy: nothing identifying (names, ids, dates, institutions, UIDs) is copied out of a DICOM
header; ``meta`` holds technical facts only, messages name the file path alone, and pydicom's
warnings and log records (which quote malformed header values) are held back while a DICOM
file is read.

>>> img = read_image_file("ct.dcm")  # doctest: +SKIP
>>> img.array.shape, img.spacing, img.window  # doctest: +SKIP
((512, 512), (0.7, 0.7), (40.0, 400.0))
"""

from __future__ import annotations

import contextvars
import io
import logging
import math
import re
import struct
import tokenize
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import DataError, ImageTooLargeError, UnsupportedImageError

_PIL_KINDS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
}
_KINDS = {
    **_PIL_KINDS,
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".npy": "npy",
}
#: Every suffix :func:`read_image_file` understands (lower case). ``""`` stands for files
#: without a suffix (``IM0001``, as DICOM exports often name them): those are read as DICOM
#: when they carry the ``DICM`` marker, and rejected with a clear error otherwise.
IMAGE_SUFFIXES: frozenset[str] = frozenset({*_KINDS, ""})
DEFAULT_MAX_PIXELS = 16384 * 16384

# What the parsers (Pillow, tifffile, pydicom, nibabel, numpy) raise for a broken or hostile
# file, beyond their own exception types; fuzzing the readers turned up each of these.
_READ_ERRORS = (OSError, EOFError, ValueError, SyntaxError, zlib.error, struct.error)
_PARSE_ERRORS = (
    *_READ_ERRORS,
    ArithmeticError,  # ZeroDivisionError, OverflowError from nonsense header fields
    TypeError,
    IndexError,
    KeyError,
    AttributeError,  # pydicom: a required element missing
    RuntimeError,  # pydicom: no decoder plugin for the transfer syntax
    NotImplementedError,
)
# pydicom logs (besides warning) about malformed values, quoting them: in a corrupt file such a
# "value" can run over names and dates. While medlens reads a DICOM file these records are held
# back (counted in meta["header_warnings"]) instead of reaching the application's logs.
_PYDICOM_HELD: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "medlens_pydicom_held", default=None
)
# A Code String (Modality, PhotometricInterpretation): anything else is not copied into meta.
_CODE_STRING = re.compile(r"[A-Z0-9_ ]{1,16}")
_DICOM_HINT = "check that the file is a complete DICOM file; copy or export it again"
# ITU-R BT.601 luma, to turn colour volumes (ultrasound cine loops) into gray volumes.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(eq=False, repr=False)
class LoadedImage:
    """One decoded image, as float32.

    ``array`` is (H, W) gray, (H, W, 3) colour, or (D, H, W) for a volume; ``spacing`` is mm
    per pixel/voxel in the same axis order ((row, col) or (slice, row, col)) when the file
    says; ``window`` is the (center, width) the file suggests (DICOM only), in the units of
    ``array``; ``meta`` holds non-identifying technical facts (modality, photometric, ...).

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

    def __repr__(self) -> str:  # the shape, not the pixel values
        return (
            f"LoadedImage(kind={self.kind!r}, shape={tuple(self.array.shape)}, "
            f"spacing={self.spacing}, window={self.window}, meta={self.meta})"
        )


def image_kind(path: str | Path) -> str | None:
    """The reader for a file by its suffix (``.nii.gz`` is one suffix), or None if unknown.

    A file without a suffix, or with a numeric one (DICOM files are often named by their UID,
    ``1.2.840.113619.2.55.3``), is "dicom" when it carries the DICOM ``DICM`` marker.

    >>> image_kind("scan.nii.gz"), image_kind("xray.PNG"), image_kind("notes.txt")
    ('nifti', 'png', None)
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return "nifti"
    suffix = Path(name).suffix
    if suffix in _KINDS:
        return _KINDS[suffix]
    if suffix == "" or suffix[1:].isdigit():
        return "dicom" if _has_dicom_marker(path) else None
    return None


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
        raise DataError(
            f"{path} {what}",
            hint="give PNG, JPEG, TIFF, BMP, DICOM (.dcm), NIfTI (.nii, .nii.gz) or .npy files",
        )
    return _decode(path, kind, max_pixels)


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

# Leading bytes of each kind an upload may be; DICOM (at 128) and NIfTI are checked apart.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"BM", "bmp"),
)
#: What :func:`read_image_bytes` accepts, for messages.
UPLOAD_KINDS = "PNG, JPEG, TIFF, BMP, DICOM or NIfTI (.nii, .nii.gz)"


def sniff_kind(data: bytes) -> str | None:
    r"""The image kind by content (never by name), or None: png, jpeg, tiff, bmp, dicom, nifti.

    >>> sniff_kind(b"\x89PNG\r\n\x1a\n" + bytes(8)), sniff_kind(b"hello")
    ('png', None)
    """
    if data[128:132] == b"DICM":  # first: a DICOM preamble may itself look like a TIFF
        return "dicom"
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    head = data[:352]
    if data[:2] == b"\x1f\x8b":  # gzip: a .nii.gz when the first 352 bytes inflate to NIfTI
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[:4096], 352)
        except zlib.error:
            return None
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] == b"n+2\x00":
        return "nifti"
    return None


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
    return _decode(InMemoryFile(data, name), kind, max_pixels)


def _decode(source: Source, kind: str, max_pixels: int) -> LoadedImage:
    """Decode with the reader for ``kind``."""
    if kind == "dicom":
        return _read_dicom(source, max_pixels)
    if kind == "nifti":
        return _read_nifti(source, max_pixels)
    if kind == "npy":
        return _read_npy(source, max_pixels)
    arr, meta = _read_pil(source, kind, max_pixels)
    return LoadedImage(_finite(arr, source, meta), None, kind, None, meta)


# --- shared helpers ---------------------------------------------------------------------------


def _has_dicom_marker(path: Path) -> bool:
    """True when the file has the DICOM preamble: 128 bytes, then ``DICM``."""
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _check_pixels(path: Source, size: tuple[int, ...], max_pixels: int) -> None:
    """Refuse, before decoding, an image of more than ``max_pixels`` pixels or voxels."""
    n = math.prod(int(s) for s in size)
    if n > max_pixels:
        dims = " x ".join(str(int(s)) for s in size)
        raise ImageTooLargeError(
            f"{path} is {dims} = {n:,} pixels, over the limit of {max_pixels:,} pixels "
            "(a decompression bomb or a very large image)",
            hint="downsample or crop it first, or raise max_pixels if the image is genuine",
        )


def _finite(array: np.ndarray, path: Source, meta: dict) -> np.ndarray:
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


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb[..., :3], dtype=np.float32) @ _LUMA


# --- Pillow and tifffile ----------------------------------------------------------------------


def _read_pil(path: Source, kind: str, max_pixels: int) -> tuple[np.ndarray, dict]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    label = kind.upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # parses the header only; decoding comes later
                _check_pixels(path, (img.height, img.width), max_pixels)
                if kind == "tiff" and (getattr(img, "n_frames", 1) > 1 or _pil_narrows(img)):
                    img = None  # a page stack or 16-bit colour: tifffile keeps it whole
                else:
                    meta: dict[str, Any] = {"mode": img.mode, "format": img.format}
                    if _pil_narrows(img):  # 16-bit colour PNG: Pillow keeps the high byte
                        meta["reduced_to_8_bit"] = True
                    arr = _pil_pixels(img, ImageOps, meta)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            f"{path} is too large to decode safely: {exc}",
            hint="downsample it first, or raise PIL.Image.MAX_IMAGE_PIXELS if it is genuine",
        ) from exc
    except (UnidentifiedImageError, *_PARSE_ERRORS) as exc:
        if kind == "tiff":  # float64, 16-bit colour, odd compressions: tifffile may manage
            return _read_tifffile(path, max_pixels, first=exc)
        raise DataError(
            f"{path} is not a readable {label} image ({type(exc).__name__}: {exc})",
            hint=f"check that the file is complete and really a {label}; export it again",
        ) from exc
    if img is None:
        return _read_tifffile(path, max_pixels)
    return arr, meta


def _pil_narrows(img) -> bool:
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


def _pil_pixels(img, image_ops, meta: dict) -> np.ndarray:
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


def _read_tifffile(
    path: Source, max_pixels: int, first: BaseException | None = None
) -> tuple[np.ndarray, dict]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
            _check_pixels(
                path, tuple(s for s, a in zip(shape, axes, strict=True) if a != "S"), max_pixels
            )
            arr = series.asarray()
    except DataError:
        raise
    except _PARSE_ERRORS as exc:
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
        arr = _to_gray(arr)
        meta["converted_to_gray"] = True
    if spatial == 3:
        meta["n_frames"] = int(arr.shape[0])
    return np.asarray(arr, dtype=np.float32), meta


# --- DICOM ------------------------------------------------------------------------------------


class _HoldPydicomLog(logging.Filter):
    """Holds back pydicom's log records while medlens reads a DICOM file (see _PYDICOM_HELD)."""

    def filter(self, record: logging.LogRecord) -> bool:
        held = _PYDICOM_HELD.get()
        if held is None:
            return True
        held.append(record.levelno)
        return False


def _hold_pydicom_log() -> None:
    logger = logging.getLogger("pydicom")
    if not any(isinstance(f, _HoldPydicomLog) for f in logger.filters):
        logger.addFilter(_HoldPydicomLog())


def _read_dicom(path: Source, max_pixels: int) -> LoadedImage:
    _hold_pydicom_log()
    held: list[int] = []
    token = _PYDICOM_HELD.set(held)
    try:
        img = _read_dicom_quietly(path, max_pixels)
    finally:
        _PYDICOM_HELD.reset(token)
    if held:
        img.meta["header_warnings"] = len(held)
    return img


def _read_dicom_quietly(path: Source, max_pixels: int) -> LoadedImage:
    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError

    # pydicom's warnings may quote header values (names, dates): keep them out of logs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            raise DataError(
                f"{path} is not a DICOM file (no 'DICM' marker after the 128-byte preamble)",
                hint="check that it is a DICOM file; one saved without the preamble must be "
                "re-saved with a DICOM tool",
            ) from None
        except (BytesLengthException, *_PARSE_ERRORS) as exc:
            # the type only: a parser message could quote header bytes
            raise DataError(
                f"{path} is not a readable DICOM file ({type(exc).__name__})", hint=_DICOM_HINT
            ) from None
        try:  # values are parsed lazily, on first access: a corrupt element fails here
            return _decode_dicom(ds, path, max_pixels)
        except DataError:
            raise
        except (BytesLengthException, *_PARSE_ERRORS) as exc:
            raise DataError(
                f"{path} has a corrupt or inconsistent DICOM header ({type(exc).__name__})",
                hint=_DICOM_HINT,
            ) from None


def _decode_dicom(ds, path: Source, max_pixels: int) -> LoadedImage:
    from pydicom.pixels import apply_color_lut

    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataError(
            f"{path} has no pixel data",
            hint="it is a report, structured document or other non-image DICOM; "
            "leave it out of the image list",
        )
    frames = _dicom_int(ds, "NumberOfFrames", 1)
    rows, cols = _dicom_int(ds, "Rows", 0), _dicom_int(ds, "Columns", 0)
    _check_pixels(path, (frames, rows, cols) if frames > 1 else (rows, cols), max_pixels)
    raw = _dicom_pixels(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    meta = _dicom_meta(ds, photometric)
    if photometric == "PALETTE COLOR":
        arr = np.asarray(apply_color_lut(raw, ds), dtype=np.float32)
        meta["rescaled"] = False
    else:
        arr, meta["rescaled"] = _modality_values(raw, ds, frames)
    window = _dicom_window(ds)
    samples = 3 if photometric == "PALETTE COLOR" else _dicom_int(ds, "SamplesPerPixel", 1)
    colour = samples == 3 and arr.shape[-1] == 3
    if colour and arr.ndim == 4:  # a colour cine loop (ultrasound): gray volume
        arr, colour = _to_gray(arr), False
        meta["converted_to_gray"] = True
    if photometric == "MONOCHROME1":  # low values are bright: flip so higher = brighter
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = hi + lo - arr
        meta["inverted"] = True
        if window is not None:  # the same tissue range, mirrored the same way
            window = (hi + lo - window[0], window[1])
    volume = arr.ndim == 3 and not colour
    meta["n_frames"] = int(arr.shape[0]) if volume else 1
    spacing = _dicom_spacing(ds, volume, meta)
    voi = None if colour else _voi_lut(ds, arr, meta)
    return LoadedImage(_finite(arr, path, meta), spacing, "dicom", window, meta, voi)


def _voi_lut(ds, values: np.ndarray, meta: dict) -> np.ndarray | None:
    """The file's non-linear VOI LUT (VOI LUT Sequence) applied to the modality values.

    Linear windows are returned as ``window`` instead; only a lookup table lands here.
    ``values`` are already inverted for MONOCHROME1, so the table is read on the original
    values and its output inverted the same way.
    """
    from pydicom.pixels import apply_voi_lut

    if "VOILUTSequence" not in ds:
        return None
    try:
        item = ds.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2])
        original = values
        if meta.get("inverted"):
            lo, hi = float(values.min()), float(values.max())
            original = hi + lo - values
        mapped = apply_voi_lut(np.rint(original).astype(np.int64), ds, prefer_lut=True)
        out = np.clip(np.asarray(mapped, np.float32) / np.float32(2**bits - 1), 0.0, 1.0)
    except Exception as exc:  # a malformed table: fall back to the window or normalisation
        meta["voi_lut_error"] = type(exc).__name__
        return None
    meta["voi_lut"] = True
    return 1.0 - out if meta.get("inverted") else out


def _dicom_pixels(ds, path: Source) -> np.ndarray:
    """``ds.pixel_array``, with decoder problems turned into DataError."""
    from PIL import Image

    try:
        return ds.pixel_array
    except (*_PARSE_ERRORS, Image.DecompressionBombError) as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        why = " ".join(str(exc).split())[:300]
        why = f"{type(exc).__name__}: {why}" if why else type(exc).__name__
        try:
            compressed = ts is not None and ts.is_compressed
        except ValueError:  # not a transfer syntax UID at all
            compressed = False
        if compressed:
            raise DataError(
                f"{path}: its pixel data ({ts.name}, transfer syntax {ts}) could not be "
                f"decoded ({why})",
                hint="install a decoder plugin: pip install pylibjpeg pylibjpeg-libjpeg "
                "pylibjpeg-openjpeg (or python-gdcm); if it is installed, the file is corrupt",
            ) from None
        raise DataError(
            f"{path}: its pixel data is incomplete or does not match its header ({why})",
            hint=_DICOM_HINT,
        ) from None


def _modality_values(raw: np.ndarray, ds, frames: int) -> tuple[np.ndarray, bool]:
    """Stored values -> modality values (HU for CT, Gy for RT dose), and whether any applied.

    Handles the classic header (Modality LUT or RescaleSlope/Intercept), the enhanced
    multi-frame functional groups (shared or per frame) and RTDOSE's DoseGridScaling.
    """
    from pydicom.pixels import apply_modality_lut

    if ds.get("ModalityLUTSequence") or ("RescaleSlope" in ds and "RescaleIntercept" in ds):
        return np.asarray(apply_modality_lut(raw, ds), dtype=np.float32), True
    transforms = _frame_transforms(ds, frames)
    if any(t is not None for t in transforms):
        if frames > 1 and raw.shape[0] == frames:  # each frame its own slope and intercept
            frames = [
                apply_modality_lut(f, t) if t is not None else f
                for f, t in zip(raw, transforms, strict=True)
            ]
            return np.stack([np.asarray(f, dtype=np.float32) for f in frames]), True
        return np.asarray(apply_modality_lut(raw, transforms[0]), dtype=np.float32), True
    scaling = _dicom_float(ds, "DoseGridScaling")
    if str(ds.get("Modality", "")) == "RTDOSE" and scaling:
        return raw.astype(np.float32) * np.float32(scaling), True
    return np.asarray(raw, dtype=np.float32), False


def _frame_transforms(ds, n_frames: int) -> list:
    """Per-frame PixelValueTransformation items of an enhanced multi-frame file (or Nones)."""

    key = "PixelValueTransformationSequence"

    def usable(t):
        return t if t is not None and "RescaleSlope" in t and "RescaleIntercept" in t else None

    shared = usable(_first_item(_first_item(ds, "SharedFunctionalGroupsSequence"), key))
    per = ds.get("PerFrameFunctionalGroupsSequence") or []
    return [
        (usable(_first_item(per[i], key)) if i < len(per) else None) or shared
        for i in range(n_frames)
    ]


def _dicom_meta(ds, photometric: str) -> dict[str, Any]:
    """Technical, non-identifying facts about a DICOM file."""
    meta: dict[str, Any] = {}
    modality = str(ds.get("Modality", "") or "").strip()
    if re.fullmatch(r"[A-Z]{1,16}", modality):  # modality codes are letters: CT, MR, RTDOSE
        meta["modality"] = modality
    if _CODE_STRING.fullmatch(photometric):
        meta["photometric"] = photometric
    for key, keyword in (("bits_stored", "BitsStored"), ("samples_per_pixel", "SamplesPerPixel")):
        value = _dicom_int(ds, keyword, 0)
        if value:
            meta[key] = value
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts:
        meta["transfer_syntax"] = str(ts.name)
    return meta


def _dicom_int(ds, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _dicom_float(ds, keyword: str) -> float | None:
    """The first value of a numeric element, or None when missing or malformed."""
    try:
        value = ds.get(keyword) if ds is not None else None
        if value is None or value == "":
            return None
        if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
            value = value[0] if len(value) else None
        out = float(value) if value is not None else None
    except (TypeError, ValueError, IndexError):
        return None
    return out if out is not None and math.isfinite(out) else None


def _dicom_floats(ds, keyword: str) -> tuple[float, ...] | None:
    try:
        value = ds.get(keyword) if ds is not None else None
        if value is None or value == "":
            return None
        values = tuple(float(v) for v in (value if hasattr(value, "__len__") else [value]))
    except (TypeError, ValueError):
        return None
    return values if values and all(math.isfinite(v) for v in values) else None


def _first_item(ds, keyword: str):
    seq = ds.get(keyword) if ds is not None else None
    return seq[0] if seq else None


def _dicom_window(ds) -> tuple[float, float] | None:
    """(center, width) from WindowCenter/Width (first of several), or the enhanced VOI group."""
    voi = _first_item(_first_item(ds, "SharedFunctionalGroupsSequence"), "FrameVOILUTSequence")
    for source in (ds, voi):
        center, width = _dicom_float(source, "WindowCenter"), _dicom_float(source, "WindowWidth")
        if center is not None and width is not None and width > 0:
            return center, width
    return None


def _dicom_spacing(ds, volume: bool, meta: dict) -> tuple[float, ...] | None:
    """(row, col) mm, or (slice, row, col) for a multi-frame volume, when the file says."""
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    measures = _first_item(shared, "PixelMeasuresSequence")
    pixel = _dicom_floats(ds, "PixelSpacing") or _dicom_floats(measures, "PixelSpacing")
    if pixel is None and _dicom_floats(ds, "ImagerPixelSpacing"):
        pixel = _dicom_floats(ds, "ImagerPixelSpacing")  # projection X-ray: at the detector
        meta["spacing_source"] = "ImagerPixelSpacing"
    if pixel is None or len(pixel) != 2 or min(pixel) <= 0:
        return None
    row, col = pixel
    if not volume:
        return row, col
    depth = None
    for source in (ds, measures):
        depth = depth or _positive(_dicom_float(source, "SpacingBetweenSlices"))
    offsets = _dicom_floats(ds, "GridFrameOffsetVector")  # RT dose: z of each frame
    if depth is None and offsets and len(offsets) > 1:
        steps = np.abs(np.diff(offsets))
        if steps.max() - steps.min() <= 1e-3 * max(steps.max(), 1e-9):
            depth = _positive(float(steps.mean()))
    for source in (ds, measures):
        depth = depth or _positive(_dicom_float(source, "SliceThickness"))
    if depth is None:
        meta["pixel_spacing"] = [row, col]  # in-plane only: the slice spacing is unknown
        return None
    return depth, row, col


def _positive(value: float | None) -> float | None:
    return abs(value) if value else None


# --- NIfTI and .npy ---------------------------------------------------------------------------


def _read_nifti(path: Source, max_pixels: int) -> LoadedImage:
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
        *_PARSE_ERRORS,
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
    _check_pixels(path, shape[:3], max_pixels)
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
    return LoadedImage(_finite(data, path, meta), spacing, "nifti", None, meta)


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


def _read_npy(path: Path, max_pixels: int) -> LoadedImage:
    with path.open("rb") as f:
        magic = f.read(6)
    if magic.startswith(b"PK"):  # a zip: an .npz archive named .npy
        raise DataError(
            f"{path} is an .npz archive, not a .npy array",
            hint="rename it to .npz or save one array with numpy.save",
        )
    if magic != b"\x93NUMPY":
        raise DataError(
            f"{path} is not a .npy array file (no NUMPY header)",
            hint="save the array with numpy.save(path, array)",
        )
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)  # the header first, no decoding
    except (*_PARSE_ERRORS, tokenize.TokenError) as exc:
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
    _check_pixels(path, arr.shape[:2] if colour else arr.shape, max_pixels)
    meta: dict[str, Any] = {"dtype": str(arr.dtype)}
    try:
        data = np.array(arr, dtype=np.float32)
    except (*_READ_ERRORS,) as exc:
        raise DataError(
            f"{path} is truncated ({type(exc).__name__})", hint="save it again"
        ) from exc
    return LoadedImage(_finite(data, path, meta), None, "npy", None, meta)
