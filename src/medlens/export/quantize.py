"""Static INT8 quantization with ONNX Runtime, calibrated on a run's training images.

QDQ format, per-channel signed weights, unsigned 8-bit activations whose ranges are the
0.001st-99.999th percentiles seen over the calibration batches. The model is pre-processed
first (``quant_pre_process``: shape inference and graph optimisation), as ONNX Runtime advises.

Weights use 7 of their 8 bits (``reduce_range``) by default: on x86 CPUs without VNNI (AVX2
only) ONNX Runtime's u8 x s8 kernels add pairs of products in 16 bits, which saturates with
full-range weights. On a BreastMNIST small CNN that took the largest probability change
against fp32 from 0.24 down to 0.055 (PneumoniaMNIST: 0.93 to 0.07), at the same speed.
Percentile ranges instead of min-max kept test AUC closest to fp32 on BreastMNIST (small CNN
and a 224 px ResNet-18) and PneumoniaMNIST: changes of -0.002, +0.003 and -0.0001 against
-0.003, -0.012 and -0.0002 (benchmarks/export_speed.py, docs/results.md).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import ModelError


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the quantizer's progress prints, warnings and log lines."""
    log = logging.getLogger()
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def calibration_reader(batches: Iterator[np.ndarray], input_name: str) -> Any:
    """A ``CalibrationDataReader`` feeding normalised float32 batches to ``input_name``."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._batches, None)
            return None if x is None else {input_name: np.ascontiguousarray(x, dtype=np.float32)}

    return _Reader()


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    batches: Iterator[np.ndarray],
    *,
    input_name: str = "input",
    per_channel: bool = True,
    quant_format: str = "QDQ",
    reduce_range: bool = True,
    calibration_method: str = "Percentile",
) -> dict[str, Any]:
    """Write the INT8 model of ``fp32_path`` to ``out_path``; returns the settings used.

    ``batches`` yields normalised calibration batches (e.g. 256 training images in eight
    batches of 32).
    """
    from medlens.export.packages import require_onnxruntime

    require_onnxruntime()
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fmt = {"QDQ": QuantFormat.QDQ, "QOperator": QuantFormat.QOperator}.get(quant_format)
    if fmt is None:
        raise ModelError(
            f"unknown quantization format {quant_format!r}", hint="use QDQ or QOperator"
        )
    methods = {m.name: m for m in CalibrationMethod}
    if calibration_method not in methods:
        raise ModelError(
            f"unknown calibration method {calibration_method!r}",
            hint=f"use one of: {', '.join(methods)}",
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out_path.with_name(out_path.name + ".tmp")
    with tempfile.TemporaryDirectory(prefix="medlens-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            with _quiet():
                quant_pre_process(str(fp32_path), str(pre))
                quantize_static(
                    str(pre),
                    str(tmp_out),
                    calibration_reader(batches, input_name),
                    quant_format=fmt,
                    per_channel=per_channel,
                    reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=methods[calibration_method],
                )
        except Exception as exc:  # onnxruntime's quantizer raises plain exceptions
            tmp_out.unlink(missing_ok=True)
            raise ModelError(
                f"INT8 quantization of {fp32_path.name} failed "
                f"({type(exc).__name__}: {str(exc).strip()[:200]})",
                hint="export without --int8",
            ) from exc
    tmp_out.replace(out_path)
    return {
        "format": quant_format,
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "weights": "int7 in int8 (symmetric)" if reduce_range else "int8 (symmetric)",
        "activations": "uint8",
        "calibration_method": calibration_method,
    }
