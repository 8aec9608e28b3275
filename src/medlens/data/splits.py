"""Patient-level stratified splits, leak checks, and near-duplicate images across splits.

>>> splits = assign_splits(labels, patients, fractions=(0.8, 0.1, 0.1), seed=0)  # doctest: +SKIP
>>> check_patient_leakage(splits, patients)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medlens.errors import DataError

SPLIT_NAMES = ("train", "val", "test")
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _group_label_matrix(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique groups' inverse index, per-group label counts (G, K))."""
    _, inverse = np.unique(groups, return_inverse=True)
    onehot = labels if labels.ndim == 2 else np.eye(int(labels.max()) + 1)[labels]
    counts = np.zeros((inverse.max() + 1, onehot.shape[1]))
    np.add.at(counts, inverse, onehot)
    return inverse, counts


def assign_splits(
    labels: np.ndarray,
    patients: np.ndarray | None = None,
    *,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> np.ndarray:
    """ "train"/"val"/"test" per image: every patient in one split, classes stratified.

    Greedy iterative stratification at the patient level (Sechidis et al., 2011), which also
    covers multi-label tasks: patients holding the rarest label are placed first, each into the
    split that most lacks that label (ties: the split furthest below its size). scikit-learn's
    StratifiedGroupKFold is single-label only, hence this.
    """
    labels = np.asarray(labels)
    n = len(labels)
    groups = np.asarray(patients) if patients is not None else np.arange(n)
    inverse, counts = _group_label_matrix(labels, groups)
    n_groups = counts.shape[0]
    if n_groups < 10:
        raise DataError(
            f"only {n_groups} patients (or images): too few for train/val/test",
            hint="add data, or give your own split column",
        )
    rng = np.random.default_rng(seed)
    frac = np.asarray(fractions, float) / sum(fractions)
    sizes = np.bincount(inverse, minlength=n_groups).astype(float)
    want_labels = frac[:, None] * counts.sum(0)[None]  # (3, K) positives each split should get
    want_size = frac * sizes.sum()
    assigned = np.full(n_groups, -1)
    order = rng.permutation(n_groups)
    remaining = counts.copy()
    while (assigned < 0).any():
        free = order[assigned[order] < 0]
        totals = remaining[free].sum(0)
        present = np.flatnonzero(totals > 0)
        if len(present):
            k = present[np.argmin(totals[present])]  # the rarest label still unplaced
            todo = free[counts[free, k] > 0]
        else:
            k, todo = None, free
        for g in todo:
            need = want_labels[:, k] if k is not None else want_size
            cand = np.flatnonzero(need == need.max())
            if len(cand) > 1:
                cand = cand[want_size[cand] == want_size[cand].max()]
            s = int(rng.choice(cand))
            assigned[g] = s
            want_labels[s] -= counts[g]
            want_size[s] -= sizes[g]
            remaining[g] = 0
    # every split must hold someone: move the smallest group of the largest split if needed
    for s in range(3):
        if not (assigned == s).any():
            donor = np.argmax(np.bincount(assigned, weights=sizes, minlength=3))
            cands = np.flatnonzero(assigned == donor)
            assigned[cands[np.argmin(sizes[cands])]] = s
    return np.asarray(SPLIT_NAMES)[assigned[inverse]]


def check_patient_leakage(splits: np.ndarray, patients: np.ndarray) -> None:
    """A patient with images in two splits is an error, naming up to five such patients."""
    splits, patients = np.asarray(splits), np.asarray(patients)
    seen: dict[str, set[str]] = {}
    for p, s in zip(patients.tolist(), splits.tolist(), strict=True):
        seen.setdefault(str(p), set()).add(str(s))
    leaks = {p: sorted(s) for p, s in seen.items() if len(s) > 1}
    if leaks:
        shown = "; ".join(f"{p} in {'/'.join(s)}" for p, s in list(leaks.items())[:5])
        raise DataError(
            f"{len(leaks)} patient(s) have images in more than one split: {shown}",
            hint="fix the split column, or drop it and let medlens split by patient",
        )


def _phash_bits(images: Sequence[np.ndarray], hash_size: int) -> np.ndarray:
    import imagehash
    from PIL import Image

    bits = np.empty((len(images), hash_size * hash_size), dtype=bool)
    for i, img in enumerate(images):
        plane = img[0] if img.ndim == 3 else img[0, img.shape[1] // 2]  # first channel, mid slice
        bits[i] = imagehash.phash(Image.fromarray(plane), hash_size=hash_size).hash.ravel()
    return bits


def near_duplicates(
    images: Sequence[np.ndarray],
    splits: np.ndarray,
    *,
    max_distance: int = 4,
    hash_size: int = 8,
    block: int = 256,
) -> list[dict]:
    """Pairs of near-identical images (perceptual hash) that sit in different splits."""
    splits = np.asarray(splits)
    if len(images) < 2:
        return []
    packed = np.packbits(_phash_bits(images, hash_size), axis=1)  # (N, bytes)
    pairs = []
    for start in range(0, len(packed), block):
        chunk = packed[start : start + block]
        # Hamming distance by XOR + a popcount table, one block of rows against all later rows:
        # (block, N, bytes) uint8 stays near 100 MB at N = 60,000
        dist = _POPCOUNT[chunk[:, None, :] ^ packed[None, start:, :]].sum(2, dtype=np.int32)
        rows, cols = np.nonzero(dist <= max_distance)
        for r, c in zip(rows, cols, strict=True):
            a, b = start + r, start + c
            if b > a and splits[a] != splits[b]:
                pairs.append(
                    {
                        "a": int(a),
                        "b": int(b),
                        "split_a": str(splits[a]),
                        "split_b": str(splits[b]),
                        "distance": int(dist[r, c]),
                    }
                )
    return sorted(pairs, key=lambda p: (p["distance"], p["a"], p["b"]))
