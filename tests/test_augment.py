"""Batched augmentation: exact flips and turns, identity when off, reproducible from the seed."""

from __future__ import annotations

import numpy as np
import torch

from medlens.config import AugmentConfig
from medlens.data.augment import augment_batch
from medlens.data.loader import DeviceArrays


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_flips_and_quarter_turns_are_exact_and_both_happen():
    x = torch.rand(200, 1, 28, 28)
    y = augment_batch(x, AugmentConfig(hflip=True, vflip=True, rot90=True), _gen())
    found = set()
    for i in range(len(x)):
        for k in range(4):
            for fh in (False, True):
                for fv in (False, True):
                    ref = torch.rot90(x[i], k, (-2, -1))
                    ref = ref.flip(-1) if fh else ref
                    ref = ref.flip(-2) if fv else ref
                    if torch.allclose(y[i], ref, atol=1e-5):
                        found.add(i)
    assert len(found) == len(x)
    unchanged = sum(torch.allclose(y[i], x[i], atol=1e-5) for i in range(len(x)))
    assert 0 < unchanged < len(x) // 2


def test_probability_zero_and_empty_config_leave_images_alone():
    x = torch.rand(16, 3, 28, 28)
    full = AugmentConfig(
        hflip=True,
        rotate_deg=30,
        scale=(0.8, 1.2),
        translate=0.1,
        brightness=0.2,
        contrast=0.2,
        p=0.0,
    )
    assert torch.allclose(augment_batch(x, full, _gen()), x, atol=1e-5)
    assert torch.equal(augment_batch(x, AugmentConfig(), _gen()), x)


def test_same_seed_same_batch_other_seed_other_batch():
    x = torch.rand(8, 1, 28, 28)
    cfg = AugmentConfig(rotate_deg=20, scale=(0.9, 1.1), translate=0.1, contrast=0.2)
    assert torch.equal(augment_batch(x, cfg, _gen(3)), augment_batch(x, cfg, _gen(3)))
    assert not torch.equal(augment_batch(x, cfg, _gen(3)), augment_batch(x, cfg, _gen(4)))


def test_brightness_shifts_stay_within_their_range():
    x = torch.full((500, 1, 8, 8), 0.5)
    y = augment_batch(x, AugmentConfig(brightness=0.1), _gen())
    shift = (y - x).mean(dim=(1, 2, 3))
    assert shift.abs().max() <= 0.1 + 1e-6
    assert shift.std() > 0.04  # uniform on [-0.1, 0.1] has std 0.058


def test_rotation_keeps_the_centre_of_mass():
    x = torch.zeros(32, 1, 29, 29)
    x[:, :, 12:17, 12:17] = 1.0  # a centred square
    y = augment_batch(x, AugmentConfig(rotate_deg=45), _gen())
    grid = torch.arange(29.0)
    com = (y[:, 0].sum(1) * grid).sum(1) / y[:, 0].sum((1, 2))
    assert torch.allclose(com, torch.full_like(com, 14.0), atol=0.05)


def test_volumes_are_augmented_with_their_shape():
    v = torch.rand(4, 1, 10, 12, 12)
    y = augment_batch(
        v, AugmentConfig(hflip=True, rotate_deg=10, scale=(0.9, 1.1), translate=0.1), _gen()
    )
    assert y.shape == v.shape and not torch.equal(y, v)


def test_loader_batches_cover_every_image_once_and_normalise():
    images = np.arange(10 * 4, dtype=np.uint8).reshape(10, 1, 2, 2)
    labels = np.arange(10)
    data = DeviceArrays(images, labels, torch.device("cpu"), mean=[0.5], std=[0.25])
    seen = torch.cat([y for _, y in data.batches(3, shuffle=True, generator=_gen())])
    assert sorted(seen.tolist()) == list(range(10))
    x, _ = next(data.batches(10))
    expected = (torch.from_numpy(images).float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected)
    dropped = list(data.batches(3, shuffle=True, generator=_gen(), drop_last=True))
    assert [len(b[1]) for b in dropped] == [3, 3, 3]
