"""Image folders and manifests in, a cached :class:`ArrayDataset` with leak-free splits out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlens.data.cache import build_cache, rows_memmap
from medlens.data.dataset import SPLITS, ArrayDataset, Split
from medlens.data.manifest import Manifest, check_split_classes, read_manifest, scan_folder
from medlens.data.preprocess import PreprocessConfig
from medlens.data.readers import read_image_file
from medlens.data.splits import assign_splits, check_patient_leakage
from medlens.errors import DataError, MedlensError

MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet")
# DICOM Modality codes (PS3.3 C.7.3.1.1.1) in the words the planner and reports use
MODALITY_NAMES = {
    "CT": "ct",
    "MR": "mri",
    "CR": "x-ray",
    "DX": "x-ray",
    "RG": "x-ray",
    "MG": "mammography",
    "US": "ultrasound",
    "PT": "pet",
    "NM": "nuclear medicine",
    "XA": "angiography",
    "OCT": "retinal oct",
    "OP": "fundus camera",
    "SM": "pathology slide microscope",
    "XC": "photograph",
}
DEFAULT_SIZE_2D, DEFAULT_SIZE_3D = 224, 64


@dataclass
class SourceOptions:
    """How to read a folder or manifest (the CLI's --label-column, --patient-column, ...)."""

    label_columns: list[str] | None = None
    path_column: str | None = None
    patient_column: str | None = None
    split_column: str | None = None
    skip_bad: bool = False
    cache_dir: str | None = None
    size: int | None = None
    preprocess: PreprocessConfig | None = None
    seed: int = 0
    workers: int | None = None


def default_cache_dir() -> Path:
    env = os.environ.get("MEDLENS_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return (base if env else base / "medlens").expanduser()


def is_labelled_source(path: Path) -> bool:
    return path.is_dir() or path.suffix.lower() in MANIFEST_SUFFIXES


def read_source(path: Path, opts: SourceOptions) -> Manifest:
    if path.is_dir():
        if opts.label_columns or opts.patient_column or opts.split_column:
            raise DataError(
                f"{path} is a folder: --label-column, --patient-column and "
                "--split-column apply to manifests",
                hint="use class sub-folders, or write a CSV manifest",
            )
        return scan_folder(path)
    return read_manifest(
        path,
        label_columns=opts.label_columns,
        path_column=opts.path_column,
        patient_column=opts.patient_column,
        split_column=opts.split_column,
    )


def default_preprocess(m: Manifest, size: int | None) -> PreprocessConfig:
    """Dimensionality and channels from the first readable file; size from --size or default."""
    probe = None
    for i in range(min(len(m), 16)):
        try:
            probe = read_image_file(m.paths[i])
            break
        except MedlensError:
            continue
    if probe is None:
        raise DataError(
            f"none of the first files of {m.source} could be read, e.g. {m.where(0)}",
            hint="check the paths and the file formats",
        )
    a = probe.array
    is_3d = a.ndim == 3 and a.shape[-1] not in (3, 4)
    side = size or (DEFAULT_SIZE_3D if is_3d else DEFAULT_SIZE_2D)
    return PreprocessConfig(
        size=[side] * (3 if is_3d else 2),
        channels=3 if a.ndim == 3 and not is_3d else 1,
        window="file" if probe.window is not None else None,
    )


def check_leaks_by_row(m: Manifest, patients: np.ndarray) -> None:
    """The user's split column must keep each patient in one split; name rows, not ids."""
    try:
        check_patient_leakage(m.splits, patients)
    except DataError:
        leaks = [p for p in np.unique(patients) if len(set(m.splits[patients == p])) > 1]
        shown = "; ".join(
            "rows " + ", ".join(str(r) for r in m.rows[patients == p][:4]) for p in leaks[:3]
        )
        raise DataError(
            f"{m.source}: {len(leaks)} patient(s) have images in more than one split, e.g. {shown}",
            hint="fix the split column, or drop it and let medlens split by patient",
        ) from None


def load_labelled(source: str | Path, opts: SourceOptions, on_progress=None) -> ArrayDataset:
    """Read, cache and split a folder or manifest.

    >>> ds = load_labelled("cxr.csv", SourceOptions(label_columns=["finding"]))  # doctest: +SKIP
    """
    path = Path(source).expanduser().resolve()
    m = read_source(path, opts)
    cfg = opts.preprocess or default_preprocess(m, opts.size)
    name = path.stem if path.is_file() else path.name
    cache_dir = Path(opts.cache_dir).expanduser() if opts.cache_dir else default_cache_dir()
    cached = build_cache(
        m,
        cfg,
        cache_dir,
        name=name,
        skip_bad=opts.skip_bad,
        workers=opts.workers,
        on_progress=on_progress,
    )
    m = m.subset(np.isin(np.arange(len(m)), cached.keep))
    patients = cached.patients  # hashed when the cache was built, in the order of keep
    if m.splits is None:
        m.splits = assign_splits(m.labels, patients, seed=opts.seed)
    elif patients is not None:
        check_leaks_by_row(m, patients)
    check_split_classes(m)
    splits = {}
    for split in SPLITS:
        mask = m.splits == split
        splits[split] = Split(
            images=rows_memmap(cached, np.flatnonzero(mask)),  # memory-mapped, not in RAM
            labels=m.labels[mask],
            patients=None if patients is None else patients[mask],
            meta=m.metadata[mask].reset_index(drop=True)
            if len(m.metadata.columns) and len(m.metadata) == len(mask)
            else None,
        )
    shapes = np.array([s[:2] if len(s) >= 2 else s for s in cached.orig_shapes], dtype=float)
    metadata = {
        "cache": str(cached.path),
        "skipped": len(cached.skipped),
        "preprocess": cfg.model_dump(mode="json"),
        "original_size": {
            "min": shapes.min(0).tolist(),
            "median": np.median(shapes, 0).tolist(),
            "max": shapes.max(0).tolist(),
        },
    }
    spacings = [s for s in cached.spacings if s]
    if spacings and len({len(s) for s in spacings}) == 1:
        metadata["spacing_median"] = np.median(np.array(spacings), 0).round(4).tolist()
    return ArrayDataset(
        name=name,
        task=m.task,
        label_names=m.label_names,
        splits=splits,
        source=str(path),
        modality=MODALITY_NAMES.get(cached.modality or "", "unknown"),
        metadata=metadata,
    )
