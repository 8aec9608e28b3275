"""What a prediction shows a user: calibrated probabilities, conformal sets, class names and
the confidence of the call, from logits and a run's calibration record (``calibration.json``).

>>> record = {"task": "multi-class", "temperature": 2.0}
>>> probs, sets = calibrated_outputs(np.array([[2.0, 0.0, 0.0]]), record)
>>> probs.round(3).tolist(), sets
([[0.576, 0.212, 0.212]], None)
>>> label_text(["a", "b", "c"], np.int64(0), "multi-class"), round(confidence(probs[0], "x"), 3)
('a', 0.576)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.evaluate.calibration import probabilities
from medlens.evaluate.conformal import ConformalPredictor


def calibrated_outputs(
    logits: np.ndarray, record: dict[str, Any], keys: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Calibrated probabilities and, for single-label tasks, conformal prediction sets.

    ``keys``: :func:`medlens.evaluate.conformal.image_keys` of the cases' model inputs, which
    APS and RAPS sets need (a case's set then does not depend on its batch).
    """
    probs = probabilities(logits, record["task"], record["temperature"])
    if "conformal" not in record:
        return probs, None
    return probs, ConformalPredictor(**record["conformal"]).predict_sets(probs, keys=keys)


def label_text(names: list[str], value: np.ndarray, task: str) -> str:
    """A class name, or the ';'-joined names of the labels that are on (multi-label)."""
    if task == "multi-label":
        return ";".join(n for n, v in zip(names, value, strict=True) if v > 0.5)
    return names[int(value)]


def set_text(names: list[str], members: np.ndarray) -> str:
    """A prediction set as the ';'-joined names of its classes."""
    return ";".join(n for n, on in zip(names, members, strict=True) if on)


def confidence(probs: np.ndarray, task: str) -> float:
    """Calibrated probability of the predicted class (of each label's call, multi-label: mean)."""
    if task == "multi-label":
        return float(np.maximum(probs, 1 - probs).mean())
    return float(probs.max())
