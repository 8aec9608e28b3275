"""Preprocessing: windows, normalisations, filters, resize modes, resampling, channels, errors."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.ndimage import gaussian_filter

from medlens.data.preprocess import (
    WINDOW_PRESETS,
    PreprocessConfig,
    apply_window,
    parse_window,
    preprocess,
    resize_to,
    to_unit_range,
)
from medlens.errors import ConfigError, DataError


def cfg(size=(16, 16), **kw) -> PreprocessConfig:
    return PreprocessConfig(size=list(size), **kw)


# --- intensity -------------------------------------------------------------------------------


def test_linear_window_on_known_values():
    out = apply_window(np.array([-160.0, 40.0, 240.0, -1000.0, 3000.0, 140.0]), 40, 400)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0, 0.0, 1.0, 0.75], atol=1e-6)
    with pytest.raises(ConfigError, match="width must be positive"):
        apply_window(np.zeros(3), 40, 0)


def test_window_presets_and_strings():
    expected = {
        "lung": (-600, 1500),
        "mediastinum": (50, 350),
        "soft_tissue": (40, 400),
        "bone": (400, 1800),
        "brain": (40, 80),
        "liver": (60, 160),
        "stroke": (40, 40),
    }
    for name, value in expected.items():
        assert WINDOW_PRESETS[name] == value
        assert parse_window(name.upper(), None) == value
    assert parse_window("40,400", None) == (40.0, 400.0)
    assert parse_window(" -600 , 1500 ", None) == (-600.0, 1500.0)
    assert parse_window("file", (10.0, 20.0)) == (10.0, 20.0)
    assert parse_window("file", None) is None
    with pytest.raises(ConfigError, match="positive width"):
        parse_window("40,-5", None)
    # a lung window through the whole pipeline: -1350 HU -> 0, -600 -> 128, 150 -> 255
    hu = np.array([[-1350.0, -600.0, 150.0, 3000.0]] * 4, np.float32)
    out = preprocess(hu, cfg((4, 4), window="lung"))
    assert out[0, 0].tolist() == [0, 128, 255, 255]


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="unknown window 'lungs'.*lung, mediastinum, soft_tissue"):
        parse_window("lungs", None)
    # the config refuses it up front (pydantic wraps the message), so a typo never reaches
    # the cache workers, also on assignment
    with pytest.raises(ValidationError, match="unknown window 'lungs'.*mediastinum"):
        cfg(window="lungs")
    c = cfg(window="Lung")
    assert c.window == "lung"
    with pytest.raises(ValidationError, match="unknown window"):
        c.window = "bones"


def test_file_window_and_its_fallback():
    x = np.array([[-160.0, 40.0, 240.0, 0.0]] * 4, np.float32)
    out = preprocess(x, cfg((4, 4), window="file"), window=(40.0, 400.0))
    assert out[0, 0].tolist() == [0, 128, 255, 102]
    meta: dict = {}
    fallback = preprocess(x, cfg((4, 4), window="file", normalize="minmax"), meta=meta)
    assert fallback[0, 0].tolist() == [0, 128, 255, 102]  # min-max of -160..240 is the same here
    assert "normalize=minmax" in meta["window_fallback"]


def test_percentile_maps_p05_and_p995_to_0_and_255():
    x = np.random.default_rng(0).normal(100, 20, (64, 64)).astype(np.float32)
    lo, hi = np.percentile(x, (0.5, 99.5))
    out = preprocess(x, cfg((64, 64)))[0]  # same size: no resampling
    assert (out[x <= lo] == 0).all() and (out[x >= hi] == 255).all()
    inside = (x > lo) & (x < hi)
    np.testing.assert_allclose(out[inside], (x[inside] - lo) / (hi - lo) * 255, atol=0.51)
    mid = np.argmin(np.abs(x - (lo + hi) / 2))
    assert abs(int(out.flat[mid]) - 128) <= 1
    # custom percentiles, and a mostly empty image (equal percentiles) falls back to min-max
    out2 = to_unit_range(x, cfg(percentiles=(10, 90)))
    assert np.isclose((out2 == 0).mean(), 0.10, atol=0.001)
    sparse = np.zeros((100, 100), np.float32)
    sparse[0, :3] = 50.0
    assert to_unit_range(sparse, cfg()).max() == 1.0


def test_zscore_minmax_none():
    x = np.tile([-1.0, 1.0], (10, 5)).astype(np.float32) * 7 + 30  # mean 30, std 7
    out = preprocess(x, cfg((10, 10), normalize="zscore"))[0]
    assert set(np.unique(out).tolist()) == {85, 170}  # z = -1, +1 -> (z + 3) / 6 * 255
    y = np.random.default_rng(1).normal(0, 1, (50, 50)).astype(np.float32)
    y[0, 0] = 40.0  # an outlier beyond 3 std, clipped to 1
    z = to_unit_range(y, cfg(normalize="zscore"))
    expect = (np.clip((y - y.mean()) / y.std(), -3, 3) + 3) / 6
    np.testing.assert_allclose(z, expect, atol=1e-5)
    assert z[0, 0] == 1.0
    m = to_unit_range(np.array([[2.0, 4.0, 6.0]], np.float32), cfg(normalize="minmax"))
    np.testing.assert_allclose(m, [[0.0, 0.5, 1.0]])
    n = preprocess(
        np.array([[-10.0, 0.0, 100.0, 300.0]] * 4, np.float32), cfg((4, 4), normalize="none")
    )
    assert n[0, 0].tolist() == [0, 0, 100, 255]


@pytest.mark.parametrize("normalize", ["percentile", "minmax", "zscore"])
def test_constant_image_gives_zeros(normalize):
    for shape, size in (((10, 10), (4, 4)), ((6, 8, 8), (4, 4, 4)), ((9, 9, 3), (4, 4))):
        out = preprocess(
            np.full(shape, 7.0, np.float32), cfg(size, normalize=normalize, clahe=True)
        )
        assert out.dtype == np.uint8 and not out.any()


# --- resizing --------------------------------------------------------------------------------


def test_pad_keeps_aspect_and_fills_with_the_minimum():
    ones = resize_to(np.ones((100, 50), np.float32), [64, 64], "pad", fill=0.0)
    assert ones.shape == (64, 64)
    np.testing.assert_allclose(ones[:, 16:48], 1.0, atol=1e-6)  # 64 x 32, centred
    assert (ones[:, :16] == 0).all() and (ones[:, 48:] == 0).all()
    x = np.full((100, 50), 200.0, np.float32)
    x[40:60, 20:30] = 100.0  # the minimum, inside the image
    out = preprocess(x, cfg((64, 64), normalize="none"))[0]
    assert (out[:, :16] == 100).all() and (out[:, 48:] == 100).all()  # padding = the minimum
    assert out[0, 16] == out[63, 47] == 200 and out[32, 32] == 100
    wide = resize_to(np.ones((30, 90), np.float32), [64, 64], "pad", fill=0.0)
    rows = np.flatnonzero(wide.max(1) > 0.5)
    assert (rows[0], rows[-1]) == (21, 41)  # 21 rows high, centred


def test_crop_keeps_the_centre():
    x = np.zeros((50, 100), np.float32)
    x[:, 25:75] = 255.0  # exactly the central square
    out = preprocess(x, cfg((64, 64), resize="crop", normalize="none"))[0]
    assert (out[:, 2:-2] == 255).all() and out.mean() > 245
    padded = preprocess(x, cfg((64, 64), resize="pad", normalize="none"))[0]
    assert (padded[:16] == 0).all()  # the same image padded: 32 rows of image, centred


def test_stretch_ignores_aspect():
    x = np.tile((np.arange(100) * 2.55)[:, None], (1, 50)).astype(np.float32)
    out = preprocess(x, cfg((32, 32), resize="stretch", normalize="none"))[0]
    assert out.shape == (32, 32)
    assert (out == out[:, :1]).all()  # every column the same: no padding
    assert (np.diff(out[:, 0].astype(int)) > 0).all() and out[0, 0] < 8 and out[-1, 0] > 245


def test_3d_resize_keeps_a_centred_cube_centred():
    vol = np.zeros((20, 40, 40), np.float32)
    vol[5:15, 10:30, 10:30] = 1.0
    for mode in ("pad", "crop", "stretch"):
        out = preprocess(vol, cfg((10, 20, 20), resize=mode, normalize="minmax"))
        assert out.shape == (1, 10, 20, 20) and out.dtype == np.uint8
        assert out[0, 5, 10, 10] == 255 and out[0, 0, 0, 0] == 0
        centre = np.array(np.nonzero(out[0] > 128)).mean(1)
        np.testing.assert_allclose(centre, [4.5, 9.5, 9.5], atol=0.01)


def test_target_spacing_resamples_before_resizing():
    # slice k holds 100 + 10k; 4 mm slices resampled to 2 mm: (10, 20, 20) -> (20, 20, 20)
    vol = np.broadcast_to((100 + 10 * np.arange(10.0))[:, None, None], (10, 20, 20))
    vol = vol.astype(np.float32)
    c = cfg((20, 20, 20), target_spacing=[2.0, 1.0, 1.0], normalize="none")
    out = preprocess(vol, c, spacing=(4.0, 1.0, 1.0))
    assert out.shape == (1, 20, 20, 20)
    # cell-centred linear interpolation: new slice i sits at (i + 0.5) / 2 - 0.5 old slices;
    # had it been padded to (20, 20, 20) instead, half of the slices would be the minimum
    expect = 100 + 10 * np.clip((np.arange(20) + 0.5) / 2 - 0.5, 0, 9)
    np.testing.assert_allclose(out[0, :, 10, 10], np.rint(expect), atol=1)
    without = preprocess(vol, cfg((20, 20, 20), normalize="none"))
    assert (without[0, :5] == 100).all()  # no resampling: pad keeps the 10-slice aspect
    with pytest.raises(DataError, match="no voxel spacing"):
        preprocess(vol, c)
    with pytest.raises(ValidationError, match="3D volumes only"):
        cfg((8, 8), target_spacing=[1.0, 1.0, 1.0])
    with pytest.raises(ConfigError, match="too many"):
        preprocess(vol, cfg((8, 8, 8), target_spacing=[0.01, 0.01, 0.01]), spacing=(4, 1, 1))


# --- filters ---------------------------------------------------------------------------------


def _texture(seed: int, shape=(64, 64)) -> np.ndarray:
    """A smooth random texture scaled to 0..1."""
    t = gaussian_filter(np.random.default_rng(seed).normal(size=shape), 3)
    return (t - t.min()) / (t.max() - t.min())


def test_clahe_raises_contrast():
    low = (0.45 + 0.1 * _texture(2)) * 255  # values in 115..140 of 0..255
    c = cfg((64, 64), normalize="none")
    plain = preprocess(low.astype(np.float32), c)
    eq = preprocess(low.astype(np.float32), c.model_copy(update={"clahe": True}))
    assert eq.std() > 3 * plain.std()
    assert eq.max() - eq.min() > 200 > plain.max() - plain.min()


def test_clahe_on_a_volume_keeps_slice_brightness_in_order():
    # CLAHE per slice would stretch each slice to 0..1 and flatten this depth gradient (every
    # slice's mean near 128); 3D contextual regions keep it
    base = 0.2 * _texture(3, (32, 32))
    vol = np.stack([base + 0.6 * k / 63 for k in range(64)]).astype(np.float32) * 255
    out = preprocess(vol, cfg((64, 32, 32), clahe=True, normalize="none"))[0]
    means = out.reshape(64, -1).mean(1)
    assert (np.diff(means) > 0).all() and means[-1] - means[0] > 150


def test_nlm_lowers_noise_by_at_least_30_percent():
    rng = np.random.default_rng(4)
    clean = np.full((64, 64), 60.0, np.float32)
    clean[16:48, 16:48] = 190.0
    clean += (60 * _texture(5)).astype(np.float32)
    noisy = clean + rng.normal(0, 15, clean.shape).astype(np.float32)
    c = cfg((64, 64), normalize="none")
    err_plain = (preprocess(noisy, c)[0].astype(float) - clean).std()
    err_nlm = (preprocess(noisy, c.model_copy(update={"denoise": "nlm"}))[0] - clean).std()
    assert err_nlm < 0.7 * err_plain
    # colour and volumes denoise too, keeping their shape
    rgb = np.stack([noisy, noisy, noisy], -1)
    assert preprocess(rgb, cfg((32, 32), channels=3, denoise="nlm")).shape == (3, 32, 32)
    vol = np.stack([noisy] * 4)
    assert preprocess(vol, cfg((4, 32, 32), denoise="nlm")).shape == (1, 4, 32, 32)


# --- channels, shapes, errors ----------------------------------------------------------------


def test_channels():
    gray = np.random.default_rng(3).random((16, 16)).astype(np.float32)
    three = preprocess(gray, cfg(channels=3))
    assert three.shape == (3, 16, 16) and (three[0] == three[1]).all()
    assert (three[1] == three[2]).all() and (three[0] == preprocess(gray, cfg())[0]).all()
    rgb = np.zeros((16, 16, 3), np.float32)
    rgb[:8, :, 0] = 255  # red top half, green bottom half
    rgb[8:, :, 1] = 255
    one = preprocess(rgb, cfg(channels=1, normalize="none"))
    assert one.shape == (1, 16, 16)
    # skimage.color.rgb2gray: 0.2125 R + 0.7154 G + 0.0721 B
    assert one[0, 0, 0] == round(0.2125 * 255) and one[0, -1, 0] == round(0.7154 * 255)
    kept = preprocess(rgb, cfg(channels=3, normalize="none"))
    assert kept.shape == (3, 16, 16)
    assert kept[0, 0, 0] == 255 and kept[1, 0, 0] == 0 and kept[1, -1, 0] == 255
    rgba = np.concatenate([rgb, np.full((16, 16, 1), 255, np.float32)], -1)
    assert (preprocess(rgba, cfg(channels=3, normalize="none")) == kept).all()


def test_output_is_uint8_channel_first():
    rng = np.random.default_rng(6)
    cases = [
        ((30, 40), cfg((16, 16)), (1, 16, 16)),
        ((30, 40), cfg((16, 16), channels=3), (3, 16, 16)),
        ((30, 40, 3), cfg((16, 16), channels=3), (3, 16, 16)),
        ((12, 30, 40), cfg((8, 16, 16)), (1, 8, 16, 16)),
        ((12, 30, 40), cfg((8, 16, 16), channels=3), (3, 8, 16, 16)),
    ]
    for shape, c, expected in cases:
        out = preprocess(rng.random(shape).astype(np.float32) * 1000, c)
        assert out.shape == expected and out.dtype == np.uint8 and out.flags.c_contiguous
        assert out.min() == 0 and out.max() > 100


def test_bad_values_and_sizes():
    gray = np.random.default_rng(3).random((16, 16)).astype(np.float32)
    for bad_value in (np.nan, np.inf):
        bad = gray.copy()
        bad[0, 0] = bad_value
        with pytest.raises(DataError, match="1 NaN or infinite"):
            preprocess(bad, cfg())
    with pytest.raises(ConfigError, match=r"2D: size needs 2 values.*e\.g\. \[8, 8\]"):
        preprocess(gray, cfg((8, 8, 8)))
    with pytest.raises(ConfigError, match=r"3D \(D, H, W\): size needs 3 values"):
        preprocess(np.zeros((5, 16, 16), np.float32), cfg((8, 8)))
    with pytest.raises(ConfigError, match="2D colour: size needs 2"):
        preprocess(np.zeros((16, 16, 3), np.float32), cfg((8, 8, 8)))
    with pytest.raises(DataError, match="expected"):
        preprocess(np.zeros((2, 3, 4, 5), np.float32), cfg((8, 8, 8)))
    with pytest.raises(ValidationError):
        cfg((8,))
    with pytest.raises(ValidationError):
        cfg(percentiles=(99, 1))
    with pytest.raises(ValidationError):
        cfg(unknown_field=1)
