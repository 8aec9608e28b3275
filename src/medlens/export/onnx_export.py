"""Export a trained run to ONNX (and INT8), check it against PyTorch, measure it.

>>> from medlens.export import export_run
>>> info = export_run("runs/breast", int8=True)  # doctest: +SKIP
>>> info["variants"]["onnx_int8"]["test_auc"]  # doctest: +SKIP
0.90

Writes into ``<run>/export/`` (or ``output_dir``): ``model.onnx`` (fp32, dynamic batch, logits
of the normalised input), ``model.int8.onnx`` with ``int8=True``, and ``export.json``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlens import __version__
from medlens.config import Plan
from medlens.data.loader import DeviceArrays
from medlens.errors import CheckpointError, ConfigError
from medlens.export.metadata import run_metadata, write_metadata
from medlens.export.packages import require_onnx, require_onnxruntime
from medlens.export.parity import check_parity, max_differences
from medlens.export.runtime import OnnxPredictor
from medlens.progress import Reporter, SilentReporter
from medlens.run import Run, write_json

FORMATS = ("onnx",)
PARITY_IMAGES = 512
"""Validation images compared between PyTorch and ONNX right after export."""
VAL_AUC_TOLERANCE = 0.02
"""How far the reloaded weights' val AUC may lie from the one recorded when they were saved."""
CALIBRATION_BATCH = 32
BATCH_SIZES = (1, 64)
_CPU = torch.device("cpu")


def _arrays(recipe: Plan, images: np.ndarray, labels: np.ndarray) -> DeviceArrays:
    """Images on the CPU, normalised as the plan says (NCHW float batches)."""
    return DeviceArrays(images, labels, _CPU, recipe.data.mean, recipe.data.std, False)


def _torch_logits(model: torch.nn.Module, data: DeviceArrays, batch_size: int) -> np.ndarray:
    from medlens.inference import predict_logits

    logits, _, _ = predict_logits(model, data, batch_size, amp=False)
    return logits


def _check_weights(model: torch.nn.Module, path: Path) -> None:
    """Non-finite weights mean a damaged file: refuse them before exporting anything."""
    state = model.state_dict()
    bad = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise CheckpointError(
            f"{path} holds non-finite weights ({', '.join(bad[:3])})",
            hint="the file is corrupt or was tampered with; retrain or restore it",
        )


def _check_val_auc(recorded: Any, labels: np.ndarray, logits: np.ndarray, task: str, path: Path):
    """The reloaded weights must reproduce the val AUC stored with them (tampering check)."""
    from medlens.evaluate.calibration import probabilities
    from medlens.evaluate.metrics import validation_scores

    auc, _ = validation_scores(probabilities(logits, task), labels, task)
    comparable = isinstance(recorded, (int, float)) and math.isfinite(recorded)
    if comparable and math.isfinite(auc) and abs(auc - recorded) > VAL_AUC_TOLERANCE:
        raise CheckpointError(
            f"{path} gives val AUC {auc:.4f}, but {recorded:.4f} was recorded when it was saved",
            hint="the file was changed after training; retrain or restore it",
        )
    return auc


def _calibration_batches(recipe: Plan, images: np.ndarray, n: int) -> Iterator[np.ndarray]:
    """``n`` training images (a fixed random subset), normalised, in batches."""
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))
    labels = np.zeros(len(idx), dtype=np.int64)
    data = _arrays(recipe, images[idx], labels)
    for x, _ in data.batches(CALIBRATION_BATCH):
        yield x.contiguous().numpy()


def _test_auc(labels: np.ndarray, logits: np.ndarray, task: str) -> float | None:
    from medlens.evaluate.calibration import probabilities
    from medlens.evaluate.metrics import medmnist_auc

    try:
        return round(float(medmnist_auc(labels, probabilities(logits, task), task)), 6)
    except ConfigError:  # a class missing from test
        return None


@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A scratch folder inside ``out_dir``, removed afterwards whatever happens."""
    work = out_dir / ".partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _speed(run, images: np.ndarray, batch_sizes, seconds: float) -> dict[str, Any]:
    from medlens.export.speed import batch_of, throughput

    return {str(b): throughput(run, batch_of(images, b), seconds=seconds) for b in batch_sizes}


def export_run(
    run_dir: str | Path | Run,
    *,
    fmt: str = "onnx",
    int8: bool = False,
    output_dir: str | Path | None = None,
    calibration_images: int = 256,
    opset: int | None = None,
    data_dir: str | None = None,
    download: bool = True,
    benchmark: bool = True,
    benchmark_seconds: float = 0.5,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Export a run's best checkpoint; returns what it writes to ``export.json``.

    The fp32 model is checked against PyTorch on the run's validation images (ModelError when
    probabilities differ by more than 1e-4). With ``int8=True`` a static INT8 model (QDQ,
    per-channel) is calibrated on ``calibration_images`` training images. Test AUC, the
    largest probability difference to PyTorch, file sizes and CPU images/s at
    ``batch_sizes`` are recorded for PyTorch fp32, ONNX fp32 and ONNX INT8.
    """
    from medlens.export.speed import hardware, onnx_runner, torch_runner
    from medlens.export.torch_to_onnx import export_module

    reporter = reporter or SilentReporter()
    if str(fmt).lower() not in FORMATS:
        raise ConfigError(
            f"unknown export format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}"
        )
    if calibration_images < 1:
        raise ConfigError(
            f"--calibration-images must be at least 1, got {calibration_images}",
            hint="256 training images is a good default",
        )
    require_onnx()
    require_onnxruntime()
    run = run_dir if isinstance(run_dir, Run) else Run.open(run_dir)
    recipe = run.plan
    task = recipe.data.task
    out_dir = Path(output_dir) if output_dir is not None else run.export_dir

    model, info = run.load_model(_CPU)
    _check_weights(model, run.best)
    ds = run.data(data_dir, download)
    val, test = ds.splits["val"], ds.splits["test"]
    bs = recipe.train.eval_batch_size

    reporter.message(f"PyTorch reference: {len(val)} val and {len(test)} test images")
    val_data = _arrays(recipe, val.images, val.labels)
    val_torch = _torch_logits(model, val_data, bs)
    val_auc = _check_val_auc(info.get("val_auc"), val.labels, val_torch, task, run.best)
    test_data = _arrays(recipe, test.images, test.labels)
    test_torch = _torch_logits(model, test_data, bs)

    calibration = run.calibration() if run.calibration_file.is_file() else None
    meta = run_metadata(
        recipe, tuple(val.images.shape[2:]), calibration, run.checkpoint_digest(), ds.name
    )
    final_fp32, final_int8 = out_dir / "model.onnx", out_dir / "model.int8.onnx"
    reporter.message(f"exporting {recipe.model.name} to {final_fp32}")
    with _staging(out_dir) as work:  # files move into place only once every check passed
        fp32_path, int8_path = work / final_fp32.name, work / final_int8.name
        n_parity = min(len(val), PARITY_IMAGES)
        example = next(_arrays(recipe, val.images[:2], val.labels[:2]).batches(2))[0]
        if len(example) < 2:
            example = example.repeat(2, *([1] * (example.ndim - 1)))
        graph = export_module(copy.deepcopy(model), example, fp32_path, opset)
        write_metadata(fp32_path, {**meta, "exporter": graph["exporter"], "opset": graph["opset"]})
        fp32 = OnnxPredictor(fp32_path)
        parity_data = _arrays(recipe, val.images[:n_parity], val.labels[:n_parity])
        parity = check_parity(val_torch[:n_parity], fp32.predict_logits(parity_data, bs), task)
        reporter.message(
            f"parity on {n_parity} val images: max |dp| {parity['max_abs_prob_diff']:.2e}, "
            f"max |dlogit| {parity['max_abs_logit_diff']:.2e}"
        )
        test_fp32 = fp32.predict_logits(test_data, bs)

        variants: dict[str, dict[str, Any]] = {
            "pytorch_fp32": {
                "label": "PyTorch fp32 (eager)",
                "file": str(run.best),
                "bytes": run.best.stat().st_size,
                "test_auc": _test_auc(test.labels, test_torch, task),
                "max_abs_prob_diff": 0.0,
                "max_abs_logit_diff": 0.0,
            },
            "onnx_fp32": {
                "label": "ONNX fp32",
                "file": str(final_fp32),
                "bytes": fp32_path.stat().st_size,
                "test_auc": _test_auc(test.labels, test_fp32, task),
                **max_differences(test_torch, test_fp32, task),
            },
        }
        quant: dict[str, Any] | None = None
        int8_model: OnnxPredictor | None = None
        if int8:
            from medlens.export.quantize import quantize_int8

            n_cal = min(calibration_images, len(ds.splits["train"]))
            reporter.message(f"INT8: calibrating on {n_cal} training images")
            settings = quantize_int8(
                fp32_path,
                int8_path,
                _calibration_batches(recipe, ds.splits["train"].images, calibration_images),
                input_name=fp32.input_name,
            )
            write_metadata(int8_path, {**meta, "precision": "int8", "exporter": graph["exporter"]})
            int8_model = OnnxPredictor(int8_path)
            test_int8 = int8_model.predict_logits(test_data, bs)
            quant = {**settings, "calibration": {"split": "train", "n_images": n_cal}}
            variants["onnx_int8"] = {
                "label": "ONNX INT8",
                "file": str(final_int8),
                "bytes": int8_path.stat().st_size,
                "test_auc": _test_auc(test.labels, test_int8, task),
                **max_differences(test_torch, test_int8, task),
                "max_abs_prob_diff_vs_onnx_fp32": max_differences(test_fp32, test_int8, task)[
                    "max_abs_prob_diff"
                ],
            }

        if benchmark:
            reporter.message(f"timing on the CPU at batch {', '.join(map(str, batch_sizes))}")
            speed_inputs = next(_arrays(recipe, test.images[:64], test.labels[:64]).batches(64))[0]
            speed_inputs = speed_inputs.contiguous().numpy()
            channels_last = recipe.train.channels_last and recipe.data.spatial_dims == 2
            runners = {
                "pytorch_fp32": torch_runner(model, channels_last),
                "onnx_fp32": onnx_runner(fp32.session),
            }
            if int8_model is not None:
                runners["onnx_int8"] = onnx_runner(int8_model.session)
            for key, fn in runners.items():
                variants[key]["speed"] = _speed(fn, speed_inputs, batch_sizes, benchmark_seconds)

        # every check passed: the files replace any earlier export
        os.replace(fp32_path, final_fp32)
        if int8:
            os.replace(int8_path, final_int8)
        else:
            final_int8.unlink(missing_ok=True)  # an older INT8 file would not match this export

    base = variants["pytorch_fp32"].get("test_auc")
    for v in variants.values():
        v["test_auc_change"] = (
            None if v["test_auc"] is None or base is None else round(v["test_auc"] - base, 6)
        )
    result: dict[str, Any] = {
        "format": "onnx",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "medlens_version": __version__,
        "run": str(run.root),
        "model": recipe.model.name,
        "dataset": ds.name,
        "checkpoint": {"path": str(run.best), "sha256": meta["checkpoint_sha256"], **info},
        "exporter": graph["exporter"],
        "opset": graph["opset"],
        "input": {"name": fp32.input_name, "shape": meta["input_shape"], "how": meta["input"]},
        "metadata": meta,
        "val_auc_pytorch": round(float(val_auc), 6),
        "parity": {"split": "val", **parity},
        "test": {"n_images": len(test)},
        "int8": quant,
        "variants": variants,
        "hardware": hardware() if benchmark else None,
        "raw_probabilities": "test AUC and |dp| use uncalibrated probabilities (temperature 1)",
    }
    if calibration is None:
        result["notes"] = "no calibration.json: temperature 1.0 stored; run medlens evaluate"
    write_json(out_dir / "export.json", result)
    return result
