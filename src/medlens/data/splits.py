"""Splits that cannot leak: patient-level stratified assignment, leak checks, near-duplicates.

>>> labels = np.repeat([0, 1] * 10, 3)  # 20 patients with 3 images each
>>> patients = np.repeat(np.arange(20), 3)
>>> splits = assign_splits(labels, patients, fractions=(0.8, 0.1, 0.1), seed=0)
>>> [int((splits == s).sum()) for s in SPLIT_NAMES]
[48, 6, 6]
>>> check_patient_leakage(splits, patients)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from medlens.errors import ConfigError, DataError

SPLIT_NAMES = ("train", "val", "test")
MIN_GROUPS = 10  # fewer patients than this cannot fill train, val and test sensibly

# popcount of every byte, for numpy < 2.0 (which has no np.bitwise_count)
_POPCOUNT8 = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1, dtype=np.uint8)


def _group_ids(patients: np.ndarray | Sequence | None, n: int) -> np.ndarray:
    """Patient ids -> group index per image (sorted ids, so row order does not matter)."""
    if patients is None:
        return np.arange(n)
    ids = np.asarray(patients)
    if ids.shape != (n,):
        raise DataError(
            f"{ids.shape[0] if ids.ndim else 0} patient ids for {n} images",
            hint="give one patient id per image",
        )
    if ids.dtype.kind in "fO":
        import pandas as pd

        missing = np.flatnonzero(pd.isna(ids))
        if len(missing):
            rows = ", ".join(str(i) for i in missing[:5])
            raise DataError(
                f"{len(missing)} image(s) have no patient id (rows {rows})",
                hint="fill in the patient ids, or drop the patient column to split by image",
            )
        ids = ids.astype(str)  # mixed ints and strings cannot be sorted together
    return np.unique(ids, return_inverse=True)[1].ravel()


def link_groups(*keys: np.ndarray | None) -> np.ndarray:
    """One group index per image: images that share a value of any key (a patient id, a hash
    of the pixels) are one group, transitively. None keys are left out.

    >>> link_groups(np.array(["p1", "p1", "p2", "p3"]), np.array([b"a", b"b", b"b", b"c"]))
    array([0, 0, 0, 1], dtype=int32)
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    given = [np.asarray(k) for k in keys if k is not None]
    if not given:
        return np.zeros(0, np.int32)
    n = len(given[0])
    # a bipartite graph: image i -- node of each of its key values
    rows, cols, offset = [], [], n
    for key in given:
        inverse = np.unique(key, return_inverse=True)[1].ravel()
        rows.append(np.arange(n))
        cols.append(offset + inverse)
        offset += int(inverse.max(initial=-1)) + 1
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(offset, offset))
    labels = connected_components(graph, directed=False)[1][:n]
    return np.unique(labels, return_inverse=True)[1].ravel().astype(np.int32)


def _label_matrix(labels: np.ndarray) -> np.ndarray:
    """(N,) class indices or (N, K) 0/1 -> (N, K) 0/1 indicator matrix."""
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # MedMNIST's (N, 1) class indices
    if y.ndim == 1:
        if y.size and not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
            raise DataError("class labels must be whole numbers", hint="use class indices 0..K-1")
        y = y.astype(np.int64)
        if y.size and y.min() < 0:
            row = int(np.argmin(y))
            raise DataError(f"negative class label {y[row]} in row {row}", hint="use 0..K-1")
        onehot = np.zeros((len(y), int(y.max(initial=0)) + 1), dtype=np.int64)
        onehot[np.arange(len(y)), y] = 1
        return onehot
    if y.ndim == 2:
        bad = np.flatnonzero(~np.isin(y, (0, 1)).all(axis=1))
        if len(bad):
            raise DataError(
                f"multi-label rows must hold 0/1 values; row {bad[0]} is {y[bad[0]].tolist()}",
                hint="use one 0/1 column per label",
            )
        return y.astype(np.int64)
    raise DataError(f"labels of shape {y.shape}", hint="give (N,) class indices or (N, K) 0/1")


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or not (np.isfinite(frac).all() and (frac > 0).all()):
        raise ConfigError(
            f"split fractions {tuple(fractions)} are not three positive numbers",
            hint="e.g. (0.8, 0.1, 0.1) for train, val, test",
        )
    return frac / frac.sum()


def assign_splits(
    labels: np.ndarray,
    patients: np.ndarray | None = None,
    *,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> np.ndarray:
    """``"train"``/``"val"``/``"test"`` per image: every patient in one split, labels stratified.

    ``labels`` are (N,) class indices (or MedMNIST's (N, 1)) or (N, K) 0/1 columns
    (multi-label); ``patients`` are (N,) ids, or None to treat every image as its own patient.
    Fractions count images. Deterministic for a seed; every split gets at least one patient.

    A greedy iterative stratification of patients (after Sechidis, Tsoumakas & Vlahavas,
    ECML 2011), one algorithm for single- and multi-label tasks (a class index is a one-hot
    row): scikit-learn has no multi-label group stratifier, and its StratifiedGroupKFold
    reaches fractions such as 0.7/0.15/0.15 only approximately, through equal folds.

    - Order: largest patients first, so the small ones fine-tune the end (the decreasing
      rule of bin packing); among equal sizes, Sechidis' order: patients whose rarest label
      is rarest first; then at random (the seed).
    - Choice: each patient goes to the split where it most reduces the chi-square distance
      ``sum((placed - target)**2 / target)`` over every label and the image count. Sechidis'
      rule (the split lacking most of the patient's rarest label) is exact for one label per
      image, but a patient with a few rare and many common images overfills the common
      classes: 14 points off on mixed patients where this rule stays within 1.
    - Labels with no patient in train get their smallest patient moved there, so a class
      with fewer patients than splits trains; a UserWarning names labels missing from val or
      test.
    """
    y = _label_matrix(labels)
    frac = _check_fractions(fractions)
    inverse = _group_ids(patients, len(y))
    n_groups = int(inverse.max()) + 1 if len(y) else 0
    if n_groups < MIN_GROUPS:
        who = "patients" if patients is not None else "images"
        raise DataError(
            f"only {n_groups} {who}: too few for train, val and test splits "
            f"(at least {MIN_GROUPS} needed)",
            hint="add data, or give your own split column",
        )
    counts, assigned = _stratify(y, inverse, frac, np.random.default_rng(seed))
    _warn_missing_labels(counts, assigned)
    return np.asarray(SPLIT_NAMES)[assigned[inverse]]


def carve_split(
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    fraction: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """True for the images that leave a training set to become its validation split.

    The same stratification as :func:`assign_splits`, with two splits: ``fraction`` of the
    images (every group, a patient or a set of identical images, whole), per class or label as
    close to ``fraction`` as whole groups allow. Every label keeps a group in train.

    >>> val = carve_split(np.repeat([0, 1], [60, 40]), fraction=0.1, seed=0)
    >>> int(val.sum()), int(val[:60].sum())
    (10, 6)
    """
    if not 0 < fraction < 1:
        raise ConfigError(f"val_fraction {fraction} is not between 0 and 1", hint="e.g. 0.1")
    y = _label_matrix(labels)
    inverse = _group_ids(groups, len(y))
    n_groups = int(inverse.max()) + 1 if len(y) else 0
    if n_groups < 2:
        raise DataError(
            f"only {n_groups} group(s) of training images: too few to carve a validation split",
            hint="add training images, or give a val split",
        )
    frac = np.array([1.0 - fraction, fraction])
    _, assigned = _stratify(y, inverse, frac, np.random.default_rng(seed))
    return assigned[inverse] == 1


def assign_folds(
    labels: np.ndarray, groups: np.ndarray | None = None, *, k: int, seed: int = 0
) -> np.ndarray:
    """The cross-validation fold (0..k-1) of every image: the stratification of
    :func:`assign_splits` with ``k`` equal parts, every group (a patient, a set of identical
    images) in one fold. Every fold gets each class that has at least ``k`` groups.

    >>> folds = assign_folds(np.repeat([0, 1], [60, 40]), k=5, seed=0)
    >>> np.bincount(folds).tolist(), np.bincount(folds[:60]).tolist()
    ([20, 20, 20, 20, 20], [12, 12, 12, 12, 12])
    """
    if k < 2:
        raise ConfigError(f"{k} fold(s): cross-validation needs at least 2", hint="e.g. --folds 5")
    y = _label_matrix(labels)
    inverse = _group_ids(groups, len(y))
    n_groups = int(inverse.max()) + 1 if len(y) else 0
    if n_groups < k:
        raise DataError(
            f"only {n_groups} group(s) of images for {k} folds",
            hint=f"use --folds {max(2, n_groups)} or fewer",
        )
    # no split plays "train" here: _stratify's move of a lone label into split 0 never fires
    # for labels with at least k groups, which fold_counts checks before
    _, assigned = _stratify(y, inverse, np.full(k, 1.0 / k), np.random.default_rng(seed))
    return assigned[inverse]


def groups_per_label(labels: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """(K,) how many groups (patients) hold each class or label.

    >>> groups_per_label(np.array([0, 0, 1, 1]), np.array(["a", "a", "b", "c"])).tolist()
    [1, 2]
    """
    y = _label_matrix(labels)
    inverse = _group_ids(groups, len(y))
    counts = np.zeros((int(inverse.max(initial=-1)) + 1, y.shape[1]), dtype=np.int64)
    np.add.at(counts, inverse, y)
    return (counts > 0).sum(0)


def _stratify(
    y: np.ndarray, inverse: np.ndarray, frac: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(positives per group and label, split index per group) for
    ``len(frac)`` splits, split 0 the training one; see :func:`assign_splits`."""
    n_groups, n_splits = int(inverse.max()) + 1, len(frac)
    counts = np.zeros((n_groups, y.shape[1]), dtype=np.int64)
    np.add.at(counts, inverse, y)  # positives per patient and label
    sizes = np.bincount(inverse, minlength=n_groups)

    patients_per_label = (counts > 0).sum(0)
    rarest = np.where(counts > 0, patients_per_label[None, :], n_groups + 1).min(1)
    order = np.lexsort((rng.random(n_groups), rarest, -sizes))

    # columns: every label, then the image count; targets and 1/target per split
    feats = np.concatenate([counts, sizes[:, None]], axis=1)
    target = frac[:, None] * feats.sum(0)[None, :]
    inv_target = np.divide(1.0, target, out=np.zeros_like(target), where=target > 0)
    # Each choice changes the next, so the loop is sequential; it runs on Python lists of
    # each patient's nonzero columns, a few microseconds per patient (100,000 in ~0.5 s).
    rows, cols = np.nonzero(feats)
    starts = np.searchsorted(rows, np.arange(n_groups + 1)).tolist()
    cols_l, vals_l = cols.tolist(), feats[rows, cols].astype(float).tolist()
    need, inv = target.tolist(), inv_target.tolist()  # need: target minus placed, (S, K+1)
    coins = rng.random(n_groups).tolist()
    assigned = np.full(n_groups, -1, dtype=np.int64)
    for g in order.tolist():
        idx, val = cols_l[starts[g] : starts[g + 1]], vals_l[starts[g] : starts[g + 1]]
        # change of sum((placed - target)^2 / target) when the patient's counts v are added
        cost = [
            sum(v * (v - 2.0 * need_s[j]) * inv_s[j] for j, v in zip(idx, val, strict=True))
            for need_s, inv_s in zip(need, inv, strict=True)
        ]
        low = min(cost)
        cands = [s for s in range(n_splits) if cost[s] <= low + 1e-9 * abs(low)]
        best = cands[int(coins[g] * len(cands))]
        for j, v in zip(idx, val, strict=True):
            need[best][j] -= v
        assigned[g] = best
    _every_label_in_train(assigned, counts, sizes)
    _ensure_nonempty(assigned, counts, sizes, n_splits)
    return counts, assigned


def _every_label_in_train(assigned: np.ndarray, counts: np.ndarray, sizes: np.ndarray) -> None:
    """A label without a patient in train gets its smallest patient moved there."""
    for k in np.flatnonzero((counts > 0).any(0)):
        has_k = counts[:, k] > 0
        if not (has_k & (assigned == 0)).any():
            cands = np.flatnonzero(has_k)
            assigned[cands[np.argmin(sizes[cands])]] = 0


def _ensure_nonempty(
    assigned: np.ndarray, counts: np.ndarray, sizes: np.ndarray, n_splits: int
) -> None:
    """Give an empty split the smallest patient of the largest split (extreme fractions),
    preferring one whose labels all stay in train."""
    for split in range(n_splits):
        if (assigned == split).any():
            continue
        donor = int(np.argmax(np.bincount(assigned, weights=sizes, minlength=n_splits)))
        cands = np.flatnonzero(assigned == donor)
        if donor == 0:
            in_train = (counts[cands] > 0).sum(0)  # train patients per label
            safe = cands[((counts[cands] > 0) & (in_train == 1)).sum(1) == 0]
            cands = safe if len(safe) else cands
        assigned[cands[np.argmin(sizes[cands])]] = split


def _warn_missing_labels(counts: np.ndarray, assigned: np.ndarray) -> None:
    present = np.stack([counts[assigned == s].sum(0) > 0 for s in range(3)])  # (3, K)
    groups = (counts > 0).sum(0)
    missing = []
    for k in np.flatnonzero((groups > 0) & ~present[1:].all(0)):
        absent = " or ".join(SPLIT_NAMES[s] for s in (1, 2) if not present[s, k])
        missing.append(f"label {k} has {groups[k]} patient(s), none in {absent}")
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        warnings.warn(
            "too few patients to stratify every label: " + "; ".join(missing[:5]) + more,
            UserWarning,
            stacklevel=3,
        )


def check_patient_leakage(splits: np.ndarray, patients: np.ndarray) -> None:
    """DataError if a patient has images in more than one split, naming up to five of them."""
    splits, ids = np.asarray(splits).astype(str), np.asarray(patients)
    if splits.shape != ids.shape or splits.ndim != 1:
        raise DataError(
            f"{splits.size} split values for {ids.size} patient ids",
            hint="give one split and one patient id per image",
        )
    if ids.dtype.kind in "fO":
        import pandas as pd

        keep = ~pd.isna(ids)  # images without a patient id cannot leak a patient
        splits, ids = splits[keep], ids[keep].astype(str)
    pid_names, pid = np.unique(ids, return_inverse=True)
    split_names, sid = np.unique(splits, return_inverse=True)
    pairs = np.unique(pid.ravel() * len(split_names) + sid.ravel())  # distinct (patient, split)
    per_patient = np.bincount(pairs // len(split_names), minlength=len(pid_names))
    leaking = np.flatnonzero(per_patient > 1)
    if not len(leaking):
        return
    rank = {name: i for i, name in enumerate(SPLIT_NAMES)}
    shown = []
    for p in leaking[:5]:
        names = split_names[pairs[pairs // len(split_names) == p] % len(split_names)]
        names = sorted(names.tolist(), key=lambda s: (rank.get(s, 3), s))
        shown.append(f"{pid_names[p]} in {'/'.join(names)}")
    more = f" and {len(leaking) - 5} more" if len(leaking) > 5 else ""
    raise DataError(
        f"{len(leaking)} patient(s) have images in more than one split: " + "; ".join(shown) + more,
        hint="fix the split column so each patient is in one split, or drop it to let "
        "medlens split by patient",
    )


def earlier_copies(hashes: np.ndarray, splits: np.ndarray) -> np.ndarray:
    """For each image, the index of an identical image (same hash) in an earlier split (train
    before val before test), or -1: the copies that ``--drop-duplicates`` drops.

    >>> earlier_copies(np.array([b"a", b"b", b"a", b"b"]), np.repeat(["train", "test"], 2))
    array([-1, -1,  0,  1])
    """
    hashes, splits = np.asarray(hashes), np.asarray(splits).astype(str)
    if hashes.shape != splits.shape:
        raise DataError(f"{splits.size} split values for {hashes.size} image hashes")
    rank = np.array([SPLIT_NAMES.index(s) if s in SPLIT_NAMES else 3 for s in splits])
    inverse = np.unique(hashes, return_inverse=True)[1].ravel()
    order = np.lexsort((np.arange(len(rank)), rank, inverse))  # per hash: earliest split first
    first = np.empty(int(inverse.max(initial=-1)) + 1, np.int64)
    first[inverse[order[::-1]]] = order[::-1]  # the last write per hash is its first image
    partner = first[inverse]
    return np.where(rank > rank[partner], partner, -1)


def _phash_bits(images: Sequence[np.ndarray], hash_size: int) -> np.ndarray:
    """imagehash.phash of every image's first channel (a volume's middle slice), as bits.

    Bit for bit what ``imagehash.phash(Image.fromarray(plane), hash_size).hash`` gives, about
    three times faster: the PIL round trip uses raw bytes, and the DCTs run on blocks of
    images at once (the same scipy transforms in the same order, skipping the rows that the
    hash drops after the first one).
    """
    from PIL import Image
    from scipy.fft import dct

    side = hash_size * 4  # imagehash's highfreq_factor
    lanczos = getattr(Image, "Resampling", Image).LANCZOS  # imagehash's ANTIALIAS
    bits = np.empty((len(images), hash_size * hash_size), dtype=bool)
    chunk = 4096
    small = np.empty((min(chunk, len(images)), side * side), dtype=np.uint8)
    for start in range(0, len(images), chunk):
        stop = min(start + chunk, len(images))
        for i in range(start, stop):
            plane = _hash_plane(images[i], i)
            pil = Image.frombytes("L", (plane.shape[1], plane.shape[0]), plane.tobytes())
            small[i - start] = np.frombuffer(pil.resize((side, side), lanczos).tobytes(), np.uint8)
        pixels = small[: stop - start].reshape(-1, side, side).astype(np.float64)
        low = dct(dct(pixels, axis=1)[:, :hash_size, :], axis=2)[:, :, :hash_size]
        low = low.reshape(stop - start, -1)
        bits[start:stop] = low > np.median(low, axis=1, keepdims=True)
    return bits


def _hash_plane(image: np.ndarray, i: int) -> np.ndarray:
    """The 2D uint8 plane that is hashed: first channel, middle slice of a volume."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise DataError(f"image {i} has dtype {arr.dtype}", hint="give uint8 images (0-255)")
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3:
        return arr[0]  # (C, H, W)
    if arr.ndim == 4:
        return arr[0, arr.shape[1] // 2]  # (C, D, H, W)
    raise DataError(
        f"image {i} has shape {arr.shape}", hint="give (C, H, W) images or (C, D, H, W) volumes"
    )


def _pair_distances(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Hamming distances, (n, m), between hashes packed as uint64 words: (n, w) and (m, w)."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0: the CPU's popcount instruction
        count = np.bitwise_count
    else:  # a table of each byte's set bits, summed over a word's 8 bytes

        def count(w: np.ndarray) -> np.ndarray:
            return _POPCOUNT8[w[..., None].view(np.uint8)].sum(-1, dtype=np.uint8)

    # one 2D XOR per word: a trailing word axis of length 1 makes numpy ~4x slower
    dist = count(rows[:, None, 0] ^ cols[None, :, 0])
    if rows.shape[1] > 1:
        dist = dist.astype(np.uint16)  # more than 255 bits
        for w in range(1, rows.shape[1]):
            dist += count(rows[:, None, w] ^ cols[None, :, w])
    return dist


def near_duplicates(
    images: Sequence[np.ndarray],
    splits: np.ndarray,
    *,
    max_distance: int = 4,
    hash_size: int = 8,
) -> list[dict]:
    """Pairs of near-identical images (perceptual hash) that sit in different splits.

    ``images`` are uint8, channel-first (C, H, W) or (C, D, H, W) (the middle slice is hashed);
    only their first channel counts. A pair is reported when the Hamming distance of the
    phashes is at most ``max_distance`` (of ``hash_size**2`` bits) and the two images are in
    different splits: ``{"a", "b", "split_a", "split_b", "distance"}`` with ``a < b``, sorted by
    distance, then ``a``, then ``b``. Only pairs across splits are compared, in blocks of about
    a million pairs (XOR and popcount on 64-bit words): 50,000 images take seconds.
    """
    splits = np.asarray(splits).astype(str)
    if splits.shape != (len(images),):
        raise DataError(
            f"{splits.size} split values for {len(images)} images",
            hint="give one split per image",
        )
    if hash_size < 2:
        raise ConfigError(f"hash_size must be at least 2, got {hash_size}")
    if len(images) < 2:
        return []
    bits = _phash_bits(images, hash_size)
    n_words = -(-bits.shape[1] // 64)
    padded = np.zeros((len(bits), n_words * 64), dtype=bool)
    padded[:, : bits.shape[1]] = bits
    words = np.packbits(padded, axis=1).view(np.uint64)  # (N, n_words)

    names, sid = np.unique(splits, return_inverse=True)
    members = [np.flatnonzero(sid == s) for s in range(len(names))]
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for s in range(len(names) - 1):
        rows, cols = members[s], np.concatenate(members[s + 1 :])  # other splits only
        col_words = words[cols]
        block = max(1, (1 << 20) // len(cols))  # ~1M pairs: temporaries stay in the CPU cache
        for start in range(0, len(rows), block):
            r = rows[start : start + block]
            dist = _pair_distances(words[r], col_words)
            close = dist <= max_distance
            if close.any():
                i, j = np.nonzero(close)
                found.append((r[i], cols[j], dist[i, j]))
    if not found:
        return []
    a, b, d = (np.concatenate(x) for x in zip(*found, strict=True))
    a, b, d = np.minimum(a, b), np.maximum(a, b), d.astype(np.int64)
    order = np.lexsort((b, a, d))
    return [
        {
            "a": int(a[o]),
            "b": int(b[o]),
            "split_a": str(splits[a[o]]),
            "split_b": str(splits[b[o]]),
            "distance": int(d[o]),
        }
        for o in order
    ]
