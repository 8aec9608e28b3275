"""Conformal prediction sets: the exact finite-sample threshold, coverage when cases come one at
a time, and a case's set not depending on the batch it is predicted in (arrays, api.predict and
the serve model)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from scipy.stats import betabinom

import medlens.api as ml
from medlens.errors import ConfigError
from medlens.evaluate.conformal import (
    ConformalPredictor,
    case_uniforms,
    conformal_quantile,
    conformal_rank,
    conformity_scores,
    image_keys,
)
from tests.conftest import write_blob_npz


def synthetic(n: int, k: int, seed: int):
    """Softmax probabilities with labels drawn from them (exchangeable cases), and a random
    uint8 image per case as its key."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, size=(n, k))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.minimum((rng.random((n, 1)) > np.cumsum(p, 1)).sum(1), k - 1)
    images = rng.integers(0, 256, size=(n, 1, 6, 6), dtype=np.uint8)
    return p, y, image_keys(images)


# ------------------------------------------------------------------------------- the threshold


def test_threshold_is_the_ceil_n_plus_1_times_1_minus_alpha_th_score():
    # 10 calibration cases whose LAC scores 1 - p(true) are 1/16 ... 10/16 (exact in binary)
    scores = np.arange(1, 11) / 16
    p = np.stack([1 - scores, scores], axis=1)
    y = np.zeros(10, dtype=int)
    assert np.array_equal(conformity_scores(p, y, "lac"), scores)
    cp = ConformalPredictor.fit(p[::-1], y, alpha=0.2, method="lac")  # order does not matter
    # ceil(11 * 0.8) = ceil(8.8) = 9: the 9th smallest score; one more would be the 10th
    assert conformal_rank(10, 0.2) == 9
    assert cp.qhat == 9 / 16
    assert conformal_quantile(scores, 0.2) == 9 / 16
    # class 0 at p = 7/16 scores exactly the threshold and is in; at p = 6/16 it is not
    sets = cp.predict_sets(np.array([[7 / 16, 9 / 16], [6 / 16, 10 / 16]]))
    assert sets.tolist() == [[True, True], [False, True]]
    # 10 * (1 - 0.7) is 3.0000000000000004 in floating point; the rank is still 3
    assert conformal_rank(9, 0.7) == 3
    # too few cases: the rank passes n, the threshold is +inf and fit refuses
    assert conformal_rank(8, 0.1) == 9 and conformal_quantile(np.ones(8), 0.1) == np.inf
    with pytest.raises(ConfigError, match=r"8 calibration cases.*at least 9 validation cases"):
        ConformalPredictor.fit(np.full((8, 2), 0.5), np.zeros(8, int), alpha=0.1, method="lac")


@pytest.mark.parametrize("method", ["aps", "raps"])
def test_randomised_threshold_uses_each_cases_own_u(method):
    p, y, keys = synthetic(50, 5, seed=3)
    cp = ConformalPredictor.fit(p, y, alpha=0.2, method=method, keys=keys, seed=7)
    u = case_uniforms(keys, 7)
    lam = cp.lam if method == "raps" else 0.0
    scores = np.sort(conformity_scores(p, y, method, lam=lam, k_reg=cp.k_reg, u=u))
    assert cp.qhat == scores[conformal_rank(50, 0.2) - 1] == scores[40]  # ceil(51 * 0.8) = 41


# ------------------------------------------------------------------------ one case at a time


@pytest.mark.parametrize("method", ["aps", "raps", "lac"])
def test_one_at_a_time_coverage_is_within_its_beta_binomial_bound(method):
    n, m, alpha = 20_000, 3_000, 0.1
    p, y, keys = synthetic(n + m, 6, seed=1)
    cp = ConformalPredictor.fit(p[:n], y[:n], alpha=alpha, method=method, keys=keys[:n])
    one_by_one = np.concatenate(
        [cp.predict_sets(p[i : i + 1], keys=keys[i : i + 1]) for i in range(n, n + m)]
    )
    covered = int(one_by_one[np.arange(m), y[n:]].sum())
    # Split conformal with continuous scores: given the calibration cases, each new case is
    # covered with probability C ~ Beta(r, n + 1 - r), r = ceil((n + 1)(1 - alpha)), so the
    # number covered among m is Beta-Binomial(m, r, n + 1 - r). Its central 99.9% here is
    # [0.880, 0.919] x m; a predictor that does not randomise (u = 1) gets about 0.83.
    r = conformal_rank(n, alpha)
    low, high = betabinom.ppf([0.0005, 0.9995], m, r, n + 1 - r)
    assert low <= covered <= high, (covered / m, low / m, high / m)


@pytest.mark.parametrize("method", ["aps", "raps"])
def test_a_cases_set_is_the_same_alone_and_in_any_batch(method):
    n, m = 500, 400
    p, y, keys = synthetic(n + m, 8, seed=2)
    cp = ConformalPredictor.fit(p[:n], y[:n], alpha=0.1, method=method, keys=keys[:n])
    new, new_keys = p[n:], keys[n:]
    batch = cp.predict_sets(new, keys=new_keys)
    alone = np.concatenate(
        [cp.predict_sets(new[i : i + 1], keys=new_keys[i : i + 1]) for i in range(m)]
    )
    assert np.array_equal(alone, batch)
    rng = np.random.default_rng(0)
    for _ in range(5):  # shuffled, and in smaller batches of other cases
        order = rng.permutation(m)[: rng.integers(2, m)]
        assert np.array_equal(cp.predict_sets(new[order], keys=new_keys[order]), batch[order])
    # the randomisation does move sets (so the check above has something to catch) ...
    assert 1.5 < batch.sum(1).mean() < 7
    other_seed = ConformalPredictor(**{**cp.to_dict(), "seed": 1}).predict_sets(new, keys=new_keys)
    assert not np.array_equal(other_seed, batch)
    # ... and an image's key depends on its pixels only, not on its neighbours
    images = np.random.default_rng(1).integers(0, 256, size=(6, 3, 5, 5), dtype=np.uint8)
    assert np.array_equal(image_keys(images)[[4, 1]], image_keys(images[[4, 1]]))
    assert len(set(image_keys(images).tolist())) == 6


def test_randomised_sets_need_keys_and_lac_does_not():
    p, y, keys = synthetic(40, 3, seed=4)
    with pytest.raises(ConfigError, match="APS prediction sets are randomised.*image_keys"):
        ConformalPredictor.fit(p, y, alpha=0.2, method="aps")
    cp = ConformalPredictor.fit(p, y, alpha=0.2, method="raps", keys=keys)
    with pytest.raises(ConfigError, match="RAPS prediction sets"):
        cp.predict_sets(p)
    with pytest.raises(ConfigError, match="keys must be 40 integers"):
        cp.predict_sets(p, keys=keys[:-1])
    lac = ConformalPredictor.fit(p, y, alpha=0.2, method="lac")
    assert lac.predict_sets(p).any(axis=1).all()


# ----------------------------------------------------------- through predict and the service


@pytest.fixture(scope="module")
def aps_run(tmp_path_factory):
    """A small three-class run whose conformal sets are APS."""
    root = tmp_path_factory.mktemp("aps_run")
    npz = write_blob_npz(root / "blobs.npz", "multi-class", size=16, n=(240, 60, 80), k=3)
    run = root / "run"
    overrides = {"evaluate.conformal_method": "aps", "evaluate.bootstrap": "20"}
    ml.train(str(npz), output=run, device="cpu", epochs=2, model="small_cnn", overrides=overrides)
    files = []
    for i, image in enumerate(np.load(npz)["test_images"][:24]):
        files.append(root / f"case{i:02d}.png")
        Image.fromarray(image).save(files[-1])
    return run, files


def test_predict_gives_a_file_the_same_set_alone_and_with_others(aps_run):
    run, files = aps_run
    assert json.loads((run / "calibration.json").read_text())["conformal"]["method"] == "aps"
    together = ml.predict(run, files, onnx=False)
    alone = [ml.predict(run, [f], onnx=False)[0] for f in files]
    assert [r["prediction_set"] for r in alone] == [r["prediction_set"] for r in together]
    assert len({r["prediction_set"] for r in together}) > 1
    # the PNGs are the test split's images: the same keys, so the sets evaluate wrote
    with (run / "predictions.csv").open() as f:
        test = [r for r in csv.DictReader(f) if r["split"] == "test"][: len(files)]
    assert [r["prediction_set"] for r in together] == [r["prediction_set"] for r in test]


def test_served_model_gives_an_upload_the_set_predict_gives_it(aps_run):
    from medlens.serve.model import ServedModel

    run, files = aps_run
    served = ServedModel(run, onnx=False)
    together = ml.predict(run, files, onnx=False)
    for f, row in zip(files, together, strict=True):
        answer = served.predict(f.read_bytes(), heatmap=False)
        assert ";".join(answer["prediction_set"]) == row["prediction_set"]
