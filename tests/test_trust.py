"""Calibration, bootstrap CIs, operating points, conformal sets and subgroups: numbers checked
against scikit-learn, against theory, and on a model trained on real BreastMNIST."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file, save_file
from sklearn.metrics import brier_score_loss, roc_auc_score

import medlens.api as ml
from medlens.errors import ConfigError
from medlens.evaluate.bootstrap import bootstrap_metrics, weighted_auc, weighted_metrics
from medlens.evaluate.calibration import (
    N_BINS,
    brier_score,
    calibration_summary,
    fit_temperature,
    probabilities,
    reliability,
)
from medlens.evaluate.conformal import ConformalPredictor, coverage_report, random_split_coverage
from medlens.evaluate.metrics import (
    classification_metrics,
    expected_calibration_error,
    maximum_calibration_error,
)
from medlens.evaluate.operating import operating_point, threshold_for
from medlens.evaluate.subgroups import group_labels, subgroup_columns, subgroup_metrics
from medlens.evaluate.trust import trust_analysis
from medlens.evaluate.validation import prepare


def _synthetic(n: int, k: int, seed: int, sharpen: float = 1.0):
    """Labels drawn from softmax(logits): the logits are calibrated; ``sharpen`` > 1 makes
    a model that is overconfident by exactly that temperature."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, size=(n, k))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return logits * sharpen, y


# ---------------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize(("task", "k"), [("binary", 2), ("multi-class", 5), ("multi-label", 4)])
def test_unit_weight_metrics_equal_classification_metrics(task, k):
    rng = np.random.default_rng(3)
    n = 400
    if task == "multi-label":
        y = (rng.random((n, k)) < 0.3).astype(int)
        s = np.clip(0.4 * y + 0.6 * rng.random((n, k)), 0, 1)
    else:
        logits, y = _synthetic(n, k, 3)
        s = probabilities(logits, task)
    s = np.round(s, 2)  # many ties: AUC must count them as one half, as scikit-learn does
    ref = classification_metrics(y, s, task)
    yy, ss = prepare(y, s, task)
    got = weighted_metrics(yy, ss, task, np.ones((1, n)))
    shared = [key for key in got if key in ref]
    assert len(shared) >= 8
    for key in shared:
        assert got[key][0] == pytest.approx(ref[key], abs=1e-12), key
    assert got["brier"][0] == pytest.approx(brier_score(y, s, task), abs=1e-12)


def test_weighted_auc_equals_sklearn_on_repeated_cases():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)
    w = rng.integers(0, 4, size=(5, 200)).astype(float)
    got = weighted_auc(y, s, w)
    for b in range(5):
        rows = np.repeat(np.arange(200), w[b].astype(int))
        assert got[b] == pytest.approx(roc_auc_score(y[rows], s[rows]), abs=1e-12)


def test_binary_brier_matches_sklearn():
    logits, y = _synthetic(300, 2, 5)
    p = probabilities(logits, "binary")
    assert brier_score(y, p, "binary") == pytest.approx(brier_score_loss(y, p[:, 1]))


def test_intervals_contain_the_estimate_and_narrow_as_data_grows():
    widths = []
    for n in (100, 1600):
        logits, y = _synthetic(n, 2, 11)
        ci = bootstrap_metrics(y, probabilities(logits, "binary"), "binary", n_boot=500, seed=1)
        for name in ("auc", "acc", "sensitivity", "specificity", "f1", "brier"):
            assert ci[name]["low"] <= ci[name]["value"] <= ci[name]["high"], (n, name)
            assert ci[name]["estimate_in_interval"]
        # ECE is biased upwards, more so in resamples: on 100 cases every resample exceeds it,
        # which the result flags; on 1,600 the interval holds it
        assert ci["ece"]["estimate_in_interval"] == (n > 100)
        assert ci["ece"]["low"] <= ci["ece"]["high"]
        widths.append(ci["auc"]["high"] - ci["auc"]["low"])
    # the width of a percentile interval shrinks like 1/sqrt(n): 16x the data, ~1/4 the width
    assert widths[1] < 0.4 * widths[0], widths


def test_patient_bootstrap_is_wider_when_images_repeat_a_patient():
    logits, y = _synthetic(150, 2, 2)
    p = probabilities(logits, "binary")
    reps = 6  # six copies of every patient's image: the evidence is still 150 patients
    y6, p6 = np.repeat(y, reps), np.repeat(p, reps, axis=0)
    patients = np.repeat(np.arange(150), reps)
    by_image = bootstrap_metrics(y6, p6, "binary", n_boot=400, seed=0)["auc"]
    by_patient = bootstrap_metrics(y6, p6, "binary", groups=patients, n_boot=400, seed=0)["auc"]
    plain = bootstrap_metrics(y, p, "binary", n_boot=400, seed=0)["auc"]
    w_img, w_pat = (c["high"] - c["low"] for c in (by_image, by_patient))
    assert w_pat > 1.8 * w_img  # about sqrt(6) = 2.4 times
    assert w_pat == pytest.approx(plain["high"] - plain["low"], rel=0.35)


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ConfigError, match="patient ids"):
        bootstrap_metrics([0, 1], [0.2, 0.7], "binary", groups=np.array(["a"]))
    with pytest.raises(ConfigError, match="ci must be"):
        bootstrap_metrics([0, 1], [0.2, 0.7], "binary", ci=95)


# -------------------------------------------------------------------------------- calibration


def test_temperature_scaling_recovers_overconfidence_and_lowers_ece():
    val_logits, val_y = _synthetic(3000, 4, 0, sharpen=3.0)
    test_logits, test_y = _synthetic(3000, 4, 1, sharpen=3.0)
    t = fit_temperature(val_logits, val_y, "multi-class")
    assert t == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(
        test_y, probabilities(test_logits, "multi-class"), "multi-class"
    )
    after = expected_calibration_error(
        test_y, probabilities(test_logits, "multi-class", t), "multi-class"
    )
    assert before > 0.1
    assert after < 0.03
    assert after < before / 4


@pytest.mark.parametrize(("task", "k"), [("binary", 2), ("multi-class", 5), ("multi-label", 3)])
def test_reliability_diagram_gaps_sum_to_the_reported_ece(task, k):
    """One set of bins: the diagram's per-bin gaps, weighted by the bin counts, are the ECE
    that trust.json reports, and the ECE of metrics.json and of the bootstrap."""
    rng = np.random.default_rng(k)
    if task == "multi-label":
        y = (rng.random((2000, k)) < 0.4).astype(int)
        logits = 3 * (y - 0.5) + rng.normal(0, 2, size=(2000, k))
    else:
        logits, y = _synthetic(2000, k, k, sharpen=2.0)
    val, test = slice(0, 1000), slice(1000, None)
    calib = calibration_summary(logits[val], y[val], logits[test], y[test], task)
    for key, temperature in (("before", 1.0), ("after", calib["temperature"])):
        judged = calib["test"][key]
        diagram = judged["reliability"]
        assert len(diagram["count"]) == N_BINS == len(diagram["edges"]) - 1
        count = np.array(diagram["count"])
        gap = np.array([0.0 if g is None else abs(g) for g in diagram["gap"]])
        assert (count * gap).sum() / count.sum() == pytest.approx(judged["ece"], abs=1e-12)
        assert gap.max() == pytest.approx(judged["mce"], abs=1e-12)
        p = probabilities(logits[test], task, temperature)
        assert judged["ece"] == pytest.approx(
            expected_calibration_error(y[test], p, task), abs=1e-12
        )
        assert judged["mce"] == pytest.approx(
            maximum_calibration_error(y[test], p, task), abs=1e-12
        )
        assert diagram == reliability(y[test], p, task)
        boot = bootstrap_metrics(y[test], p, task, n_boot=0)["ece"]["value"]
        assert boot == pytest.approx(judged["ece"], abs=1e-12)
    assert calib["test"]["before"]["ece"] > 0.02  # something to measure


def test_temperature_keeps_predictions():
    logits, y = _synthetic(500, 3, 4, sharpen=2.0)
    t = fit_temperature(logits, y, "multi-class")
    assert np.array_equal(
        probabilities(logits, "multi-class").argmax(1),
        probabilities(logits, "multi-class", t).argmax(1),
    )


def test_temperature_rejects_non_finite_logits():
    with pytest.raises(ConfigError, match="NaN or infinity"):
        fit_temperature(np.array([[np.nan, 1.0], [0.0, 1.0]]), np.array([0, 1]), "binary")


# ----------------------------------------------------------------------------- operating point


def test_threshold_reaches_the_target_on_validation():
    logits, y = _synthetic(800, 2, 9)
    p = probabilities(logits, "binary")[:, 1]
    for target, value in (("sensitivity", 0.9), ("specificity", 0.95)):
        thr = threshold_for(y, p, target, value)
        pred = p >= thr
        sens = pred[y == 1].mean()
        spec = (~pred[y == 0]).mean()
        reached = sens if target == "sensitivity" else spec
        assert reached >= value
        # and it is the tightest such threshold: one step further misses the target
        other = np.unique(p)
        idx = np.searchsorted(other, thr)
        nxt = other[idx + 1] if target == "sensitivity" else other[idx - 1]
        pred = p >= nxt
        moved = pred[y == 1].mean() if target == "sensitivity" else (~pred[y == 0]).mean()
        assert moved < value


def test_operating_point_reports_test_rates_with_intervals():
    val_logits, val_y = _synthetic(600, 2, 1)
    test_logits, test_y = _synthetic(600, 2, 2)
    vp, tp = (probabilities(z, "binary")[:, 1] for z in (val_logits, test_logits))
    op = operating_point(val_y, vp, test_y, tp, target="sensitivity", value=0.9, n_boot=300)
    pred = tp >= op["threshold"]
    assert op["test"]["sensitivity"]["value"] == pytest.approx(pred[test_y == 1].mean())
    assert op["test"]["npv"]["value"] == pytest.approx((test_y[~pred] == 0).mean())
    for rate in op["test"].values():
        assert rate["low"] <= rate["value"] <= rate["high"]
    with pytest.raises(ConfigError, match="both classes"):
        threshold_for(np.zeros(5), np.linspace(0, 1, 5), "sensitivity", 0.9)


# ---------------------------------------------------------------------------------- conformal


@pytest.mark.parametrize("method", ["lac", "aps", "raps"])
def test_conformal_coverage_matches_theory_on_exchangeable_data(method):
    logits, y = _synthetic(4000, 6, 7)
    p = probabilities(logits, "multi-class")
    keys = np.arange(len(y))  # any distinct integer per case will do for synthetic cases
    result = random_split_coverage(p, y, alpha=0.1, method=method, keys=keys, n_splits=40)
    # split conformal: 1 - alpha <= E[coverage] <= 1 - alpha + 1/(n_cal + 1) (randomised: exact)
    assert result["mean_coverage"] == pytest.approx(0.9, abs=0.01)


def test_conformal_sets_adapt_and_raps_is_no_larger_than_aps():
    logits, y = _synthetic(3000, 8, 8)
    p = probabilities(logits, "multi-class")
    cal, new = slice(0, 1500), slice(1500, None)
    keys = np.arange(len(y))
    sizes = {}
    for method in ("lac", "aps", "raps"):
        cp = ConformalPredictor.fit(p[cal], y[cal], alpha=0.1, method=method, keys=keys[cal])
        sets = cp.predict_sets(p[new], keys=keys[new])
        sizes[method] = sets.sum(1).mean()
        # harder cases (lower top probability) get larger sets
        top = p[new].max(1)
        assert sets.sum(1)[top < np.median(top)].mean() > sets.sum(1)[top >= np.median(top)].mean()
    assert sizes["lac"] <= sizes["aps"]
    assert sizes["raps"] <= sizes["aps"] + 1e-9


def test_conformal_rejects_bad_settings():
    p = np.full((5, 2), 0.5)
    with pytest.raises(ConfigError, match="unknown conformal method"):
        ConformalPredictor.fit(p, np.zeros(5, int), method="naive")
    with pytest.raises(ConfigError, match="cannot give 99% coverage"):
        ConformalPredictor.fit(p, np.zeros(5, int), alpha=0.01, keys=np.arange(5))


# ----------------------------------------------------------------------- the whole analysis


def test_trust_analysis_takes_plain_arguments():
    val_logits, val_y = _synthetic(600, 2, 21)
    test_logits, test_y = _synthetic(600, 2, 22)
    names = ["lesion", "normal"]
    common = {"task": "binary", "label_names": names, "n_boot": 200, "ci": 0.9, "seed": 3}
    trust = trust_analysis(
        val_logits, val_y, test_logits, test_y, **common, positive=0, conformal_alpha=0.2,
        conformal_method="aps", target_sensitivity=0.8, target_specificity=0.95,
        val_keys=np.arange(600), test_keys=np.arange(600, 1200),
    )  # fmt: skip
    assert trust["confidence_intervals"] | {"metrics": None, "calibrated": None} == {
        "n_boot": 200, "ci": 0.9, "seed": 3, "resampled": "images",
        "metrics": None, "calibrated": None,
    }  # fmt: skip
    ops = trust["operating_points"]
    assert [(o["positive_class"], o["target"], o["value"]) for o in ops] == [
        ("lesion", "sensitivity", 0.8),
        ("lesion", "specificity", 0.95),
    ]
    assert ops[0]["val"]["sensitivity"] >= 0.8 and ops[1]["val"]["specificity"] >= 0.95
    # positive=0: sensitivity is class 0's recall, as classification_metrics reports it
    p = probabilities(test_logits, "binary")
    want = classification_metrics(test_y, p, "binary", label_names=names, positive=0)
    assert trust["confidence_intervals"]["metrics"]["sensitivity"]["value"] == pytest.approx(
        want["sensitivity"]
    )
    conformal = trust["conformal"]
    assert (conformal["method"], conformal["alpha"], conformal["seed"]) == ("aps", 0.2, 3)
    assert conformal["target_coverage"] == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="APS prediction sets are randomised"):
        trust_analysis(val_logits, val_y, test_logits, test_y, **common)  # no keys
    no_keys = trust_analysis(val_logits, val_y, test_logits, test_y, **common,
                             conformal_method="lac")  # fmt: skip
    assert no_keys["conformal"]["method"] == "lac"


# ---------------------------------------------------------------------------------- subgroups


def test_subgroups_find_the_group_the_model_fails():
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n)
    site = np.where(np.arange(n) % 3 == 0, "B", "A")
    good = np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.1, n)
    p1 = np.clip(np.where(site == "A", good, rng.random(n)), 0, 1)
    p = np.stack([1 - p1, p1], 1)
    meta = pd.DataFrame({"Site": site, "age": rng.integers(20, 90, n), "comment": "x"})
    out = subgroup_metrics(y, p, "binary", meta, n_boot=200)
    assert [c["column"] for c in out] == ["Site", "age"]
    site_result = out[0]
    gap = site_result["largest_gap"]["auc"]
    assert (gap["lowest"], gap["highest"]) == ("B", "A")
    a = next(g for g in site_result["groups"] if g["group"] == "A")
    mask = site == "A"
    assert a["n"] == mask.sum()
    assert a["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(y[mask], p1[mask]))
    b_auc = next(g for g in site_result["groups"] if g["group"] == "B")["metrics"]["auc"]
    assert b_auc["high"] < a["metrics"]["auc"]["low"]  # the CIs do not overlap


def test_age_bands_and_column_errors():
    ages = pd.Series([23, 37, 38, 45, 51, 66, 70, 71, 84, 90, 12, 33, 59, 61], name="PatientAge")
    assert group_labels(ages)[:4].tolist() == ["20-29", "30-39", "30-39", "40-49"]
    meta = pd.DataFrame({"sex": ["F", "M"]})
    with pytest.raises(ConfigError, match="columns there: sex"):
        subgroup_columns(meta, ["site"])


# ------------------------------------------------------------------------ on a real trained run


def test_trust_json_on_real_breastmnist(breast_run):
    trust = json.loads((breast_run / "trust.json").read_text())
    metrics = json.loads((breast_run / "metrics.json").read_text())
    ci = trust["confidence_intervals"]["metrics"]
    for name in ("auc", "acc", "f1", "sensitivity", "specificity", "ece"):
        assert ci[name]["value"] == pytest.approx(metrics["test"][name], abs=1e-9), name
        assert ci[name]["low"] <= ci[name]["value"] <= ci[name]["high"], name
    calib = trust["calibration"]
    assert calib["val_nll"]["after"] <= calib["val_nll"]["before"] + 1e-12
    sens = trust["operating_points"][0]
    assert sens["target"] == "sensitivity" and sens["val"]["sensitivity"] >= 0.9
    assert sens["positive_class"] == "malignant"
    conformal = trust["conformal"]
    # on random splits of the pooled real val + test cases, coverage is what was asked for
    assert conformal["random_splits"]["mean_coverage"] == pytest.approx(0.9, abs=0.02)
    assert 1.0 <= conformal["test"]["mean_set_size"] <= 2.0


def test_temperature_scaling_fixes_a_deliberately_overconfident_real_model(breast_run, tmp_path):
    run = tmp_path / "hot"
    shutil.copytree(breast_run, run)
    best = run / "checkpoints/best.safetensors"
    weights = load_file(best)
    from safetensors import safe_open

    with safe_open(str(best), "pt") as f:
        meta = f.metadata()
    # the classifier: the one 2-D weight with a row per class
    head = next(k for k, v in weights.items() if v.ndim == 2 and v.shape[0] == 2)
    weights[head] = weights[head] * 6
    weights[head.replace(".weight", ".bias")] = weights[head.replace(".weight", ".bias")] * 6
    save_file(weights, best, metadata=meta)
    ml.evaluate_run(run)
    calib = json.loads((run / "trust.json").read_text())["calibration"]
    assert calib["temperature"] > 2.5
    before, after = calib["test"]["before"], calib["test"]["after"]
    assert after["ece"] < before["ece"] * 0.6, (before["ece"], after["ece"])
    assert after["nll"] < before["nll"]


def test_predictions_and_predict_carry_calibrated_sets(breast_run, medmnist_dir, tmp_path):
    with (breast_run / "predictions.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    record = json.loads((breast_run / "calibration.json").read_text())
    names = ["malignant", "normal, benign"]
    assert record["conformal"]["method"] == "lac"  # the planner's choice for two classes
    sets = [r["prediction_set"].split(";") for r in rows]
    assert all(s and set(s) <= set(names) for s in sets)
    report = coverage_report(
        np.array([[n in s for n in names] for s in sets]),
        np.array([names.index(r["label"]) for r in rows]),
        names,
    )
    trust = json.loads((breast_run / "trust.json").read_text())
    assert report["coverage"] == pytest.approx(trust["conformal"]["test"]["coverage"])
    # predict on PNGs of test images gives the same calibrated confidence as predictions.csv
    from PIL import Image

    images = np.load(medmnist_dir / "breastmnist.npz")["test_images"][:3]
    files = []
    for i, img in enumerate(images):
        files.append(tmp_path / f"case{i}.png")
        Image.fromarray(img).save(files[-1])
    out = ml.predict(breast_run, files)
    for row, ref in zip(out, rows[:3], strict=True):
        assert row["confidence"] == pytest.approx(float(ref["confidence"]), abs=1e-5)
        assert row["prediction_set"] == ref["prediction_set"]


def test_evaluate_settings_are_checked_before_training(medmnist_dir, tmp_path):
    with pytest.raises(ConfigError, match="Input should be 'aps', 'raps' or 'lac'"):
        ml.train("breastmnist", data_dir=str(medmnist_dir), output=tmp_path / "a",
                 overrides={"evaluate.conformal_method": "naive"})  # fmt: skip
    with pytest.raises(ConfigError, match="no metadata columns"):
        ml.train("breastmnist", data_dir=str(medmnist_dir), output=tmp_path / "b",
                 overrides={"evaluate.subgroups": ["sex"]})  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_manifest_metadata_gives_subgroups_in_trust_json(tmp_path):
    from PIL import Image

    from tests.conftest import blob_images

    rng = np.random.default_rng(4)
    rows = []
    (tmp_path / "img").mkdir()
    for p in range(80):
        y = int(rng.integers(0, 2))
        for j, img in enumerate(blob_images(np.full(2, y), 20, 2, rng)):
            name = f"img/p{p}_{j}.png"
            Image.fromarray(img).save(tmp_path / name)
            rows.append(
                {"path": name, "label": "ab"[y], "pid": f"P{p}", "site": "XYZ"[p % 3],
                 "age": 20 + p, "notes": f"free text {p}"}
            )  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    run = tmp_path / "run"
    ml.train(str(tmp_path / "m.csv"), output=run, device="cpu", epochs=4,
             source_fields={"patient_column": "pid"})  # fmt: skip
    trust = json.loads((run / "trust.json").read_text())
    assert trust["confidence_intervals"]["resampled"] == "patients"
    groups = {g["column"]: g for g in trust["subgroups"]}
    assert set(groups) == {"site", "age"}  # not the free-text column
    n_test = json.loads((run / "metrics.json").read_text())["test"]["n"]
    assert sum(g["n"] for g in groups["site"]["groups"]) == n_test
    assert all(g["group"].endswith("9") for g in groups["age"]["groups"])  # decade bands
    with (run / "predictions.csv").open() as f:
        test = [r for r in csv.DictReader(f) if r["split"] == "test"]
    assert len(test) == n_test


def test_positive_class_is_the_finding(breast_run):
    """BreastMNIST's class 1 is 'normal, benign': the planner makes 'malignant' the positive
    class, so sensitivity means malignant cases found (checked with scikit-learn)."""
    from sklearn.metrics import recall_score

    plan = ml.load_plan(breast_run / "plan.yaml")
    assert plan.evaluate.positive_class == "malignant"
    test = json.loads((breast_run / "metrics.json").read_text())["test"]
    assert test["positive_class"] == "malignant"
    with (breast_run / "predictions.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    truth = [r["label"] == "malignant" for r in rows]
    called = [r["predicted"] == "malignant" for r in rows]
    assert test["sensitivity"] == pytest.approx(recall_score(truth, called))
    assert test["specificity"] == pytest.approx(
        recall_score(np.logical_not(truth), np.logical_not(called))
    )
    ci = json.loads((breast_run / "trust.json").read_text())["confidence_intervals"]["metrics"]
    assert ci["sensitivity"]["value"] == pytest.approx(test["sensitivity"])


def test_positive_class_must_be_a_class(medmnist_dir, tmp_path):
    with pytest.raises(ConfigError, match="'cancer' is not a class"):
        ml.train("breastmnist", data_dir=str(medmnist_dir), output=tmp_path / "r",
                 overrides={"evaluate.positive_class": "cancer"})  # fmt: skip
    assert not (tmp_path / "r").exists()


def test_predict_writes_heatmaps(breast_run, medmnist_dir, tmp_path):
    from PIL import Image

    images = np.load(medmnist_dir / "breastmnist.npz")["test_images"][:4]
    files = []
    for i, img in enumerate(images):
        files.append(tmp_path / f"scan{i}.png")
        Image.fromarray(img).save(files[-1])
    out = tmp_path / "maps"
    rows = ml.predict(breast_run, files, onnx=False, heatmaps=out, output=tmp_path / "p.csv")
    assert [Path(r["heatmap"]).name for r in rows] == [f"scan{i}_gradcam.png" for i in range(4)]
    for r in rows:
        with Image.open(r["heatmap"]) as im:
            assert im.size[0] > 2 * 28 and im.mode == "RGB"  # original | overlay, enlarged
    with (tmp_path / "p.csv").open() as f:
        assert all(Path(r["heatmap"]).is_file() for r in csv.DictReader(f))
