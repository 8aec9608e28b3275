"""ONNX Runtime: lazy imports of the optional packages, sessions, and :class:`OnnxPredictor`.

onnx and onnxruntime come with the ``export`` extra (``pip install "medlens[export]"``); they
are imported inside functions only, so training never needs them.

>>> p = OnnxPredictor("runs/breast/export/model.onnx")  # doctest: +SKIP
>>> p.logits(x)  # x: normalised float32 (N, C, H, W)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import CheckpointError, ModelError
from medlens.export.metadata import decode_metadata
from medlens.export.packages import onnxruntime_available, require_onnxruntime
from medlens.run import file_digest

PROVIDERS = ["CPUExecutionProvider"]


def default_threads() -> int:
    """Threads for ONNX Runtime: the same number PyTorch uses on this machine."""
    import torch

    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def make_session(path: str | Path, threads: int | None = None) -> Any:
    """A CPU ``InferenceSession`` with all graph optimisations and ``threads`` intra-op threads."""
    ort = require_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"ONNX model {path} does not exist", hint="export the run first: medlens export RUN"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), options, providers=PROVIDERS)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... classes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a loadable ONNX model ({first[:200]})",
            hint="the file is corrupt or was tampered with; export the run again",
        ) from exc


class OnnxPredictor:
    """An exported medlens model on ONNX Runtime: a normalised batch in, logits out.

    ``metadata`` holds what medlens stored in the file (label names, task, mean/std, input
    shape, temperature, ...), decoded from JSON; see :mod:`medlens.export.metadata`.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = make_session(self.path, threads)
        inp = self.session.get_inputs()[0]
        self.input_name: str = inp.name
        self.metadata: dict[str, Any] = decode_metadata(
            self.session.get_modelmeta().custom_metadata_map
        )

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """(C, H, W) or (C, D, H, W) the model takes (None when the file does not say)."""
        shape = self.metadata.get("input_shape")
        return tuple(int(s) for s in shape[1:]) if shape else None

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, K) float32 for a normalised float batch (N, C, H, W) or (N, C, D, H, W)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        expected = self.input_shape
        if expected is not None and tuple(x.shape[1:]) != expected:
            raise ModelError(
                f"{self.path.name} takes inputs of shape (N, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}",
                hint="resize and normalise the images as the run's plan does",
            )
        return self.session.run(None, {self.input_name: x})[0]

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, C, ...) -> the normalised float32 input, with the stored mean/std."""
        x = np.asarray(images, dtype=np.float32) / 255.0
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = np.asarray(self.metadata["mean"], dtype=np.float32).reshape(shape)
        std = np.asarray(self.metadata["std"], dtype=np.float32).reshape(shape)
        return (x - mean) / std

    def predict_logits(self, data: Any, batch_size: int = 256) -> np.ndarray:
        """Logits (N, K) float64 over a :class:`~medlens.data.loader.DeviceArrays`, in order."""
        out = [self.logits(x.cpu().contiguous().numpy()) for x, _ in data.batches(batch_size)]
        return np.concatenate(out).astype(np.float64)

    def probabilities(self, logits: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """Softmax (sigmoid, multi-label) of the logits, divided by the stored temperature."""
        from medlens.evaluate.calibration import probabilities

        t = float(self.metadata.get("temperature", 1.0)) if calibrated else 1.0
        return probabilities(logits, self.metadata["task"], t)


def run_predictor(run_root: Path, use_onnx: bool | None) -> OnnxPredictor | None:
    """The ONNX predictor ``medlens predict`` should use for a run, or None for PyTorch.

    ``use_onnx=None`` (the default) uses ``<run>/export/model.onnx`` when it exists, onnxruntime
    is installed and the export was made from the run's current best checkpoint; ``True``
    requires all three; ``False`` never uses ONNX.
    """
    if use_onnx is False:
        return None
    path = run_root / "export" / "model.onnx"
    if use_onnx is None and (not path.is_file() or not onnxruntime_available()):
        return None
    if not path.is_file():
        raise CheckpointError(
            f"--onnx was asked for but {path} does not exist",
            hint=f"export the run first: medlens export {run_root}",
        )
    predictor = OnnxPredictor(path)
    made_from = predictor.metadata.get("checkpoint_sha256")
    current = file_digest(run_root / "checkpoints" / "best.safetensors")
    if made_from != current:
        if use_onnx is None:
            return None  # a stale export: the PyTorch checkpoint is the truth
        raise CheckpointError(
            f"{path} was exported from other weights than the run's best.safetensors",
            hint=f"export again: medlens export {run_root}",
        )
    return predictor
