"""In-memory labelled image arrays: the form every source is turned into before training.

Images are uint8, channel-first: (N, C, H, W) for 2D and (N, C, D, H, W) for 3D. Labels are
int64 class indices (N,) for binary, multi-class and ordinal tasks, and float32 0/1 (N, K) for
multi-label tasks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

TASKS = ("binary", "multi-class", "multi-label", "ordinal")
SPLITS = ("train", "val", "test")


def image_hashes(images) -> np.ndarray:
    """(N,) digests of each image's bytes ("S32" hex): equal exactly for identical images."""
    return np.array(
        [
            hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=16).hexdigest()
            for img in images
        ],
        dtype="S32",
    )


@dataclass
class Split:
    """One split's images and labels."""

    images: np.ndarray
    labels: np.ndarray
    patients: np.ndarray | None = None  # hashed patient ids, when the source has them
    meta: pd.DataFrame | None = None  # per-image manifest columns (sex, age, site...), if any
    hashes: np.ndarray | None = None  # image_hashes(images), when the cache has them

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class ArrayDataset:
    """A labelled dataset with train/val/test splits held as arrays.

    >>> ds.splits["train"].images.shape  # doctest: +SKIP
    (546, 1, 28, 28)
    """

    name: str
    task: str
    label_names: list[str]
    splits: dict[str, Split]
    source: str = ""
    modality: str = "unknown"
    metadata: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    @property
    def in_chans(self) -> int:
        return int(self.splits["train"].images.shape[1])

    @property
    def spatial_dims(self) -> int:
        return self.splits["train"].images.ndim - 2

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Spatial shape of one image: (H, W) or (D, H, W)."""
        return tuple(int(s) for s in self.splits["train"].images.shape[2:])

    def class_counts(self, split: str) -> list[int]:
        """Images per class (positives per label for multi-label tasks)."""
        labels = self.splits[split].labels
        if self.task == "multi-label":
            return [int(v) for v in labels.sum(axis=0)]
        return [int(v) for v in np.bincount(labels, minlength=self.n_classes)]
