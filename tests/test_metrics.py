"""medlens.evaluate.metrics against scikit-learn, medmnist's evaluator and torchmetrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    multilabel_confusion_matrix,
    precision_score,
    recall_score,
    roc_auc_score,
)

from medlens.errors import ConfigError
from medlens.evaluate.metrics import (
    METRIC_LABELS,
    classification_metrics,
    confusion,
    expected_calibration_error,
    maximum_calibration_error,
    medmnist_acc,
    medmnist_auc,
    nll,
    predict_labels,
    validation_scores,
)

N_BINS = 15


def softmax_data(n: int, k: int, seed: int, scale: float = 2.0):
    """Random softmax probabilities with labels that agree with them somewhat."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * scale
    logits[np.arange(n), y] += 1.0  # better than chance so the metrics are not all ~1/K
    p = np.exp(logits - logits.max(1, keepdims=True))
    return y, p / p.sum(1, keepdims=True)


def multilabel_data(n: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.4).astype(int)
    p = 1.0 / (1.0 + np.exp(-(rng.normal(size=(n, k)) * 1.5 + (y - 0.5) * 1.5)))
    return y, p


def ovr_macro_auc(y, p):
    return float(np.mean([roc_auc_score(y == c, p[:, c]) for c in range(p.shape[1])]))


def tm_calibration(p, y, norm: str, n_bins: int = N_BINS) -> float:
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    return float(
        tmf.multiclass_calibration_error(
            torch.tensor(p), torch.tensor(y), p.shape[1], n_bins=n_bins, norm=norm
        )
    )


def assert_off_bin_edges(conf):
    """torchmetrics bins [lo, hi) with a phantom extra bin for exactly 1.0, we bin (lo, hi]
    (Guo et al. 2017): the two agree only where no confidence sits on an edge."""
    edges = np.linspace(0, 1, N_BINS + 1)
    assert np.abs(np.asarray(conf)[:, None] - edges[None, :]).min() > 1e-6


# ---------------------------------------------------------------------------------------------
# ACC / AUC
# ---------------------------------------------------------------------------------------------


# medmnist's task strings for ours; its labels come as (N, 1) for single-label tasks
MEDMNIST_TASK = {
    "binary": "binary-class",
    "multi-class": "multi-class",
    "ordinal": "ordinal-regression",
    "multi-label": "multi-label, binary-class",
}


def medmnist_reference(y, p, task: str, threshold: float = 0.5) -> tuple[float, float]:
    """(ACC, AUC) from medmnist's own evaluator (which imports torch; medlens does not)."""
    from medmnist.evaluator import getACC, getAUC

    y = y if task == "multi-label" else np.asarray(y).reshape(-1, 1)
    name = MEDMNIST_TASK[task]
    return getACC(y, p, name, threshold=threshold), getAUC(y, p, name)


def random_scores(task: str, seed: int):
    """As many classes as PathMNIST (9) and labels as ChestMNIST (14): from 8 on, numpy's
    pairwise mean no longer adds in order, and only medmnist's order gives its floats."""
    if task == "multi-label":
        return multilabel_data(700, 14, seed=seed)
    return softmax_data(900, {"binary": 2, "multi-class": 9, "ordinal": 5}[task], seed=seed)


@pytest.fixture(scope="module")
def real_scores(medmnist_dir):
    """Real images and a real model's scores: logistic regression on 14 x 14 pixels of
    BreastMNIST and PneumoniaMNIST, every task type built from their labels.

    multi-class / ordinal: the four (dataset, class) pairs; multi-label: "is a chest X-ray"
    and "shows the finding" (malignant or pneumonia); binary: the finding."""
    from sklearn.linear_model import LogisticRegression

    def split(name: str, part: str, n: int):
        data = np.load(medmnist_dir / f"{name}.npz")
        x = data[f"{part}_images"][:n, ::2, ::2].reshape(-1, 196) / 255.0
        return x, data[f"{part}_labels"][:n, 0].astype(int)

    def pooled(part: str, n: int):
        (xb, yb), (xp, yp) = split("breastmnist", part, n), split("pneumoniamnist", part, n)
        chest = np.r_[np.zeros(len(yb), int), np.ones(len(yp), int)]
        finding = np.r_[yb == 0, yp == 1].astype(int)  # malignant (0), pneumonia (1)
        return np.vstack([xb, xp]), 2 * chest + np.r_[yb, yp], np.stack([chest, finding], 1)

    x_tr, four_tr, two_tr = pooled("train", 500)
    x_te, four_te, two_te = pooled("test", 150)
    out = {}
    model = LogisticRegression(max_iter=300).fit(x_tr, four_tr)
    out["multi-class"] = out["ordinal"] = (four_te, model.predict_proba(x_te))
    fits = [LogisticRegression(max_iter=300).fit(x_tr, two_tr[:, j]) for j in range(2)]
    out["multi-label"] = (two_te, np.stack([f.predict_proba(x_te)[:, 1] for f in fits], 1))
    out["binary"] = (two_te[:, 1], fits[1].predict_proba(x_te))
    return out


@pytest.mark.parametrize("task", ["binary", "multi-class", "ordinal", "multi-label"])
@pytest.mark.parametrize("scores", ["random", "real"])
def test_acc_auc_equal_medmnist_evaluator(task, scores, request):
    if scores == "random":
        y, p = random_scores(task, seed=len(task))
    else:
        y, p = request.getfixturevalue("real_scores")[task]
    acc, auc = medmnist_acc(y, p, task), medmnist_auc(y, p, task)
    assert 0.15 < acc < 0.99 and 0.55 < auc < 0.999, (acc, auc)  # not a degenerate data set
    want_acc, want_auc = medmnist_reference(y, p, task)
    assert (acc, auc) == (want_acc, want_auc)  # the same floats, not merely close
    if task != "multi-label":  # (N, 1) labels, medmnist's own layout, give the same numbers
        assert (medmnist_acc(y[:, None], p, task), medmnist_auc(y[:, None], p, task)) == (acc, auc)
    if task in ("binary", "multi-label"):  # and so do other thresholds
        for threshold in (0.3, 0.7):
            want = medmnist_reference(y, p, task, threshold)[0]
            assert medmnist_acc(y, p, task, threshold=threshold) == want


@pytest.mark.parametrize(("k", "task"), [(3, "multi-class"), (5, "multi-class"), (5, "ordinal")])
def test_multiclass_acc_auc_vs_sklearn(k, task):
    y, p = softmax_data(400, k, seed=k)
    acc, auc = medmnist_acc(y, p, task), medmnist_auc(y, p, task)
    assert acc == pytest.approx(accuracy_score(y, p.argmax(1)), abs=1e-12)
    assert auc == pytest.approx(ovr_macro_auc(y, p), abs=1e-12)


def test_binary_acc_auc_vs_sklearn():
    y, p = softmax_data(300, 2, seed=2)
    acc, auc = medmnist_acc(y, p, "binary"), medmnist_auc(y, p, "binary")
    assert acc == pytest.approx(accuracy_score(y, p[:, 1] > 0.5), abs=1e-12)
    assert auc == pytest.approx(roc_auc_score(y, p[:, 1]), abs=1e-12)
    # (N,) = P(class 1) gives the same numbers
    assert medmnist_acc(y, p[:, 1], "binary") == acc
    assert medmnist_auc(y, p[:, 1], "binary") == auc
    acc_07 = medmnist_acc(y, p, "binary", threshold=0.7)
    assert acc_07 == pytest.approx(accuracy_score(y, p[:, 1] > 0.7), abs=1e-12)


def test_multilabel_acc_auc_vs_sklearn():
    y, p = multilabel_data(350, 4, seed=4)
    acc, auc = medmnist_acc(y, p, "multi-label"), medmnist_auc(y, p, "multi-label")
    want_acc = np.mean([accuracy_score(y[:, j], p[:, j] > 0.5) for j in range(4)])
    want_auc = np.mean([roc_auc_score(y[:, j], p[:, j]) for j in range(4)])
    assert acc == pytest.approx(want_acc, abs=1e-12)
    assert auc == pytest.approx(want_auc, abs=1e-12)


def test_validation_scores_and_nll_vs_sklearn():
    from sklearn.metrics import log_loss

    y, p = softmax_data(300, 4, seed=12)
    assert validation_scores(p, y, "multi-class") == (
        medmnist_auc(y, p, "multi-class"),
        medmnist_acc(y, p, "multi-class"),
    )
    auc, acc = validation_scores(p, np.where(y == 3, 0, y), "multi-class")  # class 3 absent
    assert np.isnan(auc) and acc == medmnist_acc(np.where(y == 3, 0, y), p, "multi-class")
    assert nll(p, y, "multi-class") == pytest.approx(log_loss(y, p), abs=1e-9)
    yb, pb = softmax_data(300, 2, seed=13)
    assert nll(pb, yb, "binary") == pytest.approx(log_loss(yb, pb[:, 1]), abs=1e-9)
    ym, pm = multilabel_data(200, 3, seed=14)
    per_label = np.mean([log_loss(ym[:, j], pm[:, j]) for j in range(3)])
    assert nll(pm, ym, "multi-label") == pytest.approx(per_label, abs=1e-9)
    # a certain mistake costs -log(1e-7), not infinity
    assert nll(np.array([[1.0, 0.0]]), np.array([1]), "binary") == pytest.approx(-np.log(1e-7))


def test_single_sample_and_single_label_survive_medmnist_squeeze():
    assert medmnist_acc(np.array([[2]]), np.array([[0.1, 0.2, 0.7]]), "multi-class") == 1.0
    assert medmnist_acc(np.array([1]), np.array([[0.6, 0.4]]), "binary") == 0.0
    assert medmnist_acc(np.array([[1, 0]]), np.array([[0.9, 0.8]]), "multi-label") == 0.5
    y = np.array([[0], [1], [1]])
    p = np.array([[0.2], [0.9], [0.4]])
    assert medmnist_acc(y, p, "multi-label") == pytest.approx(2 / 3)
    assert medmnist_auc(y, p, "multi-label") == 1.0


def test_predict_labels_consistent_with_acc():
    y, p = softmax_data(200, 2, seed=7)
    pred = predict_labels(p, "binary")
    assert pred.shape == (200,) and pred.dtype.kind == "i"
    assert accuracy_score(y, pred) == medmnist_acc(y, p, "binary")
    assert predict_labels(np.array([[0.5, 0.5]]), "binary").tolist() == [0]  # strict >
    _, p3 = softmax_data(200, 3, seed=8)
    assert np.array_equal(predict_labels(p3, "multi-class"), p3.argmax(1))
    _, pm = multilabel_data(200, 4, seed=9)
    pred_ml = predict_labels(pm, "multi-label", threshold=0.3)
    assert pred_ml.shape == (200, 4) and np.array_equal(pred_ml, (pm > 0.3).astype(int))


# ---------------------------------------------------------------------------------------------
# precision / recall / specificity / F1 / balanced accuracy / confusion
# ---------------------------------------------------------------------------------------------


def test_binary_report_vs_sklearn():
    y, p = softmax_data(500, 2, seed=11)
    pred = (p[:, 1] > 0.5).astype(int)
    m = classification_metrics(y, p, "binary")
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(y, pred, pos_label=0))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["precision_macro"] == pytest.approx(precision_score(y, pred, average="macro"))
    assert m["recall_macro"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    # one-vs-rest specificity of class 0 is the recall of class 1 and vice versa
    assert m["specificity_macro"] == pytest.approx(m["recall_macro"])
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    assert m["per_class"][1]["auc"] == pytest.approx(roc_auc_score(y, p[:, 1]))
    assert m["per_class"][0]["auc"] == pytest.approx(roc_auc_score(y == 0, p[:, 0]))
    assert [c["support"] for c in m["per_class"]] == np.bincount(y).tolist()


@pytest.mark.parametrize("k", [3, 5])
def test_multiclass_report_vs_sklearn(k):
    y, p = softmax_data(450, k, seed=20 + k)
    pred = p.argmax(1)
    m = classification_metrics(y, p, "multi-class")
    assert "sensitivity" not in m and "specificity" not in m
    for key, fn in [("precision", precision_score), ("recall", recall_score), ("f1", f1_score)]:
        per = fn(y, pred, average=None, zero_division=0)
        assert [c[key] for c in m["per_class"]] == pytest.approx(per.tolist())
        assert m[f"{key}_macro"] == pytest.approx(fn(y, pred, average="macro", zero_division=0))
    mcm = multilabel_confusion_matrix(y, pred)
    spec = mcm[:, 0, 0] / (mcm[:, 0, 0] + mcm[:, 0, 1])
    assert [c["specificity"] for c in m["per_class"]] == pytest.approx(spec.tolist())
    assert m["specificity_macro"] == pytest.approx(spec.mean())
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    aucs = [roc_auc_score(y == c, p[:, c]) for c in range(k)]
    assert [c["auc"] for c in m["per_class"]] == pytest.approx(aucs)
    assert m["auc"] == pytest.approx(np.mean(aucs))
    assert m["acc"] == pytest.approx(accuracy_score(y, pred))


def test_multilabel_report_vs_sklearn():
    y, p = multilabel_data(400, 4, seed=30)
    pred = (p > 0.5).astype(int)
    m = classification_metrics(y, p, "multi-label", label_names=["a", "b", "c", "d"])
    assert [c["name"] for c in m["per_class"]] == ["a", "b", "c", "d"]
    for key, fn in [("precision", precision_score), ("recall", recall_score), ("f1", f1_score)]:
        per = fn(y, pred, average=None, zero_division=0)
        assert [c[key] for c in m["per_class"]] == pytest.approx(per.tolist())
        assert m[f"{key}_macro"] == pytest.approx(fn(y, pred, average="macro", zero_division=0))
    bal = np.mean([balanced_accuracy_score(y[:, j], pred[:, j]) for j in range(4)])
    assert m["balanced_accuracy"] == pytest.approx(bal)
    spec = [recall_score(y[:, j], pred[:, j], pos_label=0) for j in range(4)]
    assert [c["specificity"] for c in m["per_class"]] == pytest.approx(spec)
    assert m["confusion_matrix"] == multilabel_confusion_matrix(y, pred).tolist()
    assert np.array(m["confusion_matrix"]).shape == (4, 2, 2)
    assert [c["support"] for c in m["per_class"]] == y.sum(0).tolist()
    aucs = [roc_auc_score(y[:, j], p[:, j]) for j in range(4)]
    assert [c["auc"] for c in m["per_class"]] == pytest.approx(aucs)
    assert m["auc"] == pytest.approx(np.mean(aucs))
    assert m["n"] == 400


def test_confusion_function():
    y, p = softmax_data(300, 5, seed=40)
    pred = p.argmax(1)
    assert np.array_equal(confusion(y, pred, 5), confusion_matrix(y, pred))
    # absent classes still get their row and column
    cm = confusion([0, 0, 1], [0, 1, 1], 4)
    assert cm.shape == (4, 4) and cm.tolist()[0] == [1, 1, 0, 0]
    ym, pm = multilabel_data(300, 4, seed=41)
    pred_ml = (pm > 0.5).astype(int)
    assert np.array_equal(confusion(ym, pred_ml, 4), multilabel_confusion_matrix(ym, pred_ml))
    with pytest.raises(ConfigError, match="length mismatch"):
        confusion(y[:-1], pred, 5)


# ---------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 5])
def test_ece_mce_vs_torchmetrics(k):
    y, p = softmax_data(500, k, seed=50 + k)
    assert_off_bin_edges(p.max(1))
    task = "binary" if k == 2 else "multi-class"
    ece = expected_calibration_error(y, p, task)
    mce = maximum_calibration_error(y, p, task)
    assert ece == pytest.approx(tm_calibration(p, y, "l1"), abs=1e-6)
    assert mce == pytest.approx(tm_calibration(p, y, "max"), abs=1e-6)
    assert 0.02 < ece < mce < 1  # not trivially zero
    m = classification_metrics(y, p, task)
    assert m["ece"] == pytest.approx(ece, abs=1e-12) and m["mce"] == pytest.approx(mce, abs=1e-12)
    if k == 2:  # (N,) probability of class 1 is the same top-label calibration
        assert expected_calibration_error(y, p[:, 1], "binary") == pytest.approx(ece, abs=1e-12)


def test_multilabel_ece_is_calibration_of_every_label_decision():
    y, p = multilabel_data(300, 4, seed=60)
    pairs = np.stack([1 - p.ravel(), p.ravel()], axis=1)  # each (sample, label) as a binary call
    assert_off_bin_edges(pairs.max(1))
    ece = expected_calibration_error(y, p, "multi-label")
    mce = maximum_calibration_error(y, p, "multi-label")
    assert ece == pytest.approx(tm_calibration(pairs, y.ravel(), "l1"), abs=1e-6)
    assert mce == pytest.approx(tm_calibration(pairs, y.ravel(), "max"), abs=1e-6)


def test_ece_bin_edges_follow_guo_et_al():
    # 4 bins: the edges 0.25, 0.5, 0.75, 1 are exact floats, so these confidences sit on them.
    # Bins are (lo, hi] (Guo et al. 2017): 1.0 -> (0.75, 1], 0.75 -> (0.5, 0.75], 0.5 -> (0.25, 0.5]
    p = np.array(
        [
            [1.0, 0.0, 0.0],  # y 0, right
            [0.0, 1.0, 0.0],  # y 0, wrong
            [0.95, 0.05, 0.0],  # y 0, right
            [0.25, 0.75, 0.0],  # y 1, right
            [0.5, 0.25, 0.25],  # y 0, right
        ]
    )
    y = np.array([0, 0, 0, 1, 0])
    gaps = [3 * abs(2 / 3 - 2.95 / 3), abs(1 - 0.75), abs(1 - 0.5)]  # count * |acc - conf|
    want = sum(gaps) / 5  # 0.34; bins [lo, hi) would give 0.24
    ece = expected_calibration_error(y, p, "multi-class", n_bins=4)
    assert ece == pytest.approx(want, abs=1e-12)
    assert maximum_calibration_error(y, p, "multi-class", n_bins=4) == pytest.approx(0.5)
    # torchmetrics 1.9 bins [lo, hi) and puts exactly 1.0 in a phantom (n_bins + 1)-th bin
    # (torchmetrics#3510). Moved just below their edge, the confidences fall in the same bins
    # under both conventions, and torchmetrics then agrees with us.
    p_below = p.copy()
    p_below[np.arange(5), p.argmax(1)] -= 1e-6
    assert tm_calibration(p_below, y, "l1", n_bins=4) == pytest.approx(want, abs=2e-6)
    assert tm_calibration(p, y, "l1", n_bins=4) != pytest.approx(want, abs=1e-3)
    # multi-label confidence max(p, 1 - p) = 0.5 for p = 0.5 (predicted 0); one bin = |acc - conf|
    assert expected_calibration_error([[1]], [[0.5]], "multi-label") == pytest.approx(0.5)
    assert expected_calibration_error(y, p, "multi-class", n_bins=1) == pytest.approx(
        abs(4 / 5 - np.mean([1.0, 1.0, 0.95, 0.75, 0.5]))
    )


def test_ece_of_calibrated_and_of_confidently_wrong_predictions():
    rng = np.random.default_rng(70)
    n, k = 200_000, 3
    p = rng.dirichlet(np.ones(k) * 0.7, size=n)
    y = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(1)  # labels drawn from p
    y = np.minimum(y, k - 1)  # guard against cumsum rounding just below 1
    assert expected_calibration_error(y, p, "multi-class") < 0.01
    ym = (rng.random((n // 4, 4)) < (pm := rng.random((n // 4, 4)))).astype(int)
    assert expected_calibration_error(ym, pm, "multi-label") < 0.01

    y_wrong = np.arange(300) % 3
    p_wrong = np.full((300, 3), 0.0005)
    p_wrong[np.arange(300), (y_wrong + 1) % 3] = 0.999
    assert expected_calibration_error(y_wrong, p_wrong, "multi-class") == pytest.approx(0.999)
    assert maximum_calibration_error(y_wrong, p_wrong, "multi-class") == pytest.approx(0.999)
    assert medmnist_acc(y_wrong, p_wrong, "multi-class") == 0.0


# ---------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------


def test_bad_inputs_raise_config_error():
    y, p = softmax_data(50, 3, seed=80)
    with pytest.raises(ConfigError, match=r"length mismatch.*49.*50"):
        medmnist_acc(y[:-1], p, "multi-class")
    p_nan = p.copy()
    p_nan[7, 1] = np.nan
    with pytest.raises(ConfigError, match=r"NaN.*row 7"):
        classification_metrics(y, p_nan, "multi-class")
    with pytest.raises(ConfigError, match=r"label_names has 3 names but there are 4 classes"):
        classification_metrics(
            y, np.full((50, 4), 0.25), "multi-class", label_names=["a", "b", "c"]
        )
    with pytest.raises(ConfigError, match=r"class indices in \[0, 2\].*2 columns"):
        medmnist_acc(y, p[:, :2], "multi-class")
    with pytest.raises(ConfigError, match=r"\(N, 2\)"):
        medmnist_acc(y % 2, p, "binary")
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        expected_calibration_error(y, p * 3 - 1, "multi-class")
    with pytest.raises(ConfigError, match="unknown task 'regression'"):
        medmnist_acc(y, p, "regression")
    ym, pm = multilabel_data(50, 4, seed=81)
    with pytest.raises(ConfigError, match=r"3 label columns.*4 columns"):
        medmnist_acc(ym[:, :3], pm, "multi-label")
    with pytest.raises(ConfigError, match="label_names has 2 names"):
        classification_metrics(y, p, "multi-class", label_names=["a", "b"])
    # tiny numerical overshoot of a softmax is fine
    medmnist_acc(y, np.clip(p + 5e-7, 0, 1 + 5e-7), "multi-class")


def test_auc_with_absent_class_names_the_class():
    y, p = softmax_data(60, 3, seed=90)
    y = np.where(y == 2, 0, y)  # class 2 never occurs
    with pytest.raises(ConfigError, match="class 2 absent"):
        medmnist_auc(y, p, "multi-class")
    with pytest.raises(ConfigError, match="class 1 absent"):
        medmnist_auc(np.zeros(10, int), np.full(10, 0.3), "binary")
    ym, pm = multilabel_data(60, 4, seed=91)
    ym[:, 3] = 1
    with pytest.raises(ConfigError, match="label 3 is always 1"):
        medmnist_auc(ym, pm, "multi-label")
    # the full report degrades to None instead of failing
    m = classification_metrics(y, p, "multi-class")
    assert m["auc"] is None and m["per_class"][2]["auc"] is None
    assert m["per_class"][2]["support"] == 0 and m["per_class"][0]["auc"] is not None
    json.dumps(m, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# the report as a whole
# ---------------------------------------------------------------------------------------------

TOP_KEYS = {
    "acc",
    "auc",
    "balanced_accuracy",
    "precision_macro",
    "recall_macro",
    "specificity_macro",
    "f1_macro",
    "ece",
    "mce",
    "n",
    "per_class",
    "confusion_matrix",
    "label_names",
}
BINARY_KEYS = {"sensitivity", "specificity", "precision", "f1", "positive_class"}
CLASS_KEYS = {"name", "support", "precision", "recall", "specificity", "f1", "auc"}


def _plain(x):
    """Only JSON's own python types, recursively (no numpy scalars)."""
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in x.items())
    if isinstance(x, list):
        return all(_plain(v) for v in x)
    return x is None or type(x) in (int, float, str, bool)


@pytest.mark.parametrize(("task", "k"), [("binary", 2), ("multi-class", 5), ("multi-label", 4)])
def test_report_is_json_and_complete(task, k):
    if task == "multi-label":
        y, p = multilabel_data(250, k, seed=100)
    else:
        y, p = softmax_data(250, k, seed=100 + k)
    m = classification_metrics(y, p, task)
    want = TOP_KEYS | (BINARY_KEYS if task == "binary" else set())
    assert set(m) == want
    assert _plain(m)
    assert json.loads(json.dumps(m, allow_nan=False)) == m
    assert len(m["per_class"]) == k and all(set(c) == CLASS_KEYS for c in m["per_class"])
    assert m["label_names"] == [str(i) for i in range(k)]
    assert m["n"] == 250
    text = ("per_class", "confusion_matrix", "label_names", "positive_class")
    scalar_keys = {key for key in m if key not in text}
    assert scalar_keys <= set(METRIC_LABELS)
    assert all(0.0 <= m[key] <= 1.0 for key in scalar_keys - {"n"})


def test_binary_positive_class_zero_matches_sklearn():
    from sklearn.metrics import f1_score, precision_score, recall_score

    y, p = softmax_data(300, 2, seed=7)
    m = classification_metrics(y, p, "binary", label_names=["lesion", "normal"], positive=0)
    pred = p.argmax(1)
    assert m["positive_class"] == "lesion"
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred, pos_label=0))
    assert m["specificity"] == pytest.approx(recall_score(y, pred, pos_label=1))
    assert m["precision"] == pytest.approx(precision_score(y, pred, pos_label=0))
    assert m["f1"] == pytest.approx(f1_score(y, pred, pos_label=0))
