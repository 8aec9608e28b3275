"""Dataset fingerprint: what is this data? (nnU-Net's idea, for classification.)

The fingerprint is computed once from the arrays and written as ``fingerprint.json``; the plan
is derived from it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import torch
from pydantic import BaseModel

from medlens.data.dataset import SPLITS, ArrayDataset

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

    within_train: int
    across_splits: int
    examples: list[dict]
    near_across_splits: int | None = None  # None: not checked (too many images)
    near_examples: list[dict] = []


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
    """Bit-identical images within train and across splits, by a hash of their bytes."""
    seen: dict[bytes, list[tuple[str, int]]] = defaultdict(list)
    for split in SPLITS:
        for i, img in enumerate(ds.splits[split].images):
            seen[hashlib.blake2b(img.tobytes(), digest_size=16).digest()].append((split, i))
    within, across, examples = 0, 0, []
    for hits in seen.values():
        if len(hits) < 2:
            continue
        splits = {s for s, _ in hits}
        within += sum(1 for s, _ in hits if s == "train") - 1 if "train" in splits else 0
        if len(splits) > 1:
            across += 1
            if len(examples) < max_examples:
                examples.append({s: [i for t, i in hits if t == s] for s in sorted(splits)})
    near, near_examples = None, []
    total = sum(len(ds.splits[s]) for s in SPLITS)
    # 2D only: the middle slices of sparse 3D masks all hash alike (AdrenalMNIST3D: 1,403 false
    # pairs); distance 2, since at 4 merely similar chest X-rays match (PneumoniaMNIST: ~70)
    if total <= _NEAR_DUP_LIMIT and ds.spatial_dims == 2:
        from medlens.data.splits import near_duplicates

        images = [img for s in SPLITS for img in ds.splits[s].images]
        labels = np.concatenate([[s] * len(ds.splits[s]) for s in SPLITS])
        offsets = {s: sum(len(ds.splits[t]) for t in SPLITS[: SPLITS.index(s)]) for s in SPLITS}
        pairs = near_duplicates(images, labels, max_distance=_NEAR_DUP_DISTANCE)
        near = len(pairs)
        near_examples = [
            {
                p["split_a"]: p["a"] - offsets[p["split_a"]],
                p["split_b"]: p["b"] - offsets[p["split_b"]],
                "distance": p["distance"],
            }
            for p in pairs[:max_examples]
        ]
    return Duplicates(
        within_train=max(within, 0),
        across_splits=across,
        examples=examples,
        near_across_splits=near,
        near_examples=near_examples,
    )


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
        modality=ds.modality,
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
