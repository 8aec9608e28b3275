"""ONNX export: parity with PyTorch on real images, INT8, metadata, predict through ONNX Runtime,
the CLI, and one clear line for every bad input."""

from __future__ import annotations

import csv
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import medlens.api as ml
from medlens.cli import main
from medlens.config import load_plan
from medlens.data.loader import DeviceArrays
from medlens.data.sources import load_dataset
from medlens.errors import CheckpointError, ModelError
from medlens.export import OnnxPredictor, export_run
from medlens.export.metadata import read_metadata, write_metadata
from medlens.export.parity import max_differences
from medlens.run import Run

pytest.importorskip("onnxruntime")


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


@pytest.fixture(scope="module")
def exported(breast_run, tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the BreastMNIST run, exported to fp32 and INT8 ONNX once for this module."""
    run = _copy(breast_run, tmp_path_factory.mktemp("export") / "run")
    info = export_run(run, int8=True, benchmark_seconds=0.05)
    return run, info


@pytest.fixture(scope="module")
def breast_test(medmnist_dir):
    return load_dataset("breastmnist", data_dir=str(medmnist_dir)).splits["test"]


def _normalised(run: Path, images: np.ndarray) -> DeviceArrays:
    recipe = load_plan(run / "plan.yaml")
    labels = np.zeros(len(images), dtype=np.int64)
    return DeviceArrays(images, labels, torch.device("cpu"), recipe.data.mean, recipe.data.std)


def test_export_matches_pytorch_on_real_test_images(exported, breast_test):
    run, info = exported
    export = run / "export"
    assert (export / "model.onnx").is_file() and (export / "model.int8.onnx").is_file()
    assert json.loads((export / "export.json").read_text())["parity"] == info["parity"]
    assert info["parity"]["max_abs_prob_diff"] < 1e-4 and info["parity"]["n_images"] == 78
    # independently: PyTorch and ONNX Runtime on the 156 real test images
    model, _ = Run.open(run).load_model(torch.device("cpu"))
    data = _normalised(run, breast_test.images)
    from medlens.inference import predict_logits

    reference, _, _ = predict_logits(model, data, 64, amp=False)
    onnx_logits = OnnxPredictor(export / "model.onnx").predict_logits(data, 64)
    diff = max_differences(reference, onnx_logits, "binary")
    assert diff["max_abs_prob_diff"] < 1e-4
    assert info["variants"]["onnx_fp32"]["max_abs_prob_diff"] < 1e-4


def test_int8_keeps_test_auc_and_everything_is_measured(exported):
    _, info = exported
    v = info["variants"]
    assert set(v) == {"pytorch_fp32", "onnx_fp32", "onnx_int8"}
    assert v["onnx_fp32"]["test_auc"] == pytest.approx(v["pytorch_fp32"]["test_auc"], abs=1e-6)
    assert abs(v["onnx_int8"]["test_auc"] - v["onnx_fp32"]["test_auc"]) <= 0.02
    assert v["onnx_int8"]["bytes"] < v["onnx_fp32"]["bytes"] / 2
    assert info["int8"]["format"] == "QDQ" and info["int8"]["per_channel"]
    assert info["int8"]["calibration"] == {"split": "train", "n_images": 256}
    for variant in v.values():
        assert variant["speed"]["1"]["images_per_s"] > 0
        assert variant["speed"]["64"]["batch"] == 64
    assert info["hardware"]["onnxruntime"] and info["test"]["n_images"] == 156


def test_dynamic_batch(exported, breast_test):
    run, _ = exported
    for name in ("model.onnx", "model.int8.onnx"):
        predictor = OnnxPredictor(run / "export" / name)
        x = predictor.normalise(breast_test.images[:7])
        seven = predictor.logits(x)
        one = predictor.logits(x[:1])
        assert seven.shape == (7, 2) and one.shape == (1, 2)
        np.testing.assert_allclose(one[0], seven[0], atol=1e-5)
        with pytest.raises(ModelError, match="takes inputs of shape"):
            predictor.logits(x[:, :, :14])


def test_metadata_round_trips(exported):
    run, _ = exported
    recipe = load_plan(run / "plan.yaml")
    calibration = json.loads((run / "calibration.json").read_text())
    meta = read_metadata(run / "export" / "model.onnx")
    assert meta["label_names"] == recipe.data.label_names == ["malignant", "normal, benign"]
    assert meta["temperature"] == pytest.approx(calibration["temperature"])
    assert meta["calibration"] == calibration
    assert meta["task"] == recipe.data.task == "binary"
    assert meta["input_shape"] == ["batch", 1, 28, 28]
    assert meta["mean"] == recipe.data.mean and meta["std"] == recipe.data.std
    assert meta["medlens_version"] and meta["precision"] == "fp32"
    int8 = OnnxPredictor(run / "export" / "model.int8.onnx").metadata
    assert int8["precision"] == "int8" and int8["label_names"] == meta["label_names"]


def test_predict_through_onnx_matches_pytorch(exported, breast_test, tmp_path, capsys, monkeypatch):
    run, _ = exported
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(breast_test.images[i, 0]).save(folder / f"case{i}.png")
    via_onnx = ml.predict(run, [folder], onnx=True)
    via_torch = ml.predict(run, [folder], onnx=False)
    assert [r["path"] for r in via_onnx] == [r["path"] for r in via_torch]
    for a, b in zip(via_onnx, via_torch, strict=True):
        assert a.keys() == b.keys() and a["predicted"] == b["predicted"]
        for key in ("p_malignant", "p_normal, benign", "confidence"):
            assert a[key] == pytest.approx(b[key], abs=1e-4)
    code, _, err = run_cli(capsys, "predict", run, folder, "--no-onnx")
    assert code == 0, err
    # the default uses the export for the logits: PyTorch never computes them, and its
    # weights are loaded once, only for the OOD guard's features (not at all without a guard)
    loads, real = [], Run.load_model
    monkeypatch.setattr(Run, "load_model", lambda self, *a: loads.append(1) or real(self, *a))
    monkeypatch.setattr(
        "medlens.inference.predict_logits", lambda *a, **k: pytest.fail("PyTorch logits")
    )
    code, _, err = run_cli(capsys, "predict", run, folder, "-o", tmp_path / "pred.csv")
    assert code == 0, err
    assert len(loads) == (1 if (Path(run) / "ood.json").is_file() else 0)
    unguarded, before = _copy(run, tmp_path / "unguarded"), len(loads)
    (unguarded / "ood.json").unlink(missing_ok=True)
    code, _, err = run_cli(capsys, "predict", unguarded, folder, "--onnx")
    assert code == 0 and len(loads) == before, err
    with (tmp_path / "pred.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == [f"case{i}.png" for i in range(6)]
    for row, expected in zip(rows, via_onnx, strict=True):
        assert float(row["p_malignant"]) == pytest.approx(expected["p_malignant"], abs=1e-9)


def _pytorch_spy(monkeypatch) -> list:
    """Records every load of the run's PyTorch model (and lets it happen); ONNX Runtime must
    not be asked for logits."""
    loads, real = [], Run.load_model

    def load_model(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(Run, "load_model", load_model)
    monkeypatch.setattr(
        OnnxPredictor, "predict_logits", lambda *a, **k: pytest.fail("ONNX Runtime ran")
    )
    return loads


def test_stale_export_is_not_used_by_default(exported, tmp_path, capsys, monkeypatch):
    run = _copy(exported[0], tmp_path / "run")
    write_metadata(run / "export" / "model.onnx", {"checkpoint_sha256": "0" * 64})
    png = tmp_path / "x.png"
    Image.fromarray(np.full((28, 28), 120, dtype=np.uint8)).save(png)
    loads = _pytorch_spy(monkeypatch)
    rows = ml.predict(run, [png])  # falls back to the PyTorch checkpoint
    assert len(rows) == 1 and len(loads) == 1
    assert rows == ml.predict(run, [png], onnx=False)
    code, _, err = run_cli(capsys, "predict", run, png, "--onnx")
    assert code == 2 and "exported from other weights" in " ".join(err.split())


def test_export_help_lists_its_options(capsys):
    code, out, _ = run_cli(capsys, "export", "--help")
    assert code == 0 and "Usage:" in out
    for option in ("--format", "--int8", "--output", "--calibration-images"):
        assert option in out
    code, out, _ = run_cli(capsys, "predict", "--help")
    assert code == 0 and "--onnx" in out and "--no-onnx" in out


def test_cli_export_prints_a_table(breast_run, tmp_path, capsys):
    run = _copy(breast_run, tmp_path / "run")
    out_dir = tmp_path / "out"
    code, out, err = run_cli(
        capsys, "export", run, "--int8", "--calibration-images", "64", "--output", out_dir
    )
    assert code == 0, err
    for text in ("ONNX fp32", "ONNX INT8", "PyTorch fp32", "test AUC", "b64", "MB"):
        assert text in out
    assert {p.name for p in out_dir.iterdir()} == {"model.onnx", "model.int8.onnx", "export.json"}
    info = json.loads((out_dir / "export.json").read_text())
    assert info["int8"]["calibration"]["n_images"] == 64
    assert not (run / "export").exists()


def _tensor_offsets(path: Path) -> tuple[int, dict]:
    """(start of the data section, header) of a safetensors file."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return 8 + n, json.loads(raw[8 : 8 + n])


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


def _one_line_error(capsys, *args) -> str:
    code, _, err = run_cli(capsys, *args)
    assert code == 2, err
    assert err.strip().count("\n") == 0 and err.startswith("error:")
    return err


def test_tampered_weights_are_refused(breast_run, tmp_path, capsys):
    run = _copy(breast_run, tmp_path / "run")
    best = run / "checkpoints" / "best.safetensors"
    original = best.read_bytes()
    start, header = _tensor_offsets(best)

    _overwrite(best, 8, bytes(b ^ 0xFF for b in original[8:24]))  # flipped header bytes
    assert "not a readable safetensors file" in _one_line_error(capsys, "export", run)

    best.write_bytes(original)  # a weight set to NaN
    begin = header["fc.weight"]["data_offsets"][0]
    _overwrite(best, start + begin, b"\xff" * 4)
    assert "non-finite weights" in _one_line_error(capsys, "export", run)

    best.write_bytes(original)  # a zeroed classifier: finite, loadable, but not what was trained
    begin, end = header["fc.weight"]["data_offsets"]
    _overwrite(best, start + begin, bytes(end - begin))
    assert "was recorded when it was saved" in _one_line_error(capsys, "export", run)
    assert not (run / "export" / "model.onnx").exists()


def test_bad_requests(breast_run, tmp_path, capsys, monkeypatch):
    run = _copy(breast_run, tmp_path / "run")
    err = _one_line_error(capsys, "export", run, "--format", "tflite")
    assert "unknown export format 'tflite'" in err
    assert "unknown export format" in _one_line_error(capsys, "export", run, "--format", "torch")
    code, _, err = run_cli(capsys, "export", run, "--calibration-images", "0")
    assert code == 2
    png = tmp_path / "x.png"
    Image.fromarray(np.full((28, 28), 120, dtype=np.uint8)).save(png)
    assert "--onnx was asked for" in _one_line_error(capsys, "predict", run, png, "--onnx")

    empty = tmp_path / "not_a_run"
    empty.mkdir()
    assert "not a medlens run" in _one_line_error(capsys, "export", empty)
    (run / "checkpoints" / "best.safetensors").unlink()
    assert "best.safetensors is missing" in " ".join(_one_line_error(capsys, "export", run).split())


def test_a_failed_check_leaves_the_earlier_export_alone(exported, tmp_path, monkeypatch):
    import medlens.export.onnx_export as onnx_export

    run = _copy(exported[0], tmp_path / "run")
    before = (run / "export" / "model.onnx").read_bytes()

    def mismatch(*args, **kwargs):
        raise ModelError("the ONNX model differs from PyTorch", hint="test")

    monkeypatch.setattr(onnx_export, "check_parity", mismatch)
    with pytest.raises(ModelError, match="differs from PyTorch"):
        export_run(run, benchmark=False)
    assert (run / "export" / "model.onnx").read_bytes() == before
    assert sorted(p.name for p in (run / "export").iterdir()) == [
        "export.json",
        "model.int8.onnx",
        "model.onnx",
    ]


def test_missing_onnxruntime_says_how_to_install(breast_run, exported, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ModelError, match=r'pip install "medlens\[export\]"'):
        export_run(breast_run, output_dir=tmp_path / "out")
    run, _ = exported
    with pytest.raises(ModelError, match="onnxruntime is not installed"):
        OnnxPredictor(run / "export" / "model.onnx")
    png = tmp_path / "x.png"
    Image.fromarray(np.full((28, 28), 90, dtype=np.uint8)).save(png)
    loads = _pytorch_spy(monkeypatch)
    rows = ml.predict(run, [png])  # without onnxruntime the default is PyTorch
    assert len(rows) == 1 and len(loads) == 1
    assert rows == ml.predict(run, [png], onnx=False)
    with pytest.raises(ModelError, match="onnxruntime is not installed"):
        ml.predict(run, [png], onnx=True)


def test_corrupt_onnx_file_is_a_checkpoint_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx model at all")
    with pytest.raises(CheckpointError, match="not a loadable ONNX model"):
        OnnxPredictor(bad)
