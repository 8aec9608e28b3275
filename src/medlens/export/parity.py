"""Does an exported model compute what the PyTorch model computes? Largest differences."""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.errors import ModelError

FP32_TOLERANCE = 1e-4
"""Largest |probability difference| accepted between an fp32 export and PyTorch."""


def max_differences(reference: np.ndarray, other: np.ndarray, task: str) -> dict[str, float]:
    """Largest absolute difference of logits and of (uncalibrated) probabilities."""
    from medlens.evaluate.calibration import probabilities

    reference = np.asarray(reference, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    if reference.shape != other.shape:
        raise ModelError(
            f"the export outputs shape {other.shape} where PyTorch gives {reference.shape}",
            hint="export the run again",
        )
    dp = np.abs(probabilities(reference, task) - probabilities(other, task))
    return {
        "max_abs_prob_diff": float(dp.max()) if dp.size else 0.0,
        "max_abs_logit_diff": float(np.abs(reference - other).max()) if dp.size else 0.0,
    }


def check_parity(
    reference: np.ndarray,
    exported: np.ndarray,
    task: str,
    *,
    tolerance: float = FP32_TOLERANCE,
    what: str = "the ONNX model",
) -> dict[str, Any]:
    """Differences between PyTorch and export logits; ModelError above ``tolerance``."""
    diff = max_differences(reference, exported, task)
    if not np.isfinite(exported).all():
        raise ModelError(
            f"{what} gives non-finite outputs", hint="export again, or report the model name"
        )
    if diff["max_abs_prob_diff"] > tolerance:
        raise ModelError(
            f"{what} differs from PyTorch by up to {diff['max_abs_prob_diff']:.2e} in "
            f"probability (tolerance {tolerance:g}; logits up to "
            f"{diff['max_abs_logit_diff']:.2e})",
            hint="try another --opset; the exported graph does not match the model",
        )
    return {**diff, "tolerance": tolerance, "n_images": len(reference)}
