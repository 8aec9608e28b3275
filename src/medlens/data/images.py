"""New cases (files or uploads) as model inputs: the one path from a decoded image to what a
trained model takes, shared by ``medlens predict``, ``medlens explain`` and ``medlens serve``.

>>> x = model_input(read_image_file("scan.dcm"), plan, (28, 28))  # doctest: +SKIP
>>> x.shape, x.dtype  # doctest: +SKIP
((1, 28, 28), dtype('uint8'))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medlens.config import Plan
from medlens.data.preprocess import PreprocessConfig, preprocess_image
from medlens.data.readers import LoadedImage, image_kind, read_image_file
from medlens.errors import DataError

# Pillow modes that hold more than 8 bits per sample (16-bit, 32-bit int, float).
_WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "tifffile")


def is_volume(img: LoadedImage) -> bool:
    """True for a (D, H, W) volume; (H, W, 3) and (H, W, 4) are colour images."""
    a = img.array
    return a.ndim == 3 and a.shape[-1] not in (3, 4)


def _eight_bit(img: LoadedImage) -> bool:
    """True when the values are 8-bit grey levels (0..255) to keep as they are."""
    if img.kind in ("dicom", "nifti"):
        return False
    if img.kind == "npy":
        return img.meta.get("dtype") == "uint8"
    return img.meta.get("mode") not in _WIDE_MODES


def input_config(recipe: Plan, shape: tuple[int, ...], img: LoadedImage) -> PreprocessConfig:
    """How ``img`` becomes a model input for a run.

    The run's own preprocessing when it has one (folders, manifests, DICOM, NIfTI sources).
    MedMNIST runs have none (the images came ready): a new file is centre-cropped to the aspect
    of ``shape`` and resized as MedMNIST's were; 8-bit files keep their grey levels, DICOM uses
    its own window, anything else is percentile-normalised.
    """
    if recipe.data.preprocess is not None:
        return recipe.data.preprocess
    return PreprocessConfig(
        size=list(shape),
        resize="crop",
        channels=recipe.data.in_chans,
        window="file" if img.kind == "dicom" else None,
        normalize="none" if _eight_bit(img) else "percentile",
    )


def check_dims(img: LoadedImage, spatial_dims: int, name: str) -> None:
    """Refuse a volume for a 2D model and a 2D image for a 3D model, saying which it was."""
    volume = is_volume(img)
    if volume and spatial_dims == 2:
        raise DataError(
            f"{name} is a 3D volume of shape {tuple(img.array.shape)}; this model takes 2D images",
            hint="send one 2D image (a PNG, JPEG or single-frame DICOM), "
            "or use a run trained on volumes",
        )
    if not volume and spatial_dims == 3:
        raise DataError(
            f"{name} is a 2D image of shape {tuple(img.array.shape)}; this model takes 3D volumes",
            hint="send a volume (NIfTI, multi-frame DICOM or a (D, H, W) .npy array)",
        )


def model_input(
    img: LoadedImage, recipe: Plan, shape: tuple[int, ...], name: str = "the image"
) -> np.ndarray:
    """A decoded image as the model's uint8 input, (C, H, W) or (C, D, H, W)."""
    check_dims(img, recipe.data.spatial_dims, name)
    cfg = input_config(recipe, shape, img)
    return preprocess_image(img, cfg)


def read_inputs(files: list[Path], recipe: Plan, shape: tuple[int, ...]) -> np.ndarray:
    """Image files as a stack of model inputs (see :func:`model_input`)."""
    return read_cases(files, recipe, shape)[0]


def read_cases(
    files: list[Path], recipe: Plan, shape: tuple[int, ...]
) -> tuple[np.ndarray, list[str | None]]:
    """Image files as a stack of model inputs, and for each file why its header says it is
    not what the run was trained on (:func:`modality_conflict`), or None."""
    inputs, conflicts = [], []
    for f in files:
        img = read_image_file(f)
        inputs.append(model_input(img, recipe, shape, str(f)))
        conflicts.append(modality_conflict(img, recipe.data.modality))
    return np.stack(inputs), conflicts


def modality_conflict(img: LoadedImage, modality: str | None) -> str | None:
    """Why a DICOM's Modality tag contradicts the run's modality (None when it does not, or
    when either is unknown).

    >>> ct = LoadedImage(np.zeros((2, 2), np.float32), None, "dicom", meta={"modality": "CT"})
    >>> modality_conflict(ct, "x-ray")
    'its DICOM Modality is CT (ct); this model was trained on x-ray images'
    """
    from medlens.data.labelled import MODALITY_NAMES

    code = img.meta.get("modality")
    name = MODALITY_NAMES.get(code) if code else None
    if name is None or not modality or modality in ("unknown", name):
        return None
    return f"its DICOM Modality is {code} ({name}); this model was trained on {modality} images"


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
