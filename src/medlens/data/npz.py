"""Read and validate MedMNIST-format ``.npz`` files.

The format is MedMNIST's: keys ``train_images``, ``train_labels``, ``val_images``, ``val_labels``,
``test_images`` and ``test_labels``. Images are (N, H, W) or (N, H, W, C) for 2D and
(N, D, H, W) or (N, D, H, W, C) for 3D; labels are (N, 1) class indices or (N, K) 0/1 columns.
Arrays are loaded with ``allow_pickle=False``: a user's file is never unpickled.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from medlens.data.dataset import SPLITS, ArrayDataset, Split
from medlens.errors import DataError

REQUIRED_KEYS = tuple(f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))


def read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Load every required array of a MedMNIST-format file, or fail naming the file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in REQUIRED_KEYS if k not in npz.files]
            if missing:
                raise DataError(
                    f"{path} lacks the keys {', '.join(missing)} (it has: {', '.join(npz.files)})",
                    hint="a MedMNIST-format .npz needs train_/val_/test_ images and labels",
                )
            return {k: npz[k] for k in REQUIRED_KEYS}
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})",
            hint="download it again; a partial download leaves a truncated file",
        ) from exc


def _as_uint8(images: np.ndarray, where: str) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.number):
        raise DataError(f"{where} has dtype {images.dtype}", hint="store images as uint8 0-255")
    if np.issubdtype(images.dtype, np.floating) and np.isnan(images).any():
        raise DataError(f"{where} contains NaN values", hint="replace or drop those images")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0 or hi > 255:
        raise DataError(
            f"{where} has values in [{lo:g}, {hi:g}], outside 0-255",
            hint="rescale the images to uint8 0-255 before saving",
        )
    if np.issubdtype(images.dtype, np.floating) and hi <= 1.0:
        images = images * 255.0  # float images in [0, 1]
    return np.rint(images).astype(np.uint8)


def to_channel_first(images: np.ndarray, spatial_dims: int, where: str) -> np.ndarray:
    """(N, H, W[, C]) or (N, D, H, W[, C]) to (N, C, ...)."""
    if images.ndim == spatial_dims + 1:
        return images[:, None]
    if images.ndim == spatial_dims + 2 and images.shape[-1] in (1, 3, 4):
        return np.ascontiguousarray(np.moveaxis(images, -1, 1))
    expected = (
        "(N, H, W) or (N, H, W, C)" if spatial_dims == 2 else "(N, D, H, W) or (N, D, H, W, C)"
    )
    raise DataError(
        f"{where} has shape {images.shape}; expected {expected} for {spatial_dims}D images",
        hint="save the images with one of those layouts",
    )


def infer_spatial_dims(images: np.ndarray, where: str = "images") -> int:
    """Guess 2D or 3D from the array layout (used for files with no catalogue entry)."""
    if images.ndim == 3:
        return 2
    if images.ndim == 4:
        return 2 if images.shape[-1] in (1, 3, 4) else 3
    if images.ndim == 5:
        return 3
    raise DataError(
        f"{where} has shape {images.shape}, neither 2D (N, H, W[, C]) nor 3D (N, D, H, W[, C])",
        hint="save the images with one of those layouts",
    )


def infer_task(labels: np.ndarray) -> str:
    """binary, multi-class or multi-label from a train label array."""
    if labels.ndim == 2 and labels.shape[1] > 1:
        return "multi-label"
    return "binary" if int(labels.max()) <= 1 else "multi-class"


def _labels(labels: np.ndarray, task: str, n_classes: int, where: str) -> np.ndarray:
    if not np.issubdtype(labels.dtype, np.number):
        raise DataError(f"{where} has dtype {labels.dtype}", hint="labels must be integers")
    if task == "multi-label":
        if labels.ndim != 2 or labels.shape[1] != n_classes:
            raise DataError(
                f"{where} has shape {labels.shape}; expected (N, {n_classes}) 0/1 columns",
                hint="give one 0/1 column per label",
            )
        if not np.isin(labels, (0, 1)).all():
            raise DataError(f"{where} has values other than 0 and 1", hint="use 0/1 labels")
        return labels.astype(np.float32)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{where} has shape {labels.shape}; expected (N,) or (N, 1)")
    if np.issubdtype(labels.dtype, np.floating) and not np.all(labels == np.round(labels)):
        raise DataError(f"{where} holds non-integer class indices", hint="labels must be integers")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= n_classes:
        raise DataError(
            f"{where} has labels in {lo}..{hi}, outside the {n_classes} classes 0..{n_classes - 1}",
            hint="check the label encoding, or the dataset's label names",
        )
    return labels.astype(np.int64)


def dataset_from_arrays(
    arrays: dict[str, np.ndarray],
    *,
    name: str,
    path: Path,
    task: str | None = None,
    label_names: list[str] | None = None,
    spatial_dims: int | None = None,
    modality: str = "unknown",
) -> ArrayDataset:
    """Validate MedMNIST-format arrays and turn them into an :class:`ArrayDataset`."""
    train_images = arrays["train_images"]
    spatial_dims = spatial_dims or infer_spatial_dims(train_images, f"{path}:train_images")
    task = task or infer_task(arrays["train_labels"])
    if label_names is None:
        all_labels = np.concatenate(
            [arrays[f"{s}_labels"].reshape(len(arrays[f"{s}_labels"]), -1) for s in SPLITS]
        )
        n = all_labels.shape[1] if task == "multi-label" else int(all_labels.max()) + 1
        label_names = [str(i) for i in range(max(n, 2))]
    splits: dict[str, Split] = {}
    shape: tuple[int, ...] | None = None
    for split in SPLITS:
        img_key, lab_key = f"{split}_images", f"{split}_labels"
        images = to_channel_first(
            _as_uint8(arrays[img_key], f"{path}:{img_key}"), spatial_dims, f"{path}:{img_key}"
        )
        labels = _labels(arrays[lab_key], task, len(label_names), f"{path}:{lab_key}")
        if len(images) != len(labels):
            raise DataError(
                f"{path}: {img_key} has {len(images)} images but {lab_key} has {len(labels)}",
                hint="every image needs exactly one label row",
            )
        if len(images) == 0:
            raise DataError(f"{path}: the {split} split is empty", hint="give every split images")
        if shape is None:
            shape = images.shape[1:]
        elif images.shape[1:] != shape:
            raise DataError(
                f"{path}: {img_key} images are {images.shape[1:]} but train images are {shape}",
                hint="all splits must share one image size and channel count",
            )
        splits[split] = Split(images=images, labels=labels)
    return ArrayDataset(
        name=name,
        task=task,
        label_names=label_names,
        splits=splits,
        source=str(path),
        modality=modality,
    )


def load_npz_dataset(path: Path, **kwargs) -> ArrayDataset:
    """Load a MedMNIST-format file; ``kwargs`` as for :func:`dataset_from_arrays`."""
    if not path.is_file():
        raise DataError(f"{path} does not exist", hint="check the path")
    name = kwargs.pop("name", path.stem)
    return dataset_from_arrays(read_npz_arrays(path), name=name, path=path, **kwargs)
