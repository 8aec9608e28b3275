"""Cross-validation folds of a dataset: train and val pooled, split into k folds.

Fold i of a :class:`~medlens.data.dataset.ArrayDataset` trains on the other folds, validates
on fold i, and keeps the dataset's test split as it is. The pool is train then val, in order,
so fold i's val split is ``pooled(ds)`` at ``fold_ids(...) == i``, in order: the out-of-fold
predictions of the pool are those of each fold's val split, put back in place.

>>> fold = fold_dataset(ds, k=5, index=0)  # doctest: +SKIP
>>> len(fold.splits["train"]) + len(fold.splits["val"]) == len(pooled(ds))  # doctest: +SKIP
True
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from medlens.data.dataset import ArrayDataset, Split, image_hashes
from medlens.data.splits import assign_folds, groups_per_label, link_groups
from medlens.errors import ConfigError, DataError

POOLED = ("train", "val")


def pooled(ds: ArrayDataset) -> Split:
    """Train and val as one split (train first), the images held in memory."""
    parts = [ds.splits[s] for s in POOLED]
    patients = None
    if all(p.patients is not None for p in parts):
        patients = np.concatenate([p.patients for p in parts])
    meta = None
    if all(p.meta is not None for p in parts):
        meta = pd.concat([p.meta for p in parts], ignore_index=True)
    return Split(
        images=np.concatenate([np.asarray(p.images) for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        patients=patients,
        meta=meta,
        hashes=np.concatenate(
            [p.hashes if p.hashes is not None else image_hashes(p.images) for p in parts]
        ),
    )


def pool_groups(pool: Split) -> np.ndarray:
    """What a fold keeps whole: a patient, and every image identical to another."""
    return link_groups(pool.patients, pool.hashes)


def check_fold_count(ds: ArrayDataset, k: int) -> None:
    """Refuse k folds that the smallest class cannot fill, or a val split the user fixed."""
    if k < 2:
        raise ConfigError(
            f"--folds {k}: cross-validation needs at least 2 folds", hint="e.g. --folds 5"
        )
    if ds.metadata.get("val_from_user"):
        raise ConfigError(
            "--folds pools train and val into folds, but the split column fixes val",
            hint="drop --folds (or --seeds for an ensemble on your split), or give the split "
            "column only train and test rows",
        )
    pool = pooled(ds)
    per_label = groups_per_label(pool.labels, pool_groups(pool))
    smallest = int(np.argmin(per_label))
    if per_label[smallest] < k:
        who = "patients" if pool.patients is not None else "images (or sets of identical ones)"
        raise DataError(
            f"--folds {k} but class {ds.label_names[smallest]!r} has only "
            f"{per_label[smallest]} {who} in train+val: a fold would lack it",
            hint=f"use --folds {max(2, int(per_label[smallest]))} or fewer",
        )


def fold_ids(ds: ArrayDataset, k: int, seed: int = 0) -> np.ndarray:
    """The fold (0..k-1) of every image of :func:`pooled`."""
    check_fold_count(ds, k)
    pool = pooled(ds)
    return assign_folds(pool.labels, pool_groups(pool), k=k, seed=seed)


def take(split: Split, mask: np.ndarray) -> Split:
    """The images of ``split`` where ``mask`` holds, in order."""
    return Split(
        images=split.images[mask],
        labels=split.labels[mask],
        patients=None if split.patients is None else split.patients[mask],
        meta=None if split.meta is None else split.meta[mask].reset_index(drop=True),
        hashes=None if split.hashes is None else split.hashes[mask],
    )


def fold_dataset(ds: ArrayDataset, k: int, index: int, seed: int = 0) -> ArrayDataset:
    """Fold ``index`` of ``k``: train on the other folds, validate on it, the test untouched."""
    if not 0 <= index < k:
        raise DataError(f"fold {index} of {k} does not exist", hint=f"use 0..{k - 1}")
    pool, folds = pooled(ds), fold_ids(ds, k, seed)
    splits = {
        "train": take(pool, folds != index),
        "val": take(pool, folds == index),
        "test": ds.splits["test"],
    }
    note = (
        f"cross-validation fold {index} of {k} (seed {seed}): train+val pooled, "
        "stratified by class, whole patients and identical images in one fold"
    )
    metadata = {**ds.metadata, "notes": [*ds.metadata.get("notes", []), note]}
    return dataclasses.replace(ds, splits=splits, metadata=metadata)
