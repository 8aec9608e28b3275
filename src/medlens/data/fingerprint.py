"""Dataset fingerprint: what is this data? (nnU-Net's idea, for classification.)

The fingerprint is computed once from the arrays and written as ``fingerprint.json``; the plan
is derived from it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from pydantic import BaseModel

from medlens.config import modality_name
from medlens.data.dataset import SPLITS, ArrayDataset, image_hashes
from medlens.data.splits import earlier_copies, near_duplicates

# Near-duplicate search (perceptual hashes of every image) is skipped above this many images.
_NEAR_DUP_LIMIT = 60_000
_NEAR_DUP_DISTANCE = 2
# Intensity statistics are estimated on at most this many training images: enough for
# mean/std to three decimals, and it keeps large 224 px sets from costing minutes.
_STATS_SAMPLE = 4096


class IntensityStats(BaseModel):
    """Per-channel statistics of training images, on the 0-1 scale."""

    mean: list[float]
    std: list[float]
    p01: list[float]
    p99: list[float]
    min: int
    max: int


class Duplicates(BaseModel):
    """Identical images within train and across splits, and near-identical ones (perceptual
    hash) across splits."""

    within_train: int  # train images identical to another train image (copies beyond one)
    across_splits: int  # groups of identical images with copies in more than one split
    examples: list[dict]
    near_across_splits: int | None = None  # None: not checked (too many images)
    near_examples: list[dict] = []
    groups: int = 0  # groups of two or more identical images, in any splits
    within_split: dict[str, int] = {}  # groups that lie inside one split, per split
    # "train/test": images of the later split identical to one in the earlier split
    across_pairs: dict[str, int] = {}
    dropped: int = 0  # later-split copies dropped by --drop-duplicates before this was taken
    dropped_list: str | None = None  # the CSV that lists them

    def across_note(self) -> str | None:
        """One line on identical images across splits (kept or dropped), or None if none.

        >>> pairs = {"train/test": 3}
        >>> d = Duplicates(within_train=0, across_splits=2, examples=[], across_pairs=pairs)
        >>> d.across_note()[:48]
        'identical images across splits: 3 (train/test 3)'
        """
        notes = []
        if self.across_pairs:
            pairs = ", ".join(f"{k} {v}" for k, v in self.across_pairs.items())
            notes.append(
                f"identical images across splits: {sum(self.across_pairs.values())} ({pairs}) "
                "kept, so evaluation sees images training saw (--drop-duplicates drops the "
                "later-split copies)"
            )
        if self.dropped:
            notes.append(
                f"{self.dropped} image(s) identical to one in an earlier split dropped "
                f"(--drop-duplicates), listed in {self.dropped_list}"
            )
        return "; ".join(notes) or None


class Fingerprint(BaseModel):
    """Everything the plan needs to know about a dataset."""

    name: str
    source: str
    modality: str
    task: str
    spatial_dims: int
    in_chans: int
    image_shape: list[int]
    label_names: list[str]
    n_classes: int
    n_images: dict[str, int]
    class_counts: dict[str, list[int]]
    minority_fraction: float
    imbalance_ratio: float
    intensity: IntensityStats
    duplicates: Duplicates
    patient_ids: bool = False
    patients_per_class: dict[str, list[int]] | None = None
    metadata: dict = {}


def intensity_stats(images: np.ndarray, seed: int = 0) -> IntensityStats:
    """Per-channel mean, std and 1st/99th percentiles of (N, C, ...) uint8 images.

    Computed from a 256-bin histogram per channel: exact for uint8 data, and one cheap pass.
    """
    rng = np.random.default_rng(seed)
    n = images.shape[0]
    if n > _STATS_SAMPLE:
        images = images[np.sort(rng.choice(n, size=_STATS_SAMPLE, replace=False))]
    values = np.arange(256, dtype=np.float64) / 255
    mean, std, p01, p99 = [], [], [], []
    for c in range(images.shape[1]):
        # torch's bincount takes uint8 directly; numpy's widens to int64 first (10x slower).
        hist = torch.from_numpy(np.ascontiguousarray(images[:, c])).ravel().bincount(minlength=256)
        hist = hist.double().numpy()
        prob = hist / hist.sum()
        mu = float((prob * values).sum())
        mean.append(round(mu, 5))
        std.append(round(max(float(np.sqrt((prob * (values - mu) ** 2).sum())), 1e-3), 5))
        cdf = np.cumsum(prob)
        p01.append(round(float(values[np.searchsorted(cdf, 0.01)]), 5))
        p99.append(round(float(values[np.searchsorted(cdf, 0.99)]), 5))
    nonzero = np.flatnonzero(torch.from_numpy(np.ascontiguousarray(images)).ravel().bincount())
    return IntensityStats(
        mean=mean, std=std, p01=p01, p99=p99, min=int(nonzero[0]), max=int(nonzero[-1])
    )


def find_duplicates(ds: ArrayDataset, max_examples: int = 10) -> Duplicates:
    """Bit-identical images within and across splits, by a hash of their bytes (the cache's
    own hashes when it has them), and near-identical ones across splits (perceptual hash)."""
    near, near_examples = _near_duplicates(ds, max_examples)
    dropped = ds.metadata.get("duplicates_dropped") or {}
    return Duplicates(
        **_identical(ds, max_examples),
        near_across_splits=near,
        near_examples=near_examples,
        dropped=int(dropped.get("n", 0)),
        dropped_list=dropped.get("csv"),
    )


def _identical(ds: ArrayDataset, max_examples: int) -> dict:
    hashes = np.concatenate(
        [
            ds.splits[s].hashes
            if ds.splits[s].hashes is not None
            else image_hashes(ds.splits[s].images)
            for s in SPLITS
        ]
    )
    split_of = np.concatenate([np.full(len(ds.splits[s]), s) for s in SPLITS]).astype(str)
    index = np.concatenate([np.arange(len(ds.splits[s])) for s in SPLITS])
    inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)[1:]
    inverse = inverse.ravel()
    present = np.zeros((len(counts), len(SPLITS)), bool)
    present[inverse, [SPLITS.index(s) for s in split_of]] = True
    n_splits = present.sum(1)
    in_train = np.bincount(inverse[split_of == "train"], minlength=len(counts))
    partner = earlier_copies(hashes, split_of)
    pairs = Counter(f"{split_of[partner[i]]}/{split_of[i]}" for i in np.flatnonzero(partner >= 0))
    first = np.full(len(counts), len(hashes))
    np.minimum.at(first, inverse, np.arange(len(hashes)))
    examples = []
    for g in sorted(np.flatnonzero(n_splits > 1), key=lambda g: first[g])[:max_examples]:
        hits = np.flatnonzero(inverse == g)
        examples.append(
            {str(s): index[hits[split_of[hits] == s]].tolist() for s in sorted(set(split_of[hits]))}
        )
    return {
        "within_train": int(np.maximum(in_train - 1, 0).sum()),
        "across_splits": int((n_splits > 1).sum()),
        "examples": examples,
        "groups": int((counts > 1).sum()),
        "within_split": {
            s: int(((counts > 1) & (n_splits == 1) & present[:, k]).sum())
            for k, s in enumerate(SPLITS)
        },
        "across_pairs": dict(sorted(pairs.items())),
    }


def _near_duplicates(ds: ArrayDataset, max_examples: int) -> tuple[int | None, list[dict]]:
    """(pairs across splits, examples); None when not checked."""
    total = sum(len(ds.splits[s]) for s in SPLITS)
    # 2D only: the middle slices of sparse 3D masks all hash alike (AdrenalMNIST3D: 1,403 false
    # pairs); distance 2, since at 4 merely similar chest X-rays match (PneumoniaMNIST: ~70)
    if total > _NEAR_DUP_LIMIT or ds.spatial_dims != 2:
        return None, []
    images = [img for s in SPLITS for img in ds.splits[s].images]
    labels = np.concatenate([[s] * len(ds.splits[s]) for s in SPLITS])
    offsets = {s: sum(len(ds.splits[t]) for t in SPLITS[: SPLITS.index(s)]) for s in SPLITS}
    pairs = near_duplicates(images, labels, max_distance=_NEAR_DUP_DISTANCE)
    return len(pairs), [
        {
            p["split_a"]: p["a"] - offsets[p["split_a"]],
            p["split_b"]: p["b"] - offsets[p["split_b"]],
            "distance": p["distance"],
        }
        for p in pairs[:max_examples]
    ]


def patients_per_class(ds: ArrayDataset) -> dict[str, list[int]] | None:
    """Distinct patients with each class (label) in each split; None without patient ids."""
    if any(ds.splits[s].patients is None for s in SPLITS):
        return None
    out = {}
    for s in SPLITS:
        split = ds.splits[s]
        onehot = split.labels if ds.task == "multi-label" else np.eye(ds.n_classes)[split.labels]
        out[s] = [len(set(split.patients[onehot[:, k] > 0])) for k in range(ds.n_classes)]
    return out


def fingerprint(ds: ArrayDataset) -> Fingerprint:
    """Compute the fingerprint of a dataset.

    >>> fp = fingerprint(load_dataset("breastmnist"))  # doctest: +SKIP
    >>> fp.class_counts["train"], round(fp.minority_fraction, 3)  # doctest: +SKIP
    ([147, 399], 0.269)
    """
    counts = {s: ds.class_counts(s) for s in SPLITS}
    train = np.asarray(counts["train"], dtype=float)
    n_train = len(ds.splits["train"])
    minority = float(train.min() / n_train) if n_train else 0.0
    ratio = float(train.max() / train.min()) if train.min() > 0 else float("inf")
    return Fingerprint(
        name=ds.name,
        source=ds.source,
        modality=modality_name(ds.modality),  # the vocabulary's word
        task=ds.task,
        spatial_dims=ds.spatial_dims,
        in_chans=ds.in_chans,
        image_shape=list(ds.image_shape),
        label_names=ds.label_names,
        n_classes=ds.n_classes,
        n_images={s: len(ds.splits[s]) for s in SPLITS},
        class_counts=counts,
        minority_fraction=round(minority, 5),
        imbalance_ratio=round(ratio, 3),
        intensity=intensity_stats(ds.splits["train"].images),
        duplicates=find_duplicates(ds),
        patient_ids=ds.splits["train"].patients is not None,
        patients_per_class=patients_per_class(ds),
        metadata=dict(ds.metadata),
    )
