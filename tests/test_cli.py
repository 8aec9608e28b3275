"""The command line: help texts, the main flow, and one clear line for every bad input."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlens.cli import main
from medlens.data.sources import load_dataset


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# per command: its key options and its example, which its --help must show
HELP = {
    (): ["plan", "train", "evaluate", "report", "predict", "explain", "models", "data"],
    ("data",): ["info", "list", "fingerprint"],
    ("data", "info"): ["--json", "--data-dir", "--label-column", "Example: medlens data info"],
    ("data", "list"): ["--data-dir", "Example: medlens data list"],
    ("plan",): [
        "--set",
        "--budget",
        "--output",
        "--size",
        "Example: medlens plan ../shared/data/chest_xray",
    ],
    ("train",): [
        "--data-dir",
        "--model",
        "--epochs",
        "--batch-size",
        "--lr",
        "--seed",
        "--device",
        "--init",
        "--output",
        "--plan",
        "--resume",
        "--set",
        "--patient-column",
        "--budget",
        "Example: medlens train ../shared/data/chest_xray",
    ],
    ("evaluate",): [
        "--json",
        "--no-download",
        "Run directory written by",
        "Example: medlens evaluate runs/",
    ],
    ("predict",): ["--onnx", "--heatmaps", "Image files (PNG", "Example: medlens predict runs/"],
    ("explain",): ["--method", "--layer", "--faithfulness", "Example: medlens explain runs/"],
    ("report",): ["--no-robustness", "--gallery", "--refresh", "Example: medlens report runs/"],
    ("models",): ["--timm", "Example: medlens models --timm"],
    ("export",): ["--format", "--int8", "--opset", "Example: medlens export runs/"],
    ("serve",): ["--port", "--api-key", "--max-upload-mb", "Example: medlens serve runs/"],
    ("compare",): ["--models", "--seeds", "--threads", "Example: medlens compare breastmnist"],
    ("tune",): ["--trials", "--pruner", "--storage", "Example: medlens tune breastmnist"],
    ("distill",): ["--student", "--alpha", "--temperature", "Example: medlens distill runs/"],
    ("prune",): ["--amount", "--importance", "--finetune-epochs", "Example: medlens prune runs/"],
}


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: " ".join(c) or "medlens")
def test_every_command_has_help(capsys, command):
    code, out, _ = run_cli(capsys, *command, "--help")
    text = " ".join(out.split())
    assert code == 0 and "Usage:" in out
    for needle in HELP[command]:
        assert needle in text, (command, needle)


def test_data_info_and_list(capsys, medmnist_dir):
    code, out, _ = run_cli(capsys, "data", "info", "breastmnist", "--data-dir", medmnist_dir)
    assert code == 0 and "malignant" in out and "147" in out and "399" in out
    code, out, _ = run_cli(capsys, "data", "list", "--data-dir", medmnist_dir)
    assert code == 0 and "organmnist3d" in out and "chestmnist" in out


def test_models_lists_own_models(capsys):
    import timm

    code, out, _ = run_cli(capsys, "models", "--timm", "resnet1*")
    text = " ".join(out.split())
    assert code == 0 and "resnet18_medmnist" in out and "small_cnn_3d" in out
    matching = timm.list_models("resnet1*")
    assert "resnet18" in matching and "resnet18_medmnist" not in matching
    assert f"{len(matching)} timm models match 'resnet1*': {', '.join(matching)}" in text


def test_plan_file_then_train_with_it(capsys, medmnist_dir, tmp_path):
    plan = tmp_path / "plan.yaml"
    code, _, _ = run_cli(
        capsys,
        "plan",
        "breastmnist",
        "--data-dir",
        medmnist_dir,
        "--device",
        "cpu",
        "--set",
        "train.epochs=2",
        "-o",
        plan,
    )
    assert code == 0 and "epochs: 2" in plan.read_text()
    code, out, err = run_cli(capsys, "train", "--plan", plan, "-o", tmp_path / "run")
    assert code == 0, err
    assert "AUC (MedMNIST)" in out and "epoch 2/2" in out


def _write_bad(tmp_path: Path, name: str, **replace) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 255, (8, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(8) % 2)[:, None]
    arrays.update(replace)
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _bad_cases(tmp_path: Path) -> list[tuple[list, str]]:
    nokeys = tmp_path / "nokeys.npz"
    np.savez(nokeys, images=np.zeros((2, 28, 28), np.uint8))
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    _write_bad(labels_dir, "breastmnist.npz", train_labels=(np.arange(8) % 4)[:, None])
    shape = _write_bad(tmp_path, "shape.npz", test_images=np.zeros((8, 30, 30), np.uint8))
    good = _write_bad(tmp_path, "good.npz")
    return [
        (
            ["train", "pathmnist", "--data-dir", tmp_path, "--no-download"],
            f"pathmnist.npz not found in {tmp_path}",
        ),
        (["train", nokeys], "nokeys.npz lacks the keys train_images"),
        (["train", "breastmnist", "--data-dir", labels_dir], "labels in 0..3, outside the 2"),
        (["train", shape], "test_images images are (1, 30, 30) but train images are (1, 28, 28)"),
        (["train", "breastmnst"], "unknown dataset 'breastmnst' (fix: did you mean breastmnist"),
        (["train", good, "--model", "resnet81"], "unknown model 'resnet81'"),
        (["train", "breastmnist", "--epochs", "-1"], "Invalid value for '--epochs'"),
        (["train", "breastmnist", "--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["train", good, "--set", "loss.nme=focal"], "did you mean loss.name"),
        (["train", good, "--device", "tpu"], "unknown device 'tpu' (fix: use auto, cpu or cuda)"),
        (["train", "--resume"], "--resume needs --output"),
        (["train", "--resume", "-o", tmp_path / "empty"], "nothing to resume"),
        (["evaluate", tmp_path / "norun"], "is not a medlens run"),
        (["data", "info", tmp_path / "missing.npz"], "missing.npz does not exist"),
    ]


def test_every_bad_input_gives_one_clear_line(capsys, tmp_path, medmnist_dir):
    for args, expected in _bad_cases(tmp_path):
        code, out, err = run_cli(capsys, *args)
        assert code == 2, (args, out, err)
        message = " ".join(err.split())
        assert expected in message, (args, message)
        assert message.startswith("error:") and "Traceback" not in err + out, (args, err)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_train_evaluate_predict_and_the_run_survives_bad_commands(capsys, medmnist_dir, tmp_path):
    run = tmp_path / "run"
    code, out, err = run_cli(
        capsys,
        "train",
        "breastmnist",
        "--data-dir",
        medmnist_dir,
        "--epochs",
        "2",
        "--device",
        "cpu",
        "-o",
        run,
    )
    assert code == 0, err
    before = _digest(run)
    bad = _write_bad(tmp_path, "bad.npz", train_labels=np.full((8, 1), 9))
    for args in (
        ["train", "breastmnist", "--data-dir", medmnist_dir, "-o", run],
        ["train", bad, "-o", run],
        ["train", "breastmnist", "-o", run, "--epochs", "0"],
        ["evaluate", run, "--data-dir", tmp_path, "--no-download"],
    ):
        code, _, err = run_cli(capsys, *args)
        assert code == 2, (args, err)
    assert _digest(run) == before  # nothing already written was lost or changed

    code, out, err = run_cli(capsys, "evaluate", run, "--data-dir", medmnist_dir, "--json")
    assert code == 0 and '"auc"' in out

    test = load_dataset("breastmnist", data_dir=str(medmnist_dir)).splits["test"]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(test.images[i, 0]).save(folder / f"case{i}.png")
    code, out, err = run_cli(capsys, "predict", run, folder, "-o", tmp_path / "pred.csv")
    assert code == 0, err
    with (tmp_path / "pred.csv").open() as f:
        predicted = {Path(r["path"]).stem: float(r["p_malignant"]) for r in csv.DictReader(f)}
    with (run / "predictions.csv").open() as f:
        reference = {
            int(r["index"]): (float(r["p_malignant"]), float(r["p_normal, benign"]))
            for r in csv.DictReader(f)
            if r["split"] == "test"
        }
    # predict gives calibrated probabilities: softmax(logits / T), logits = log p up to a shift
    t = json.loads((run / "calibration.json").read_text())["temperature"]
    for i in range(5):
        z = np.log(reference[i]) / t
        calibrated = np.exp(z[0]) / np.exp(z).sum()
        assert predicted[f"case{i}"] == pytest.approx(calibrated, abs=1e-4)


def test_predict_rejects_broken_files(capsys, medmnist_dir, tmp_path):
    run = tmp_path / "run"
    assert (
        run_cli(
            capsys,
            "train",
            "breastmnist",
            "--data-dir",
            medmnist_dir,
            "--epochs",
            "1",
            "--device",
            "cpu",
            "-o",
            run,
        )[0]
        == 0
    )
    fake = tmp_path / "fake.png"
    fake.write_text("this is not an image")
    code, _, err = run_cli(capsys, "predict", run, fake)
    assert code == 2 and "fake.png is not a readable PNG image" in " ".join(err.split())
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    code, _, err = run_cli(capsys, "predict", run, empty)
    assert code == 2 and "empty.png is an empty file" in " ".join(err.split())
