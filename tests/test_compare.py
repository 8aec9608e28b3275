"""``medlens compare``: DeLong's test against brute force, the leaderboard against each run's own
metrics, resuming without retraining, and one clear line for every bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

import medlens.api as ml
from medlens.cli import main
from medlens.compare.delong import delong_covariance, delong_test
from medlens.compare.leaderboard import CSV_FIELDS
from medlens.compare.paired import paired_auc_test, paired_bootstrap_auc
from medlens.evaluate.metrics import medmnist_auc

MODELS = ("small_cnn", "test_nfnet")  # two small CNNs: ~2-6 s an epoch on two CPU cores
METRIC_KEYS = {
    "auc": "auc",
    "acc": "acc",
    "f1": "f1",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "ece": "ece",
}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on two shared cores, two threads that wait for each other make
    small models train several times slower (measured: 6 s against 1 s an epoch)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------------- DeLong


def delong_bruteforce(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988) straight from the definition: every positive against every
    negative (psi = 1, 1/2 for a tie, 0), structural components, their covariances."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    diff = pos[:, :, None] - neg[:, None, :]
    psi = (diff > 0) + 0.5 * (diff == 0)
    aucs = psi.mean(axis=(1, 2))
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    return aucs, np.cov(v10) / m + np.cov(v01) / n


def correlated_scores(n: int, seed: int, gap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    shared = rng.normal(size=n)
    a = (1.0 + gap) * y + shared + 0.8 * rng.normal(size=n)
    b = 1.0 * y + shared + 0.8 * rng.normal(size=n)
    return y, a, b


def test_delong_covariance_matches_brute_force_with_ties():
    rng = np.random.default_rng(3)
    y = (rng.random(60) < 0.45).astype(int)
    # rounded scores: many ties within and across the classes
    scores = np.round(np.stack([y + rng.normal(size=60), 0.5 * y + rng.normal(size=60)]), 1)
    fast_auc, fast_cov = delong_covariance(scores[:, y == 1], scores[:, y == 0])
    ref_auc, ref_cov = delong_bruteforce(y, scores)
    np.testing.assert_allclose(fast_auc, ref_auc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast_cov, ref_cov, rtol=1e-10, atol=1e-15)
    assert fast_auc[0] == pytest.approx(roc_auc_score(y, scores[0]), abs=1e-12)
    result = delong_test(y, scores[0], scores[1])
    var = ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1]
    assert result["se"] == pytest.approx(np.sqrt(var), rel=1e-10)
    assert result["difference"] == pytest.approx(ref_auc[0] - ref_auc[1], abs=1e-12)
    assert result["low"] < result["difference"] < result["high"]


def test_delong_hand_computed_example():
    # positives 0.35, 0.8, 0.9 against negatives 0.1, 0.4, 0.2: 8 of 9 pairs right
    y = np.array([0, 0, 1, 1, 0, 1])
    a = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    aucs, cov = delong_covariance(a[y == 1], a[y == 0])
    assert aucs[0] == pytest.approx(8 / 9)
    # V10 = (2/3, 1, 1) -> var 1/27; V01 = (1, 2/3, 1) -> var 1/27; S = (1/27)/3 + (1/27)/3
    assert cov[0, 0] == pytest.approx(2 / 81)


def permutation_p(y: np.ndarray, a: np.ndarray, b: np.ndarray, n_perm: int, seed: int) -> float:
    """Paired permutation test: under H0 the two models' scores of a case are exchangeable."""
    rng = np.random.default_rng(seed)
    swap = rng.random((n_perm, len(y))) < 0.5
    pa, pb = np.where(swap, b, a), np.where(swap, a, b)
    pos = y == 1
    m, n = pos.sum(), (~pos).sum()

    def aucs(s: np.ndarray) -> np.ndarray:
        r = rankdata(s, axis=1)
        return (r[:, pos].sum(axis=1) - m * (m + 1) / 2) / (m * n)

    observed = roc_auc_score(y, a) - roc_auc_score(y, b)
    null = aucs(pa) - aucs(pb)
    return float(np.mean(np.abs(null) >= abs(observed) - 1e-12))


@pytest.mark.parametrize("gap, seed", [(0.25, 0), (0.4, 1), (0.0, 2)])
def test_delong_p_value_agrees_with_permutation_and_bootstrap(gap, seed):
    y, a, b = correlated_scores(300, seed, gap)
    d = delong_test(y, a, b)
    p_perm = permutation_p(y, a, b, n_perm=4000, seed=seed)
    assert abs(d["p_value"] - p_perm) < 0.03 + 0.15 * p_perm, (d["p_value"], p_perm)
    probs = lambda s: np.stack([1 - s, s], axis=1)  # noqa: E731
    scale = lambda s: 1 / (1 + np.exp(-s))  # noqa: E731
    boot = paired_bootstrap_auc(y, probs(scale(a)), probs(scale(b)), "binary", n_boot=3000)
    assert boot["difference"] == pytest.approx(d["difference"], abs=1e-12)
    assert boot["se"] == pytest.approx(d["se"], rel=0.12)
    assert boot["low"] == pytest.approx(d["low"], abs=0.02)
    assert boot["high"] == pytest.approx(d["high"], abs=0.02)


def test_paired_multiclass_bootstrap_is_macro_auc():
    rng = np.random.default_rng(0)
    y = np.arange(150) % 3
    logits = np.eye(3)[y] * 1.5 + rng.normal(size=(150, 3))
    pa = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pb = np.roll(pa, 1, axis=0) * 0.3 + pa * 0.7
    r = paired_auc_test(y, pa, pb, "multi-class", n_boot=500)
    assert r["method"] == "paired bootstrap"
    assert r["auc_a"] == pytest.approx(medmnist_auc(y, pa, "multi-class"), abs=1e-12)
    assert r["auc_b"] == pytest.approx(medmnist_auc(y, pb, "multi-class"), abs=1e-12)
    assert r["low"] < r["difference"] < r["high"] and 0 < r["p_value"] < 1
    same = paired_auc_test(y, pa, pa, "multi-class", n_boot=200)
    assert same["difference"] == 0 and same["p_value"] == 1.0


# ------------------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def comparison(medmnist_dir, tmp_path_factory):
    """small_cnn and test_nfnet x 2 seeds x 1 epoch on BreastMNIST (the CLI then reruns it)."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    ml.compare(
        "breastmnist",
        models=",".join(MODELS),
        seeds=2,
        epochs=1,
        device="cpu",
        data_dir=str(medmnist_dir),
        output=out,
        latency_seconds=0.25,
    )
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_leaderboard_has_every_column_and_the_runs_own_numbers(comparison):
    rows = {r["model"]: r for r in read_csv(comparison / "leaderboard.csv")}
    assert set(rows) == set(MODELS)
    best = max(rows, key=lambda m: float(rows[m]["auc_mean"]))
    for model, row in rows.items():
        assert list(row) == list(CSV_FIELDS)
        empty = [k for k, v in row.items() if v == ""]
        if model == best:  # no paired test of the best model against itself
            assert set(empty) == {"diff_vs_best", "diff_low", "diff_high", "p_value"}
        else:
            assert empty == []
        runs = [comparison / "runs" / f"{model}-seed{s}" for s in (0, 1)]
        tests = [json.loads((r / "metrics.json").read_text())["test"] for r in runs]
        for column, key in METRIC_KEYS.items():
            values = [t[key] for t in tests]
            assert float(row[f"{column}_mean"]) == pytest.approx(np.mean(values), abs=1e-12)
            assert float(row[f"{column}_std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-12)
            assert float(row[f"{column}_min"]) == pytest.approx(min(values), abs=1e-12)
            assert float(row[f"{column}_max"]) == pytest.approx(max(values), abs=1e-12)
        seconds = [sum(float(e["seconds"]) for e in read_csv(r / "curves.csv")) for r in runs]
        assert float(row["train_s_mean"]) == pytest.approx(np.mean(seconds), abs=1e-9)
        assert row["seeds"] == "2" and row["epochs"] == "1"
        assert float(row["gflops"]) > 0 and float(row["latency_ms"]) > 0
        assert float(row["images_per_s"]) > 0
    assert rows["small_cnn"]["parameters"] == "388834"
    # small_cnn: 4 conv blocks at 28 px; FlopCounterMode counts a multiply-add as 2 FLOPs
    assert float(rows["small_cnn"]["gflops"]) == pytest.approx(0.020212, abs=1e-6)


def seed_averaged_positive(run_dirs: list[Path], column: str) -> np.ndarray:
    probs = []
    for run in run_dirs:
        rows = [r for r in read_csv(run / "predictions.csv") if r["split"] == "test"]
        probs.append([float(r[column]) for r in rows])
    return np.mean(probs, axis=0)


def test_paired_delong_test_on_seed_averaged_test_probabilities(comparison, medmnist_dir):
    info = json.loads((comparison / "comparison.json").read_text())
    assert info["best"] == info["leaderboard"][0]["model"]
    (paired,) = info["paired_tests"]
    other = next(m for m in MODELS if m != info["best"])
    assert paired["model"] == other and paired["method"] == "delong"
    test = np.load(medmnist_dir / "breastmnist.npz")["test_labels"].ravel()
    positive = test == 0  # the planner's positive class of BreastMNIST: malignant (class 0)
    p = {
        m: seed_averaged_positive(
            [comparison / "runs" / f"{m}-seed{s}" for s in (0, 1)], "p_malignant"
        )
        for m in MODELS
    }
    auc = {m: roc_auc_score(positive, p[m]) for m in MODELS}
    assert paired["auc_a"] == pytest.approx(auc[info["best"]], abs=1e-9)
    assert paired["auc_b"] == pytest.approx(auc[other], abs=1e-9)
    reference = delong_test(positive, p[info["best"]], p[other])
    assert paired["p_value"] == pytest.approx(reference["p_value"], rel=1e-9)
    assert paired["low"] <= paired["difference"] <= paired["high"]
    md = (comparison / "leaderboard.md").read_text()
    assert all(m in md for m in MODELS) and "Paired tests" in md and "DeLong" in md
    png = (comparison / "leaderboard.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_rerun_does_not_retrain_and_resumes_an_unevaluated_run(comparison, medmnist_dir, tmp_path):
    folder = tmp_path / "cmp"
    shutil.copytree(comparison, folder)
    weights = sorted(folder.glob("runs/*/checkpoints/*.safetensors"))
    stamps = {w: w.stat().st_mtime_ns for w in weights}
    before = read_csv(folder / "leaderboard.csv")
    (folder / "runs" / "small_cnn-seed1" / "metrics.json").unlink()  # as if stopped before it
    result = ml.compare(
        "breastmnist",
        models=list(MODELS),
        seeds=2,
        epochs=1,
        device="cpu",
        data_dir=str(medmnist_dir),
        output=folder,
        latency_seconds=0.25,
    )
    assert result.statuses == {
        "small_cnn-seed0": "done",
        "small_cnn-seed1": "resumed",
        "test_nfnet-seed0": "done",
        "test_nfnet-seed1": "done",
    }
    assert {w: w.stat().st_mtime_ns for w in weights} == stamps  # no epoch was trained again
    after = read_csv(folder / "leaderboard.csv")
    for b, a in zip(before, after, strict=True):
        for key in ("model", "auc_mean", "acc_mean", "ece_mean", "gflops", "latency_ms"):
            assert a[key] == b[key]


def test_compare_prints_the_leaderboard(comparison, medmnist_dir, capsys):
    # everything is trained and measured: this reruns in a few seconds
    code, out, _ = run_cli(
        capsys,
        "compare",
        "breastmnist",
        "--models",
        ",".join(MODELS),
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--data-dir",
        medmnist_dir,
        "--output",
        comparison,
    )
    assert code == 0
    assert "already trained and evaluated" in out and "paired tests" in out
    assert all(m in out for m in MODELS) and "images/s b64" in out and "DeLong" in out


def test_help_names_the_options(capsys):
    code, out, _ = run_cli(capsys, "compare", "--help")
    assert code == 0
    for option in ("--models", "--seeds", "--epochs", "--device", "--data-dir", "--set"):
        assert option in out
    assert "--output" in out and "--threads" in out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--models", "small_cnn,resnet19"], "did you mean resnet18"),
        (["--models", "small_cnn", "--seeds", "0"], "--seeds must be at least 1"),
        (["--models", "small_cnn,densenet121"], "densenet121 cannot take this data's 1x28x28"),
        # built for 28 px, a patch-16 ViT sees one 16 px patch: caught, not trained
        (["--models", "vit_small_patch16_224"], "cuts images into 16 px patches"),
        (["--models", "small_cnn,small_cnn"], "names small_cnn twice"),
        (["--models", "small_cnn_3d"], "3D but the data is 2D"),
    ],
)
def test_bad_input_is_one_line_before_any_training(capsys, medmnist_dir, tmp_path, args, expected):
    out = tmp_path / "cmp"
    code, _, err = run_cli(
        capsys, "compare", "breastmnist", "--data-dir", medmnist_dir, "--output", out, *args
    )
    assert code == 2
    assert expected in err and err.strip().count("\n") == 0 and "Traceback" not in err
    assert not out.exists()


def test_other_plan_in_the_same_folder_is_refused(comparison, capsys, medmnist_dir):
    code, _, err = run_cli(
        capsys,
        "compare",
        "breastmnist",
        "--models",
        ",".join(MODELS),
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--data-dir",
        medmnist_dir,
        "--output",
        comparison,
    )
    assert code == 2 and "train.epochs: 1 -> 2" in err and "another plan" in err
