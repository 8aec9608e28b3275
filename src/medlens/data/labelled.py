"""Image folders and manifests in, a cached :class:`ArrayDataset` with leak-free splits out.

Splits: the user's own (split folders or a split column) are kept, checked for patients in two
splits and for identical images across them (reported; dropped with ``drop_duplicates``). When
they hold train and test but no val, val is carved out of train (``val_fraction``, stratified,
whole patients and sets of identical images). Without splits medlens draws all three. What was
found and chosen is written to ``metadata["notes"]``, and from there to the plan's notes.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlens.config import MODALITIES, check_modality, modality_name
from medlens.config.preprocess import native_side
from medlens.data.cache import CachedData, build_cache, rows_memmap
from medlens.data.dataset import SPLITS, ArrayDataset, Split
from medlens.data.folders import scan_folder
from medlens.data.manifest import Manifest, check_split_classes, read_manifest
from medlens.data.preprocess import PreprocessConfig
from medlens.data.readers import read_image_file
from medlens.data.splits import (
    assign_splits,
    carve_split,
    check_patient_leakage,
    earlier_copies,
    link_groups,
)
from medlens.errors import DataError, MedlensError

MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet")
# DICOM Modality codes (PS3.3 C.7.3.1.1.1) in the modality vocabulary (config.MODALITIES)
MODALITY_NAMES = {
    "CT": "ct",
    "MR": "mri",
    "CR": "x-ray",
    "DX": "x-ray",
    "RG": "x-ray",
    "PX": "x-ray",
    "IO": "x-ray",
    "MG": "mammography",
    "US": "ultrasound",
    "IVUS": "ultrasound",
    "PT": "pet",
    "NM": "nuclear-medicine",
    "XA": "angiography",
    "OCT": "oct",
    "OPT": "oct",
    "OP": "fundus",
    "SM": "pathology",
    "GM": "microscopy",
    "ES": "endoscopy",
    "XC": "photo",
}
# names guessed from a folder's name only when no other reading is likely ("pet" may be pets)
_NOT_FROM_NAMES = ("pet", "photo")
DEFAULT_SIZE_2D, DEFAULT_SIZE_3D = 224, 64
DUPLICATES_CSV = "duplicates-dropped.csv"


@dataclass
class SourceOptions:
    """How to read a folder or manifest (the CLI's --label-column, --image-root, ...)."""

    label_columns: list[str] | None = None
    path_column: str | None = None
    patient_column: str | None = None
    split_column: str | None = None
    image_root: str | None = None
    modality: str | None = None
    drop_duplicates: bool = False
    val_fraction: float = 0.1
    split_seed: int = 0
    skip_bad: bool = False
    cache_dir: str | None = None
    size: int | None = None
    preprocess: PreprocessConfig | None = None
    workers: int | None = None
    upsample: bool = True  # False: the default size is not above the images' own (a CPU plan)


def default_cache_dir() -> Path:
    env = os.environ.get("MEDLENS_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return (base if env else base / "medlens").expanduser()


def is_labelled_source(path: Path) -> bool:
    return path.is_dir() or path.suffix.lower() in MANIFEST_SUFFIXES


def read_source(path: Path, opts: SourceOptions) -> Manifest:
    if path.is_dir():
        given = {
            "--label-column": opts.label_columns,
            "--path-column": opts.path_column,
            "--patient-column": opts.patient_column,
            "--split-column": opts.split_column,
            "--image-root": opts.image_root,
        }
        if any(given.values()):
            used = ", ".join(k for k, v in given.items() if v)
            raise DataError(
                f"{path} is a folder: {used} apply to manifests",
                hint="use class sub-folders, or write a CSV manifest",
            )
        return scan_folder(path)
    return read_manifest(
        path,
        label_columns=opts.label_columns,
        path_column=opts.path_column,
        patient_column=opts.patient_column,
        split_column=opts.split_column,
        image_root=opts.image_root,
        skip_missing=opts.skip_bad,
    )


def default_preprocess(
    m: Manifest, size: int | None, upsample: bool = True
) -> tuple[PreprocessConfig, list[str]]:
    """Dimensionality and channels from the first readable files; size from --size or the
    default (with ``upsample=False``, for 2D images, the largest standard side not above the
    files' median shorter side). Colour files whose three channels are equal (grey X-rays saved
    as RGB JPEGs) are read as one grey channel: a third of the cache and of the first layer's
    work. Returns the config and a note for each of these choices."""
    probes = []
    for i in range(min(len(m), 16)):
        try:
            probes.append(read_image_file(m.paths[i]))
        except MedlensError:
            continue
    if not probes:
        raise DataError(
            f"none of the first files of {m.source} could be read, e.g. {m.where(0)}",
            hint="check the paths and the file formats",
        )
    a = probes[0].array
    is_3d = a.ndim == 3 and a.shape[-1] not in (3, 4)
    colour = a.ndim == 3 and not is_3d
    grey_rgb = colour and all(_equal_channels(p.array) for p in probes)
    side = size or (DEFAULT_SIZE_3D if is_3d else DEFAULT_SIZE_2D)
    notes = []
    if size is None and not upsample and not is_3d:
        real = int(np.median([min(p.array.shape[:2]) for p in probes]))
        side = native_side(real, DEFAULT_SIZE_2D)
        if side < DEFAULT_SIZE_2D:
            notes.append(
                f"resolution {side} px: the images are {real} px (median shorter side of the "
                f"first {len(probes)}), and a CPU recipe does not upsample them to "
                f"{DEFAULT_SIZE_2D} (--size to choose)"
            )
    cfg = PreprocessConfig(
        size=[side] * (3 if is_3d else 2),
        channels=3 if colour and not grey_rgb else 1,
        window="file" if probes[0].window is not None else None,
    )
    if grey_rgb:
        notes.append(
            f"the first {len(probes)} files are colour with three equal channels: read as grey "
            "(--set data.preprocess.channels=3 to keep three)"
        )
    return cfg, notes


def _equal_channels(a: np.ndarray) -> bool:
    return a.ndim == 3 and a.shape[-1] in (3, 4) and bool((a[..., :3] == a[..., :1]).all())


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


def _split_groups(patients: np.ndarray | None, hashes: np.ndarray) -> tuple[np.ndarray | None, str]:
    """What a split must keep whole: patients, and identical images (linked into one group
    with every image they are identical to), and how to say it."""
    by = "by class, whole patients" if patients is not None else "by class"
    if len(np.unique(hashes)) == len(hashes):
        return patients, by
    return link_groups(patients, hashes), by + ", identical images kept together"


def _class_counts(m: Manifest, mask: np.ndarray) -> np.ndarray:
    labels = m.labels[mask]
    if m.task == "multi-label":
        return labels.sum(0).astype(np.int64)
    return np.bincount(labels, minlength=len(m.label_names))


def carve_validation(
    m: Manifest, groups: np.ndarray | None, by: str, opts: SourceOptions
) -> tuple[np.ndarray, str]:
    """The user's train and test with val carved out of train: (splits, note)."""
    train = np.flatnonzero(m.splits == "train")
    to_val = carve_split(
        m.labels[train],
        None if groups is None else groups[train],
        fraction=opts.val_fraction,
        seed=opts.split_seed,
    )
    splits = m.splits.copy()
    splits[train[to_val]] = "val"
    val, before = _class_counts(m, splits == "val"), _class_counts(m, m.splits == "train")
    empty = np.flatnonzero(val == 0)
    if len(empty):
        shown = ", ".join(f"{m.label_names[k]} ({before[k]} in train)" for k in empty)
        raise DataError(
            f"{m.source}: carving {opts.val_fraction:g} of train out as val leaves no "
            f"validation images of {shown}",
            hint="add images of that class, give a val split, or carve more "
            "(--val-fraction, data.val_fraction)",
        )
    per_class = ", ".join(f"{n} {int(c)}" for n, c in zip(m.label_names, val, strict=True))
    note = (
        f"no val split in the {m.split_source}: {opts.val_fraction:g} of train carved out as "
        f"val ({len(np.flatnonzero(to_val))} of {len(train)} images: {per_class}), stratified "
        f"{by}, seed {opts.split_seed} (data.val_fraction, data.split_seed); the test split "
        "is yours, untouched"
    )
    return splits, note


def settle_splits(
    m: Manifest, patients: np.ndarray | None, hashes: np.ndarray, opts: SourceOptions
) -> tuple[np.ndarray, str]:
    """Train/val/test for every item of the cached manifest, and a note on where they came
    from; DataError for user splits that leak a patient or lack train or test."""
    groups, by = _split_groups(patients, hashes)
    present = set() if m.splits is None else set(m.splits.tolist())
    if present <= {"train"}:
        splits = assign_splits(m.labels, groups, seed=opts.split_seed)
        only = f"the {m.split_source} hold train only; " if present else ""
        return splits, (
            f"{only}splits drawn by medlens: 80/10/10, stratified {by}, "
            f"seed {opts.split_seed} (data.split_seed)"
        )
    if "train" not in present or "test" not in present:
        lacking = "train" if "train" not in present else "test"
        raise DataError(
            f"{m.source}: the {m.split_source} hold {', '.join(s for s in SPLITS if s in present)}"
            f" but no {lacking} split",
            hint=f"add a {lacking} split (medlens makes no {lacking} split out of yours), or "
            "drop the splits to let medlens draw all three",
        )
    if patients is not None:
        check_leaks_by_row(m, patients)
    if "val" not in present:
        return carve_validation(m, groups, by, opts)
    return m.splits, f"splits: train, val and test as the {m.split_source} give them"


def drop_later_copies(
    m: Manifest, hashes: np.ndarray, cached: CachedData
) -> tuple[np.ndarray, dict | None]:
    """(keep mask, record): images identical to one in an earlier split are left out and
    listed in a CSV in the cache folder (the fingerprint reports them, dropped or not)."""
    partner = earlier_copies(hashes, m.splits)
    copies = np.flatnonzero(partner >= 0)
    if not len(copies):
        return np.ones(len(m), bool), None
    listing = cached.path / DUPLICATES_CSV
    with listing.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "row", "split", "identical_to", "identical_split"])
        for i in copies:
            j = partner[i]
            writer.writerow([m.paths[i], int(m.rows[i]), m.splits[i], m.paths[j], m.splits[j]])
    return partner < 0, {"n": len(copies), "csv": str(listing)}


def choose_modality(
    given: str | None, dicom_tag: str | None, names: list[str]
) -> tuple[str, str | None]:
    """(vocabulary name, note): the user's word, else the DICOM Modality tag, else a word in
    the folder or file names, else "unknown"."""
    if given:
        return check_modality(given), None
    if dicom_tag and dicom_tag in MODALITY_NAMES:
        name = MODALITY_NAMES[dicom_tag]
        return name, f"modality {name}: from the DICOM Modality tag ({dicom_tag})"
    for text in names:
        name = modality_name(text, skip=_NOT_FROM_NAMES)
        if name != "unknown":
            return name, f"modality {name}: guessed from the name {text!r} (--modality if not)"
    return "unknown", (
        "modality unknown: --modality (" + ", ".join(MODALITIES) + ") lets the plan's "
        "augmentation fit it"
    )


def load_labelled(source: str | Path, opts: SourceOptions, on_progress=None) -> ArrayDataset:
    """Read, cache and split a folder or manifest (see the module doc).

    >>> ds = load_labelled("chest_xray", SourceOptions(size=28))  # doctest: +SKIP
    >>> ds.metadata["notes"][0]  # doctest: +SKIP
    'no val split in the split folders: 0.1 of train carved out as val (522 of 5216 images...'
    """
    path = Path(source).expanduser().resolve()
    m = read_source(path, opts)
    cfg, preprocess_notes = (
        (opts.preprocess, [])
        if opts.preprocess
        else default_preprocess(m, opts.size, opts.upsample)
    )
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
    # cache rows, hashed patient ids and image hashes, in the order of the kept items
    rows, patients, hashes = np.arange(len(m)), cached.patients, cached.hashes
    user_val = bool(opts.split_column) and m.splits is not None and "val" in set(m.splits)
    m.splits, split_note = settle_splits(m, patients, hashes, opts)
    dropped = None
    if opts.drop_duplicates:
        keep, dropped = drop_later_copies(m, hashes, cached)
        m, rows, hashes = m.subset(keep), rows[keep], hashes[keep]
        patients = None if patients is None else patients[keep]
    check_split_classes(m)
    splits = {}
    for split in SPLITS:
        mask = m.splits == split
        splits[split] = Split(
            images=rows_memmap(cached, rows[mask]),  # memory-mapped, not in RAM
            labels=m.labels[mask],
            patients=None if patients is None else patients[mask],
            meta=m.metadata[mask].reset_index(drop=True)
            if len(m.metadata.columns) and len(m.metadata) == len(mask)
            else None,
            hashes=hashes[mask],
        )
    modality, modality_note = choose_modality(
        opts.modality, cached.modality, [name, Path(opts.image_root or "").name]
    )
    notes = [*m.notes, split_note, *preprocess_notes, *([modality_note] if modality_note else [])]
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
        "notes": notes,
        "val_from_user": user_val,  # --folds may not pool a val split the user fixed
    }
    if dropped:
        metadata["duplicates_dropped"] = dropped
    spacings = [s for s in cached.spacings if s]
    if spacings and len({len(s) for s in spacings}) == 1:
        metadata["spacing_median"] = np.median(np.array(spacings), 0).round(4).tolist()
    return ArrayDataset(
        name=name,
        task=m.task,
        label_names=m.label_names,
        splits=splits,
        source=str(path),
        modality=modality,
        metadata=metadata,
    )
