"""Splits: fractions, patient grouping, stratification (multi-label too), leaks, near-duplicates."""

from __future__ import annotations

import warnings

import imagehash
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from medlens.data.splits import (
    SPLIT_NAMES,
    _phash_bits,
    assign_splits,
    check_patient_leakage,
    near_duplicates,
)
from medlens.errors import ConfigError, DataError

FRACTIONS = dict(zip(SPLIT_NAMES, (0.8, 0.1, 0.1), strict=True))


def _patients(n_patients=400, minority=0.1, seed=0):
    """~2000 images of 400 patients (1 to 9 images each); a patient's images share a class."""
    rng = np.random.default_rng(seed)
    pat = np.repeat(np.arange(n_patients), rng.integers(1, 10, n_patients))
    lab = (rng.random(n_patients) < minority).astype(int)[pat]
    return lab, np.array([f"P{p:04d}" for p in pat])


def _one_split_per_patient(splits, patients) -> bool:
    return all(len(set(splits[patients == p])) == 1 for p in np.unique(patients))


def test_patient_level_fractions_and_binary_stratification():
    lab, pat = _patients()
    assert 1900 < len(lab) < 2100
    s = assign_splits(lab, pat, seed=0)
    assert s.shape == lab.shape and set(s) == set(SPLIT_NAMES)
    check_patient_leakage(s, pat)
    assert _one_split_per_patient(s, pat)
    for name, frac in FRACTIONS.items():
        assert abs((s == name).mean() - frac) <= 0.02
        assert abs(lab[s == name].mean() - lab.mean()) <= 0.03  # the 10% minority


def test_other_fractions_and_row_order():
    lab, pat = _patients(seed=1)
    s = assign_splits(lab, pat, fractions=(0.6, 0.25, 0.15), seed=0)
    for name, frac in zip(SPLIT_NAMES, (0.6, 0.25, 0.15), strict=True):
        assert abs((s == name).mean() - frac) <= 0.02
    # unnormalised fractions are normalised
    assert (assign_splits(lab, pat, fractions=(6, 2.5, 1.5), seed=0) == s).all()
    # MedMNIST's (N, 1) labels are class indices
    assert (assign_splits(lab[:, None], pat, fractions=(0.6, 0.25, 0.15), seed=0) == s).all()


def test_multiclass_with_mixed_patients():
    # patients of 1-11 images, mostly one class but 10% of images of any class; the rule that
    # only looks at a patient's rarest label overfills the common classes here (14 points)
    rng = np.random.default_rng(2)
    per = rng.integers(1, 12, 500)
    pat = np.repeat(np.arange(500), per)
    y = rng.choice(6, 500, p=[0.5, 0.2, 0.12, 0.1, 0.05, 0.03])[pat]
    flip = rng.random(len(y)) < 0.1
    y[flip] = rng.integers(0, 6, flip.sum())
    s = assign_splits(y, pat, seed=0)
    check_patient_leakage(s, pat)
    overall = np.bincount(y, minlength=6) / len(y)
    for name, frac in FRACTIONS.items():
        assert abs((s == name).mean() - frac) <= 0.02
        share = np.bincount(y[s == name], minlength=6) / (s == name).sum()
        assert np.abs(share - overall).max() <= 0.03


@pytest.mark.parametrize("with_patients", [False, True])
def test_multilabel_rates_are_kept(with_patients):
    rng = np.random.default_rng(1)
    rates = np.array([0.05, 0.1, 0.2, 0.3, 0.4])
    if with_patients:  # 600 patients, 1-6 images, labels mostly shared within a patient
        pat = np.repeat(np.arange(600), rng.integers(1, 7, 600))
        base = rng.random((600, 5)) < rates
        y = (base[pat] & (rng.random((len(pat), 5)) < 0.9)).astype(int)
    else:
        pat = None
        y = (rng.random((2000, 5)) < rates).astype(int)
    s = assign_splits(y, pat, seed=0)
    if pat is not None:
        check_patient_leakage(s, pat)
    for name, frac in FRACTIONS.items():
        assert abs((s == name).mean() - frac) <= 0.02
        assert np.abs(y[s == name].mean(0) - y.mean(0)).max() <= 0.04


def test_deterministic_for_a_seed():
    lab, pat = _patients()
    a = assign_splits(lab, pat, seed=3)
    assert (assign_splits(lab, pat, seed=3) == a).all()
    b = assign_splits(lab, pat, seed=4)
    assert (b != a).mean() > 0.1  # a different seed, a different split
    # the same patients in another row order land in the same splits
    perm = np.random.default_rng(0).permutation(len(lab))
    assert (assign_splits(lab[perm], pat[perm], seed=3) == a[perm]).all()


def test_too_few_patients_and_the_smallest_workable_case():
    with pytest.raises(DataError, match="only 9 patients: too few for train, val and test"):
        assign_splits(np.arange(18) % 2, np.repeat(np.arange(9), 2))
    with pytest.raises(DataError, match="only 4 images"):
        assign_splits(np.array([0, 1, 0, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one patient in val and test: a class misses out
        s = assign_splits(np.arange(10) % 2, np.arange(10), seed=0)
        assert all((s == name).sum() >= 1 for name in SPLIT_NAMES)
        s = assign_splits(np.arange(10) % 2, fractions=(0.98, 0.01, 0.01))
        assert all((s == name).sum() >= 1 for name in SPLIT_NAMES)


def test_rare_class_goes_to_train_with_a_warning():
    rng = np.random.default_rng(5)
    labels = np.concatenate([rng.integers(0, 2, 300), [2, 2, 2]])  # class 2: three patients
    patients = np.concatenate([np.arange(300), [300, 300, 301]])
    with pytest.warns(UserWarning, match="label 2 has 2 patient"):
        s = assign_splits(labels, patients, seed=0)
    assert (s[labels == 2] == "train").all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about with enough patients
        assign_splits(rng.integers(0, 2, 300), seed=0)


def test_bad_inputs():
    lab, pat = _patients()
    with pytest.raises(ConfigError, match="three positive numbers"):
        assign_splits(lab, pat, fractions=(0.9, 0.1, 0.0))
    with pytest.raises(ConfigError, match="three positive numbers"):
        assign_splits(lab, pat, fractions=(0.9, 0.1))
    with pytest.raises(DataError, match="patient ids for"):
        assign_splits(lab, pat[:-1])
    with pytest.raises(DataError, match="negative class label -1 in row 3"):
        assign_splits(np.array([0, 1, 0, -1] * 5))
    with pytest.raises(DataError, match="row 2 is"):
        assign_splits(np.array([[0, 1], [1, 0], [2, 0]] * 5))
    missing = pat.astype(object)
    missing[7] = None
    with pytest.raises(DataError, match="no patient id.*rows 7"):
        assign_splits(lab, missing)


def test_leak_check_names_patients_and_splits():
    check_patient_leakage(np.array(["train", "train", "val"]), np.array(["a", "a", "b"]))
    with pytest.raises(DataError, match=r"1 patient\(s\).*p7 in train/test.*drop it"):
        check_patient_leakage(np.array(["test", "train", "val"]), np.array(["p7", "p7", "p8"]))
    splits = np.array(["train", "val"] * 8)
    patients = np.repeat([f"id{i}" for i in range(8)], 2)
    with pytest.raises(DataError, match=r"8 patient\(s\).*id0 in train/val;.* and 3 more") as e:
        check_patient_leakage(splits, patients)
    assert "id4" in str(e.value) and "id5" not in str(e.value)  # five named
    with pytest.raises(DataError, match="one split and one patient id per image"):
        check_patient_leakage(splits, patients[:-1])


# --- near-duplicates -------------------------------------------------------------------------


def _smooth_images(n, rng, size=32):
    """Natural-looking gray images: blurred noise stretched to 0..255, as (1, H, W) uint8."""
    out = []
    for _ in range(n):
        t = gaussian_filter(rng.normal(size=(size, size)), 2)
        out.append(((t - t.min()) / (t.max() - t.min()) * 255).astype(np.uint8)[None])
    return out


def test_near_duplicates_across_splits_only():
    rng = np.random.default_rng(2)
    images = _smooth_images(300, rng)
    splits = np.array(["train"] * 250 + ["test"] * 50)
    images[260] = images[3].copy()  # identical, across splits
    noisy = images[5].astype(int) + rng.integers(-6, 7, images[5].shape)
    images[270] = np.clip(noisy, 0, 255).astype(np.uint8)  # slightly noised, across splits
    images[100] = images[6].copy()  # identical, but both in train: not a leak
    pairs = near_duplicates(images, splits)
    assert [(p["a"], p["b"]) for p in pairs] == [(3, 260), (5, 270)]
    assert pairs[0] == {"a": 3, "b": 260, "split_a": "train", "split_b": "test", "distance": 0}
    assert pairs[1]["distance"] <= 4 and not np.array_equal(images[5], images[270])
    # the order of splits does not matter, and pure-noise images are never close
    flipped = near_duplicates(images, np.where(splits == "train", "test", "train"))
    assert [(p["a"], p["b"], p["split_a"]) for p in flipped] == [(3, 260, "test"), (5, 270, "test")]
    noise = [rng.integers(0, 256, (1, 28, 28), dtype=np.uint8) for _ in range(400)]
    assert near_duplicates(noise, rng.choice(list(SPLIT_NAMES), 400)) == []


def test_phash_matches_imagehash_and_handles_volumes_and_colour():
    rng = np.random.default_rng(3)
    images = _smooth_images(20, rng, 40)
    images += [rng.integers(0, 256, (3, 30, 50), dtype=np.uint8) for _ in range(5)]
    images += [rng.integers(0, 256, (1, 7, 24, 24), dtype=np.uint8) for _ in range(5)]
    images.append(np.zeros((1, 16, 16), np.uint8))
    planes = [im[0] if im.ndim == 3 else im[0, im.shape[1] // 2] for im in images]
    for hash_size in (8, 16):
        ours = _phash_bits(images, hash_size)
        ref = [imagehash.phash(Image.fromarray(p), hash_size=hash_size).hash for p in planes]
        assert (ours == np.stack(ref).reshape(len(images), -1)).all()
    # a volume whose middle slice matches a 2D image is its duplicate
    vol = np.stack([images[1][0] // 2, images[0][0], images[2][0]])[None]
    pairs = near_duplicates([images[0], vol], np.array(["train", "val"]))
    assert pairs == [{"a": 0, "b": 1, "split_a": "train", "split_b": "val", "distance": 0}]
    with pytest.raises(DataError, match="dtype float32"):
        near_duplicates([np.zeros((1, 8, 8), np.float32)] * 2, np.array(["train", "val"]))
    with pytest.raises(DataError, match="one split per image"):
        near_duplicates(images, np.array(["train"]))


@pytest.mark.parametrize(
    ("hash_size", "max_distance", "popcount"),
    [(8, 14, "numpy"), (16, 80, "numpy"), (16, 80, "table")],
)
def test_near_duplicates_match_brute_force(hash_size, max_distance, popcount, monkeypatch):
    if popcount == "table":  # numpy < 2.0 has no bitwise_count
        monkeypatch.delattr(np, "bitwise_count", raising=False)
    rng = np.random.default_rng(4)
    images = _smooth_images(200, rng, 24)
    for k in range(30):  # noisy copies at growing noise levels
        noisy = images[k].astype(int) + rng.integers(-2 * k, 2 * k + 1, images[k].shape)
        images[100 + k] = np.clip(noisy, 0, 255).astype(np.uint8)
    splits = rng.choice(["train", "val", "test"], 200)
    bits = _phash_bits(images, hash_size)
    dist = (bits[:, None, :] != bits[None, :, :]).sum(2)
    a, b = np.nonzero(np.triu(dist <= max_distance, 1) & (splits[:, None] != splits[None, :]))
    expected = sorted(zip(dist[a, b].tolist(), a.tolist(), b.tolist(), strict=True))
    got = near_duplicates(images, splits, max_distance=max_distance, hash_size=hash_size)
    assert [(p["distance"], p["a"], p["b"]) for p in got] == expected
    assert len(expected) >= 5


def test_near_duplicates_of_5000_images_match_brute_force_across_blocks():
    """At this size each split meets the others in several blocks of about a million pairs:
    every planted copy is found whichever block it falls in (the first and last rows of a
    block included), pairs within a split are not reported, and at a loose threshold every pair
    matches a brute-force count of differing hash bits (timing:
    benchmarks/near_duplicates_speed.py)."""
    rng = np.random.default_rng(5)
    images = list(rng.integers(0, 256, (5000, 1, 28, 28), dtype=np.uint8))
    splits = np.array(["train"] * 4000 + ["val"] * 500 + ["test"] * 500)
    # splits in name order: the 500 test rows meet the 4,500 others 233 rows at a time (rows
    # 4732 | 4733 end and start a block), the train rows meet val 2,097 at a time (2096 | 2097)
    planted = [(0, 4999), (1000, 4732), (3999, 4733), (2096, 4200), (2097, 4300), (4100, 4900)]
    for a, b in planted:
        images[b] = images[a].copy()
    images[20] = images[10].copy()  # both in train: no leak
    pairs = near_duplicates(images, splits)
    assert [(p["a"], p["b"], p["distance"]) for p in pairs] == [
        (a, b, 0) for a, b in sorted(planted)
    ]
    assert pairs[0]["split_a"] == "train" and pairs[0]["split_b"] == "test"

    bits = _phash_bits(images, 8).astype(np.float32)  # (5000, 64), 0/1
    agree = bits @ bits.T + (1 - bits) @ (1 - bits).T  # matching bits of every pair
    dist = np.rint(64 - agree).astype(int)
    a, b = np.nonzero(np.triu(dist <= 18, 1) & (splits[:, None] != splits[None, :]))
    expected = sorted(zip(dist[a, b].tolist(), a.tolist(), b.tolist(), strict=True))
    got = near_duplicates(images, splits, max_distance=18)
    assert [(p["distance"], p["a"], p["b"]) for p in got] == expected
    met = {(str(splits[i]), str(splits[j])) for _, i, j in expected}
    assert len(expected) > 500 and met == {("train", "val"), ("train", "test"), ("val", "test")}
