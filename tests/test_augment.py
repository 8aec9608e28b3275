"""Batched augmentation: exact flips and turns, identity when off, reproducible from the seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
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


def _ramp(n: int, size: int) -> torch.Tensor:
    """Channel 0 holds each pixel centre's x position, channel 1 its y, as fractions of the side."""
    c = (torch.arange(size) + 0.5) / size
    return torch.stack([c.expand(size, size), c[:, None].expand(size, size)]).repeat(n, 1, 1, 1)


def test_random_resized_crop_areas_and_ratios_stay_in_their_ranges():
    x = _ramp(500, 32)
    cfg = AugmentConfig(crop_scale=(0.3, 0.9), crop_ratio=(3 / 4, 4 / 3))
    y = augment_batch(x, cfg, _gen())
    # a ramp's slope between interior pixels is the crop's side fraction along that axis
    fx = (y[:, 0, :, -3] - y[:, 0, :, 2]).mean(1) / (x[0, 0, 0, -3] - x[0, 0, 0, 2])
    fy = (y[:, 1, -3, :] - y[:, 1, 2, :]).mean(1) / (x[0, 1, -3, 0] - x[0, 1, 2, 0])
    area, ratio = fx * fy, fx / fy
    assert 0.3 - 1e-3 <= area.min() < 0.35 and 0.85 < area.max() <= 0.9 + 1e-3
    assert 3 / 4 - 1e-3 <= ratio.min() < 0.8 and 1.25 < ratio.max() <= 4 / 3 + 1e-3
    centre = y[:, 0].mean((1, 2))  # where the crop was taken: both sides of the middle
    assert centre.min() < 0.4 and centre.max() > 0.6
    whole = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    assert torch.allclose(augment_batch(x, whole, _gen()), x, atol=1e-5)


def test_elastic_off_is_identical_and_on_is_bounded_smooth_and_centred():
    x = _ramp(256, 32)
    rotate = AugmentConfig(rotate_deg=10)
    off = AugmentConfig(rotate_deg=10, elastic=0.0, elastic_grid=7)
    assert torch.equal(augment_batch(x, off, _gen()), augment_batch(x, rotate, _gen()))
    y = augment_batch(x, AugmentConfig(elastic=0.05, elastic_grid=4), _gen())
    d = (y - x)[:, :, 3:-3, 3:-3]  # away from the reflected border
    assert 0.03 < d.abs().max() <= 0.05 + 1e-4
    # a B-spline's slope is at most the largest control step, 2 * 0.05 per 31/3 pixels
    assert d.diff(dim=-1).abs().max() < 0.1 * 3 / 31 and d.diff(dim=-2).abs().max() < 0.1 * 3 / 31
    assert d.mean().abs() < 1e-3 and d.abs().mean() > 0.005
    v = torch.rand(4, 1, 9, 10, 11)
    moved = augment_batch(v, AugmentConfig(elastic=0.1, elastic_grid=3), _gen())
    assert moved.shape == v.shape and not torch.allclose(moved, v, atol=1e-3)


def test_gamma_maps_a_constant_into_its_range_both_ways():
    c = 0.4
    y = augment_batch(torch.full((1000, 1, 4, 4), c), AugmentConfig(gamma=0.3), _gen())
    g = torch.log(y[:, 0, 0, 0]) / torch.log(torch.tensor(c))
    assert torch.allclose(y, y[:, :, :1, :1].expand_as(y))  # one gamma per image
    assert math.exp(-0.3) - 1e-4 <= g.min() < math.exp(-0.25)
    assert math.exp(0.25) < g.max() <= math.exp(0.3) + 1e-4
    assert (y < c - 0.02).float().mean() > 0.3 and (y > c + 0.02).float().mean() > 0.3
    assert g.log().mean().abs() < 0.02  # log-uniform around 1


def test_images_left_alone_are_bit_for_bit_and_the_rest_change():
    x = torch.rand(400, 1, 16, 16)
    cfg = AugmentConfig(rotate_deg=10, crop_scale=(0.5, 1.0), elastic=0.05, gamma=0.2, p=0.5)
    y = augment_batch(x, cfg, _gen())
    same = torch.tensor([torch.equal(a, b) for a, b in zip(x, y, strict=True)])
    assert 0.42 < same.float().mean() < 0.58
    assert ((y - x).abs().amax((1, 2, 3))[~same] > 1e-3).all()
    assert torch.equal(y, augment_batch(x, cfg, _gen()))


def test_depth_flips_are_exact():
    x = torch.rand(200, 1, 5, 6, 7)
    y = augment_batch(x, AugmentConfig(dflip=True), _gen())
    flipped = (y - x.flip(-3)).abs().amax((1, 2, 3, 4)) < 1e-5
    kept = (y - x).abs().amax((1, 2, 3, 4)) < 1e-5
    assert (flipped ^ kept).all() and 0.4 < flipped.float().mean() < 0.6


def _cube_turns(v: torch.Tensor) -> list[torch.Tensor]:
    """The 24 rotations of cubes (B, C, D, H, W): each face to the front, then 4 turns."""
    faces = [torch.rot90(v, k, (-3, -2)) for k in range(4)]
    faces += [torch.rot90(v, k, (-3, -1)) for k in (1, 3)]
    return [torch.rot90(f, k, (-2, -1)) for f in faces for k in range(4)]


def test_cube_rotations_are_the_24_exact_voxel_permutations():
    x = torch.rand(480, 1, 5, 5, 5)
    y = augment_batch(x, AugmentConfig(rot90=True), _gen())
    refs = torch.stack(_cube_turns(x))  # (24, B, 1, 5, 5, 5)
    match = (refs - y).abs().amax((2, 3, 4, 5)) < 1e-5
    assert (match.sum(0) == 1).all()  # each is exactly one of 24 distinct rotations
    assert len(set(match.float().argmax(0).tolist())) == 24
    flat = AugmentConfig(rot90=True)  # not a cube: quarter turns in the plane only
    v = torch.rand(200, 1, 4, 6, 6)
    w = augment_batch(v, flat, _gen())
    turns = torch.stack([torch.rot90(v, k, (-2, -1)) for k in range(4)])
    match = (turns - w).abs().amax((2, 3, 4, 5)) < 1e-5
    assert (match.sum(0) == 1).all() and len(set(match.float().argmax(0).tolist())) == 4


def test_volume_rotation_about_every_axis_keeps_the_centre_of_mass():
    size, deg = 21, 30
    grid = torch.arange(size, dtype=torch.float32) - size // 2
    z, yy, xx = torch.meshgrid(grid, grid, grid, indexing="ij")
    blob = torch.exp(-(xx**2 / 18 + yy**2 / 3 + z**2 / 3))  # a bar along x, centred
    out = augment_batch(blob.expand(64, 1, size, size, size), AugmentConfig(rotate_deg=deg), _gen())
    w = out[:, 0] / out[:, 0].sum((1, 2, 3), keepdim=True)
    coords = torch.stack([xx, yy, z])  # (3, D, H, W)
    com = (w[:, None] * coords).sum((2, 3, 4))
    assert com.abs().max() < 0.05
    second = torch.einsum("nzyx,izyx,jzyx->nij", w, coords, coords)
    axis = torch.linalg.eigh(second).eigenvectors[..., -1]  # the bar's direction (x, y, z)
    axis = axis * axis[:, :1].sign()
    azimuth = torch.rad2deg(torch.atan2(axis[:, 1], axis[:, 0]))  # turned about the depth axis
    elevation = torch.rad2deg(torch.asin(axis[:, 2]))  # tilted out of the plane
    assert azimuth.abs().max() > 15 and elevation.abs().max() > 15
    assert (elevation.abs() > 3).float().mean() > 0.5
    # the x axis moves only with the turns about z and y: cos(angle) = cos(a) cos(b)
    bound = math.degrees(math.acos(math.cos(math.radians(deg)) ** 2))
    assert torch.rad2deg(torch.acos(axis[:, 0].clamp(max=1.0))).max() < bound + 1


_EVERYTHING = AugmentConfig(
    hflip=True,
    rotate_deg=15,
    scale=(0.9, 1.1),
    translate=0.05,
    crop_scale=(0.6, 1.0),
    elastic=0.03,
    brightness=0.1,
    contrast=0.1,
    gamma=0.3,
    p=0.8,
)


def _statistics(cfg: AugmentConfig, device: str, seed: int, n: int = 4096) -> dict:
    """Per-image statistics of a batch of one test image (a ramp and an off-centre blob)."""
    size = 24
    c = torch.arange(size, dtype=torch.float32)
    ramp = ((c + 0.5) / size).expand(size, size)
    blob = torch.exp(-((c - 7.0) ** 2 + (c[:, None] - 15.0) ** 2) / 8)
    x = torch.stack([ramp, blob]).expand(n, 2, size, size).to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    y = augment_batch(x.contiguous(), cfg, g).cpu().double()
    w = y[:, 1] / y[:, 1].sum((1, 2), keepdim=True)
    return {
        "mean": y.mean((1, 2, 3)),
        "std": y.std((1, 2, 3)),
        "flipped": (y[:, 0, :, -4:].mean((1, 2)) < y[:, 0, :, :4].mean((1, 2))).double(),
        "blob_x": (w.sum(1) * c.double()).sum(1),
        "blob_y": (w.sum(2) * c.double()).sum(1),
    }


def _differences(a: dict, b: dict, z: float = 5.0) -> list[str]:
    """The statistics whose mean or spread differ by more than ``z`` standard errors."""
    found = []
    for name in a:
        centre = torch.cat([a[name], b[name]]).mean()
        spread = ((a[name] - centre) ** 2, (b[name] - centre) ** 2)
        for moment, (sa, sb) in (("mean", (a[name], b[name])), ("spread", spread)):
            se = math.sqrt((sa.var() / len(sa) + sb.var() / len(sb)).item()) + 1e-12
            if abs((sa.mean() - sb.mean()).item()) > z * se:
                found.append(f"{name} {moment}")
    return found


def test_two_seeds_agree_on_every_statistic_and_a_change_is_seen():
    a = _statistics(_EVERYTHING, "cpu", seed=1)
    b = _statistics(_EVERYTHING, "cpu", seed=2)
    assert _differences(a, b) == []
    assert abs(a["flipped"].mean().item() - 0.4) < 0.03  # p * 1/2
    weaker = _EVERYTHING.model_copy(update={"gamma": 0.0, "rotate_deg": 0.0})
    assert _differences(a, _statistics(weaker, "cpu", seed=2))  # the check has power


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_and_cpu_agree_on_every_statistic():
    cpu = _statistics(_EVERYTHING, "cpu", seed=1)
    cuda = _statistics(_EVERYTHING, "cuda", seed=1)
    assert _differences(cpu, cuda) == []
