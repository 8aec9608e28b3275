"""Cross-validation and ensemble runs (issue 15): folds, out-of-fold predictions, the ensemble
model, resuming, later stages on an ensemble run, and the refusals.

Small generated data (blobs, 16 px), small_cnn, 3 folds of 1-2 epochs: the cross-validation
fixture is trained once per module.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import medlens.api as ml
from medlens.config import apply_overrides
from medlens.data.dataset import ArrayDataset, Split
from medlens.data.folds import fold_dataset, fold_ids, pooled
from medlens.data.sampling import sampling_weights
from medlens.data.splits import assign_folds
from medlens.errors import ConfigError, DataError
from medlens.evaluate.calibration import probabilities
from medlens.run import Run, plan_differences
from tests.conftest import write_blob_npz

TRAIN = {"epochs": 2, "device": "cpu", "model": "small_cnn"}
K = 3


# ------------------------------------------------------------------------------------ folds
def _dataset(n_train=60, n_val=20, n_test=30, with_patients=True, seed=0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    splits = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        labels = rng.integers(0, 3, n)
        images = rng.integers(0, 255, (n, 1, 8, 8), dtype=np.uint8)
        patients = np.array([f"{name}-{i // 3}" for i in range(n)]) if with_patients else None
        splits[name] = Split(images=images, labels=labels, patients=patients)
    return ArrayDataset(name="toy", task="multi-class", label_names=["a", "b", "c"], splits=splits)


def test_folds_disjoint_cover_patients_and_stratified():
    ds = _dataset()
    pool, folds = pooled(ds), fold_ids(ds, K, seed=1)
    assert len(pool) == 80 and sorted(np.unique(folds).tolist()) == [0, 1, 2]
    seen = np.zeros(len(pool), int)
    for i in range(K):
        fold = fold_dataset(ds, K, i, seed=1)
        val, train = fold.splits["val"], fold.splits["train"]
        assert len(val) + len(train) == len(pool)
        assert not set(val.patients) & set(train.patients)  # patients kept whole
        assert fold.splits["test"] is ds.splits["test"]  # the test split untouched
        np.testing.assert_array_equal(val.images, pool.images[folds == i])
        seen[folds == i] += 1
    assert (seen == 1).all()  # every train/val image in exactly one fold's val

    # image-level groups: each class within 1 image of its ideal count per fold
    flat = _dataset(n_train=101, n_val=0 + 32, with_patients=False, seed=3)
    pool, folds = pooled(flat), fold_ids(flat, 5, seed=0)
    for c in range(3):
        per_fold = np.bincount(folds[pool.labels == c], minlength=5)
        ideal = (pool.labels == c).sum() / 5
        assert np.abs(per_fold - ideal).max() <= 1, (c, per_fold, ideal)


def test_folds_are_multi_label_aware():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 4)) < [0.5, 0.2, 0.1, 0.05]).astype(int)
    folds = assign_folds(y, k=3, seed=0)
    for j in range(4):
        per_fold = np.array([y[folds == f, j].sum() for f in range(3)])
        assert np.abs(per_fold - y[:, j].sum() / 3).max() <= 1.5, (j, per_fold)


def test_too_many_folds_for_the_smallest_class():
    ds = _dataset()
    ds.splits["train"].labels[:] = 0
    ds.splits["val"].labels[:] = 0
    ds.splits["train"].labels[:6] = 1  # class b: 2 patients (3 images each); class c: none
    ds.splits["train"].labels[6:9] = 2
    with pytest.raises(DataError, match=r"--folds 3 but class 'c' has only 1 patients"):
        fold_ids(ds, 3)
    with pytest.raises(ConfigError, match="at least 2"):
        fold_ids(ds, 1)


def test_folds_refuse_a_val_split_the_user_fixed():
    ds = _dataset()
    ds.metadata["val_from_user"] = True
    with pytest.raises(ConfigError, match="split column fixes val"):
        fold_ids(ds, 3)


# ------------------------------------------------------------------------- cross-validation
@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    """Two-class blobs with a fifth of the labels flipped, so that no split is perfect and
    val, out-of-fold and test scores differ."""
    folder = tmp_path_factory.mktemp("ens_data")
    path = write_blob_npz(folder / "blobs.npz", "multi-class", n=(90, 30, 40), k=2, size=16)
    arrays = dict(np.load(path))
    rng = np.random.default_rng(5)
    for split in ("train", "val", "test"):
        labels = arrays[f"{split}_labels"]
        flip = rng.random(len(labels)) < 0.2
        labels[flip] = 1 - labels[flip]
    np.savez_compressed(path, **arrays)
    return path


def test_too_many_folds_are_refused_before_the_planner_probes(blobs, monkeypatch):
    from medlens.train import probe

    def no_probe(*args, **kwargs):
        raise AssertionError("the planner measured the model before checking --folds")

    monkeypatch.setattr(probe, "measure_costs", no_probe)
    with pytest.raises(DataError, match=r"--folds 500 but class '\w+' has only \d+ images"):
        ml.plan(str(blobs), device="cpu", overrides={"train.folds": 500})


@pytest.fixture(scope="module")
def cv_run(blobs, tmp_path_factory) -> Path:
    """A 3-fold cross-validation, trained once for the module (read-only for tests)."""
    out = tmp_path_factory.mktemp("cv") / "run"
    ml.train(str(blobs), output=out, folds=K, **TRAIN)
    return out


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _probs(rows, split: str, names=("0", "1")) -> np.ndarray:
    return np.array([[float(r[f"p_{n}"]) for n in names] for r in rows if r["split"] == split])


def test_cross_validation_run_layout_and_metrics(cv_run):
    run = Run.open(cv_run)
    assert run.is_cross_validation() and len(run.members()) == K
    ens = json.loads(run.ensemble_file.read_text())
    assert [m["path"] for m in ens["members"]] == [f"folds/fold-{i}" for i in range(K)]
    m = run.metrics()
    cv = m["cross_validation"]
    assert cv["k"] == K and sum(f["n_val"] for f in cv["folds"]) == 120
    test_aucs = [f["test_auc"] for f in cv["folds"]]
    assert cv["spread"]["test_auc"]["mean"] == pytest.approx(np.mean(test_aucs))
    assert cv["spread"]["test_auc"]["sd"] == pytest.approx(np.std(test_aucs, ddof=1))
    for i, member in enumerate(run.members()):  # each fold an ordinary, evaluated run
        assert member.plan.data.fold.index == i and member.plan.train.folds is None
        assert member.metrics()["test"]["auc"] == cv["folds"][i]["test_auc"]
    # calibration fitted on the 120 out-of-fold predictions, not on one val split
    assert run.trust()["conformal"]["n_calibration"] == 120
    assert run.trust()["fitted_on"] == "120 out-of-fold predictions"
    oof = _csv(run.oof_predictions_file)
    assert len(oof) == 120 and {r["split"] for r in oof} == {"oof"}
    assert {r["split"] for r in _csv(run.predictions_file)} == {"test"}


def test_the_summary_says_what_calibration_was_fitted_on(cv_run, capsys):
    from medlens.cli.tables import print_trust

    print_trust(Run.open(cv_run).trust())
    out = " ".join(capsys.readouterr().out.split())
    assert "(fitted on 120 out-of-fold predictions)" in out and "on val" not in out


def test_out_of_fold_predictions_come_from_the_unseeing_fold(cv_run, blobs):
    run = Run.open(cv_run)
    oof = _csv(run.oof_predictions_file)
    folds = np.array([int(r["fold"]) for r in oof])
    oof_p = _probs(oof, "oof")
    pool = pooled(ml.Run.open(cv_run).data())
    for i, member in enumerate(run.members()):
        fold_rows = _csv(member.predictions_file)
        np.testing.assert_allclose(oof_p[folds == i], _probs(fold_rows, "val"), atol=1e-6)
        trained_on = {img.tobytes() for img in member.data().splits["train"].images}
        assert not any(img.tobytes() in trained_on for img in pool.images[folds == i])
        assert all(img.tobytes() in trained_on for img in pool.images[folds != i])


def test_multi_label_cross_validation_end_to_end(tmp_path):
    """Folds of a multi-label set: every train+val image predicted once out of fold, by the
    fold that did not see it, and the ensemble's test probabilities the mean of its folds'
    sigmoid outputs."""
    npz = write_blob_npz(tmp_path / "ml.npz", "multi-label", n=(60, 24, 30), k=3, seed=3)
    ml.train(str(npz), output=tmp_path / "cv", folds=K, **TRAIN)
    run = Run.open(tmp_path / "cv")
    assert run.plan.data.task == "multi-label" and run.plan.loss.name == "bce"
    names = ("0", "1", "2")
    oof = _csv(run.oof_predictions_file)
    folds = np.array([int(r["fold"]) for r in oof])
    assert len(oof) == 84 and sorted(set(folds)) == list(range(K))
    test = _probs(_csv(run.predictions_file), "test", names)
    member_test = []
    for i, member in enumerate(run.members()):
        rows = _csv(member.predictions_file)
        np.testing.assert_allclose(
            _probs(oof, "oof", names)[folds == i], _probs(rows, "val", names), atol=1e-6
        )
        member_test.append(_probs(rows, "test", names))
    np.testing.assert_allclose(test, np.mean(member_test, axis=0), atol=2e-6)
    m = run.metrics()
    assert len(m["test"]["per_class"]) == 3 and m["cross_validation"]["k"] == K


def _member_mean(run: Run, x: torch.Tensor) -> np.ndarray:
    probs = []
    for member in run.members():
        model, _ = member.load_model(torch.device("cpu"))
        with torch.no_grad():
            probs.append(torch.softmax(model(x), 1).numpy())
    return np.mean(probs, axis=0)


def _test_batch(run: Run) -> torch.Tensor:
    from medlens.data.loader import device_arrays

    test = run.data().splits["test"]
    data = device_arrays(run.plan, test.images, test.labels, torch.device("cpu"))
    return torch.cat([x for x, _ in data.batches(64)])


def test_ensemble_probabilities_are_the_mean_of_the_folds(cv_run):
    run = Run.open(cv_run)
    x = _test_batch(run)
    model, info = run.load_model(torch.device("cpu"))
    with torch.no_grad():
        ens = torch.softmax(model(x), 1).numpy()
    np.testing.assert_allclose(ens, _member_mean(run, x), atol=1e-6)
    assert info["members"] == K
    # predictions.csv of the ensemble: the mean of the folds' test predictions
    means = np.mean([_probs(_csv(m.predictions_file), "test") for m in run.members()], axis=0)
    np.testing.assert_allclose(_probs(_csv(run.predictions_file), "test"), means, atol=3e-6)


def test_ensemble_model_weights_and_multi_label():
    from medlens.models.ensemble import EnsembleModel

    torch.manual_seed(0)
    members = [torch.nn.Linear(5, 3) for _ in range(3)]
    x = torch.randn(7, 5)
    with torch.no_grad():
        multi = torch.sigmoid(EnsembleModel(members, multi_label=True)(x))
        want = torch.stack([torch.sigmoid(m(x)) for m in members]).mean(0)
        torch.testing.assert_close(multi, want, atol=1e-6, rtol=0)
        weighted = torch.softmax(EnsembleModel(members, multi_label=False, weights=[2, 1, 1])(x), 1)
        p = [torch.softmax(m(x), 1) for m in members]
        torch.testing.assert_close(
            weighted, 0.5 * p[0] + 0.25 * p[1] + 0.25 * p[2], atol=1e-6, rtol=0
        )
    with pytest.raises(ValueError, match="non-negative weights"):
        EnsembleModel(members, multi_label=False, weights=[1, -1, 1])


def test_predict_export_serve_agree_on_an_ensemble(cv_run, tmp_path):
    from PIL import Image

    from medlens.serve.model import ServedModel

    run_dir = tmp_path / "run"
    shutil.copytree(cv_run, run_dir)
    run = Run.open(run_dir)
    test = run.data().splits["test"]
    files = []
    for i in range(8):
        files.append(tmp_path / f"case{i}.png")
        Image.fromarray(test.images[i, 0]).save(files[-1])
    expected = probabilities(
        np.log(_member_mean(run, _test_batch(run))[:8]),
        "multi-class",
        run.calibration()["temperature"],
    )
    torch_rows = ml.predict(run_dir, files, onnx=False)
    got = np.array([[r["p_0"], r["p_1"]] for r in torch_rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    served = ServedModel(run_dir, onnx=False)
    answer = served.predict(files[0].read_bytes(), heatmap=False)
    np.testing.assert_allclose(list(answer["probabilities"].values()), expected[0], atol=2e-6)
    ml.export(run_dir, benchmark=False)
    onnx_rows = ml.predict(run_dir, files, onnx=True)
    np.testing.assert_allclose(np.array([[r["p_0"], r["p_1"]] for r in onnx_rows]), got, atol=1e-5)


def test_ensemble_heatmaps_are_the_mean_of_the_members_maps(cv_run, tmp_path):
    from PIL import Image

    from medlens.analyse.saliency import saliency_maps

    run = Run.open(cv_run)
    x, cpu = _test_batch(run)[:4], torch.device("cpu")
    t = torch.tensor([0, 1, 0, 1])
    model, _ = run.load_model(cpu)
    got = saliency_maps(model, x, t)
    members = [m.load_model(cpu)[0] for m in run.members()]
    want = torch.stack([saliency_maps(m, x, t) for m in members]).mean(0)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert float(got.std()) > 0
    png = tmp_path / "case.png"
    Image.fromarray(run.data().splits["test"].images[0, 0]).save(png)
    rows = ml.predict(cv_run, [png], heatmaps=tmp_path / "maps", onnx=False)
    assert Path(rows[0]["heatmap"]).is_file()


def test_report_has_a_cross_validation_section(cv_run, tmp_path):
    from medlens.report.build import build_report

    html = build_report(Run.open(cv_run), output=tmp_path / "r.html", robustness=False,
                        uncertainty=False, gallery=False).read_text()  # fmt: skip
    assert 'id="crossval"' in html and "Cross-validation (3 folds)" in html
    cv = Run.open(cv_run).metrics()["cross_validation"]
    assert f"{cv['folds'][1]['test_auc']:.3f}" in html


def test_compare_with_folds_ranks_by_the_cross_validated_auc(blobs, tmp_path):
    result = ml.compare(str(blobs), models="small_cnn,test_nfnet", seeds=1, folds=2, epochs=1,
                        device="cpu", output=tmp_path / "cmp", latency_seconds=0.1,
                        n_boot=200)  # fmt: skip
    rows = result.rows
    assert rows[0]["cv_auc_mean"] >= rows[1]["cv_auc_mean"]
    for row in rows:
        run = Run.open(tmp_path / "cmp" / "runs" / f"{row['model']}-seed0")
        assert run.is_cross_validation()
        assert row["cv_auc_mean"] == run.metrics()["val"]["auc"]
    assert (
        result.paired[0]["split"] == "out-of-fold" and result.paired[0]["best"] == rows[0]["model"]
    )
    assert "by cross-validated AUC" in (tmp_path / "cmp" / "leaderboard.md").read_text()


def test_tune_with_folds_scores_trials_by_out_of_fold_auc(blobs, tmp_path):
    pytest.importorskip("optuna")
    result = ml.tune(str(blobs), trials=1, folds=2, epochs=1, device="cpu",
                     model="small_cnn", output=tmp_path / "tune")  # fmt: skip
    run = Run.open(tmp_path / "tune" / "trials" / "trial-0000")
    assert run.is_cross_validation()
    assert result.best_value == run.metrics()["val"]["auc"]
    assert result.best_plan.train.folds == 2


class _StopAt:
    """Interrupts training when a given fold reaches a given epoch (as Ctrl-C would)."""

    def __init__(self, run_dir: Path, fold: int, epoch: int) -> None:
        self.marker, self.epoch = run_dir / "folds" / f"fold-{fold}", epoch

    def __call__(self, epoch: int, row) -> None:
        if epoch == self.epoch and (self.marker / "checkpoints" / "last.safetensors").exists():
            raise KeyboardInterrupt


@pytest.mark.parametrize("how", ["same command", "--resume"])
def test_interrupted_cross_validation_resumes_to_the_same_metrics(cv_run, blobs, tmp_path, how):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        ml.train(str(blobs), output=out, folds=K, callbacks=[_StopAt(out, 1, 0)], **TRAIN)
    assert (out / "folds/fold-0/metrics.json").is_file()
    assert not (out / "folds/fold-1/metrics.json").exists()
    finished = [
        out / "folds/fold-0/checkpoints/best.safetensors",
        out / "folds/fold-0/metrics.json",
    ]
    done = [f.stat().st_mtime_ns for f in finished]
    if how == "--resume":  # `medlens train --resume --output RUN`: the run's own plan
        ml.train(output=out, resume=True)
    else:
        ml.train(str(blobs), output=out, folds=K, **TRAIN)
    assert [
        f.stat().st_mtime_ns for f in finished
    ] == done  # fold 0 neither retrained nor re-evaluated
    again, first = Run.open(out).metrics(), Run.open(cv_run).metrics()
    for key in ("val", "test"):
        assert again[key]["auc"] == first[key]["auc"] and again[key]["acc"] == first[key]["acc"]
    assert again["cross_validation"]["folds"] == first["cross_validation"]["folds"]
    with pytest.raises(ConfigError, match="already holds a finished ensemble"):
        ml.train(str(blobs), output=out, folds=K, **TRAIN)


def test_the_same_command_from_another_folder_is_the_same_plan(cv_run):
    """A cross-validation started with ``--data-dir /work/data`` continues when run again with
    ``--data-dir ../data``: where the data lives is not part of the recipe."""
    plan = Run.open(cv_run).plan
    moved = apply_overrides(plan, {"data.data_dir": "/elsewhere/data", "notes": ["other"]})
    assert plan_differences(plan, moved) == []
    longer = apply_overrides(plan, {"train.epochs": plan.train.epochs + 1})
    assert plan_differences(plan, longer) == [
        f"train.epochs: {plan.train.epochs} -> {plan.train.epochs + 1}"
    ]
    assert plan_differences(plan, longer, ignore=["train.epochs"]) == []


def test_seeds_build_an_ensemble_on_one_split(blobs, tmp_path):
    out = tmp_path / "seeds"
    result = ml.train(str(blobs), output=out, seeds=2, epochs=1, device="cpu", model="small_cnn")
    run = Run.open(out)
    assert [m.root.name for m in run.members()] == ["seed-0", "seed-1"]
    assert [m.plan.train.seed for m in run.members()] == [0, 1]
    assert "cross_validation" not in result.metrics
    np.testing.assert_allclose(
        probabilities(np.log(_member_mean(run, _test_batch(run))), "multi-class"),
        _probs(_csv(run.predictions_file), "test"),
        atol=3e-6,
    )


# ---------------------------------------------------------------------------- bad inputs
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medlens", *args], capture_output=True, text=True, timeout=300
    )


def test_folds_one_is_refused_before_torch(blobs):
    proc = _cli("train", str(blobs), "--folds", "1")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--folds 1" in lines[0] and "at least 2" in lines[0], lines


# Runs each command line of argv[1] (a JSON list) in one process: its exit code and stderr.
_DRIVER = """
import contextlib, io, json, sys
from medlens.cli import main
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    print(json.dumps({"code": code, "err": err.getvalue()}))
"""


def _cli_many(cases: list[list[str]]) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(cases)],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _split_column_manifest(folder: Path) -> Path:
    """60 blob PNGs and a manifest whose split column gives train, val and test."""
    import pandas as pd
    from PIL import Image

    from tests.conftest import blob_images

    rows, labels = [], np.arange(60) % 2
    (folder / "img").mkdir(parents=True)
    for i, img in enumerate(blob_images(labels, 16, 2, np.random.default_rng(0))):
        Image.fromarray(img).save(folder / "img" / f"{i}.png")
        split = "train" if i < 40 else ("val" if i < 50 else "test")
        rows.append({"path": f"img/{i}.png", "finding": "ab"[labels[i]], "split": split})
    pd.DataFrame(rows).to_csv(folder / "m.csv", index=False)
    return folder / "m.csv"


def test_bad_ensemble_inputs_are_one_line_errors(cv_run, blobs, tmp_path):
    deleted = tmp_path / "deleted"
    shutil.copytree(cv_run, deleted)
    shutil.rmtree(deleted / "folds" / "fold-1")
    changed = tmp_path / "changed"
    shutil.copytree(cv_run, changed)
    plan = changed / "folds" / "fold-2" / "plan.yaml"
    plan.write_text(plan.read_text().replace("lr: ", "lr: 0.5  # was ", 1))
    manifest = _split_column_manifest(tmp_path / "manifest")
    train = ["--epochs", "1", "--device", "cpu", "--output"]
    cases = {
        "folds/fold-1": ["evaluate", str(deleted)],
        "another plan": ["evaluate", str(changed)],
        "split column fixes val": [
            "train", str(manifest), "--label-column", "finding", "--path-column", "path",
            "--split-column", "split", "--folds", "3", *train, str(tmp_path / "m_run"),
        ],
        "--folds 200 but class": ["train", str(blobs), "--folds", "200", *train,
                                  str(tmp_path / "b_run")],
    }  # fmt: skip
    for words, got in zip(cases, _cli_many(list(cases.values())), strict=True):
        lines = got["err"].strip().splitlines()
        assert got["code"] == 2 and len(lines) == 1 and words in lines[0], (words, got["err"])
        assert "(fix: " in lines[0]
    # nothing written: no run started, the broken ensembles' results untouched
    assert not (tmp_path / "m_run").exists() and not (tmp_path / "b_run").exists()
    assert (changed / "metrics.json").read_text() == (cv_run / "metrics.json").read_text()


# ------------------------------------------------------------------------------ sampling
def test_sampling_weights_balance_classes():
    y = np.array([0] * 90 + [1] * 10)
    w = sampling_weights(y, "balanced")
    assert w[y == 0].sum() == pytest.approx(0.5) and w[y == 1].sum() == pytest.approx(0.5)
    w = sampling_weights(y, "sqrt")
    assert w[y == 1].sum() == pytest.approx(np.sqrt(10) / (np.sqrt(10) + np.sqrt(90)))
    assert sampling_weights(y, "none") is None


def test_balanced_batches_draw_rare_classes_and_repeat_per_seed():
    from medlens.config import Plan
    from medlens.data.loader import device_arrays

    y = np.array([0] * 900 + [1] * 100)
    images = np.zeros((1000, 1, 4, 4), np.uint8)
    plan = Plan.model_validate(_toy_plan())
    data = device_arrays(plan, images, y, torch.device("cpu"))
    w = sampling_weights(y, "balanced")

    def draw(seed: int) -> np.ndarray:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([b for _, b in data.batches(100, shuffle=True, generator=gen, weights=w)])

    labels = draw(0).numpy()
    assert len(labels) == 1000 and 0.45 < labels.mean() < 0.55  # about half are class 1
    np.testing.assert_array_equal(labels, draw(0).numpy())


def _toy_plan() -> dict:
    return {
        "data": {"source": "x.npz", "task": "binary", "in_chans": 1, "n_classes": 2,
                 "label_names": ["a", "b"], "mean": [0.5], "std": [0.25]},
        "model": {"name": "small_cnn"}, "augment": {}, "loss": {"name": "cross_entropy"},
        "optim": {}, "schedule": {}, "train": {"epochs": 1, "batch_size": 8, "sampler": "balanced"},
    }  # fmt: skip
