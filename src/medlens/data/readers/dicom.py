"""DICOM through pydicom.

The modality LUT is applied (rescale slope/intercept, e.g. Hounsfield units for CT; RT dose grid
scaling; the enhanced multi-frame functional groups), MONOCHROME1 is inverted so that higher is
brighter, PALETTE COLOR becomes RGB, multi-frame files become volumes, and the file's own window
(center, width) and its VOI LUT Function (LINEAR, LINEAR_EXACT, SIGMOID) are returned alongside,
for :func:`medlens.data.preprocess.preprocess` to apply with ``window: file``. A VOI LUT Sequence
is applied here, into ``voi``.

Privacy: nothing identifying (names, ids, dates, institutions, UIDs) is copied out of the header;
``meta`` holds technical facts only, messages name the file path alone, and pydicom's warnings
and log records (which quote malformed header values) are held back while a file is read.
"""

from __future__ import annotations

import contextvars
import logging
import math
import re
import warnings
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
from medlens.errors import DataError

#: The marker after the 128-byte preamble.
MAGIC, MAGIC_OFFSET = b"DICM", 128
# pydicom logs (besides warning) about malformed values, quoting them: in a corrupt file such a
# "value" can run over names and dates. While medlens reads a DICOM file these records are held
# back (counted in meta["header_warnings"]) instead of reaching the application's logs.
_PYDICOM_HELD: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "medlens_pydicom_held", default=None
)
# A Code String (Modality, PhotometricInterpretation): anything else is not copied into meta.
_CODE_STRING = re.compile(r"[A-Z0-9_ ]{1,16}")
_DICOM_HINT = "check that the file is a complete DICOM file; copy or export it again"
#: The VOI LUT Functions of DICOM PS3.3 C.11.2.1.3 (LINEAR when the element is absent).
WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


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


def read(path: Source, max_pixels: int) -> LoadedImage:
    """Decode a DICOM file, pydicom's log records held back (counted in meta)."""
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
        except (BytesLengthException, *PARSE_ERRORS) as exc:
            # the type only: a parser message could quote header bytes
            raise DataError(
                f"{path} is not a readable DICOM file ({type(exc).__name__})", hint=_DICOM_HINT
            ) from None
        try:  # values are parsed lazily, on first access: a corrupt element fails here
            return _decode_dicom(ds, path, max_pixels)
        except DataError:
            raise
        except (BytesLengthException, *PARSE_ERRORS) as exc:
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
    check_pixels(path, (frames, rows, cols) if frames > 1 else (rows, cols), max_pixels)
    raw = _dicom_pixels(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    meta = _dicom_meta(ds, photometric)
    if photometric == "PALETTE COLOR":
        arr = np.asarray(apply_color_lut(raw, ds), dtype=np.float32)
        meta["rescaled"] = False
    else:
        arr, meta["rescaled"] = _modality_values(raw, ds, frames)
    window, function = _dicom_window(ds, meta)
    samples = 3 if photometric == "PALETTE COLOR" else _dicom_int(ds, "SamplesPerPixel", 1)
    colour = samples == 3 and arr.shape[-1] == 3
    if colour and arr.ndim == 4:  # a colour cine loop (ultrasound): gray volume
        arr, colour = to_gray(arr), False
        meta["converted_to_gray"] = True
    if photometric == "MONOCHROME1":  # low values are bright: flip so higher = brighter
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = hi + lo - arr
        meta["inverted"] = True
        if window is not None:  # the same tissue range, mirrored the same way (see preprocess)
            window = (hi + lo - window[0], window[1])
    volume = arr.ndim == 3 and not colour
    meta["n_frames"] = int(arr.shape[0]) if volume else 1
    spacing = _dicom_spacing(ds, volume, meta)
    voi = None if colour else _voi_lut(ds, arr, meta)
    arr = finite(arr, path, meta)
    return LoadedImage(arr, spacing, "dicom", window, meta, voi, window_function=function)


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
    except (*PARSE_ERRORS, Image.DecompressionBombError) as exc:
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


def _dicom_window(ds, meta: dict) -> tuple[tuple[float, float] | None, str]:
    """(center, width) from WindowCenter/Width (first of several), or the enhanced VOI group,
    and the VOI LUT Function stated beside it.

    A function outside DICOM's three is read as LINEAR (noted in meta, its value not copied).
    LINEAR needs a width of at least 1 (PS3.3 C.11.2.1.2.1); a narrower one, as float-valued
    images can have, is applied as LINEAR_EXACT, the same ramp without the integer offsets.
    """
    voi = _first_item(_first_item(ds, "SharedFunctionalGroupsSequence"), "FrameVOILUTSequence")
    for source in (ds, voi):
        center, width = _dicom_float(source, "WindowCenter"), _dicom_float(source, "WindowWidth")
        if center is None or width is None or not width > 0:
            continue
        function = str(source.get("VOILUTFunction", "") or "LINEAR").strip().upper()
        if function not in WINDOW_FUNCTIONS:
            meta["window_function_unknown"] = True
            function = "LINEAR"
        if function == "LINEAR" and width < 1:
            meta["window_function_changed"] = "LINEAR_EXACT: LINEAR needs a width of 1 or more"
            function = "LINEAR_EXACT"
        return (center, width), function
    return None, "LINEAR"


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


DICOM = ImageReader(
    "dicom",
    "DICOM (.dcm)",
    (".dcm", ".dicom"),
    read,
    magic=(MAGIC,),
    magic_offset=MAGIC_OFFSET,
    suffixless=True,
)
