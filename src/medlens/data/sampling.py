"""Class-balanced sampling: per-image weights that make rare classes drawn more often.

``balanced`` gives every class the same share of the draws; ``sqrt`` a share proportional to
the square root of its count (the compromise of Mahajan et al., ECCV 2018, between the data's
frequencies and equal ones). An epoch draws as many images as the split holds, with
replacement, from a generator the loop seeds per epoch, so a resumed run draws the same.

>>> sampling_weights(np.array([0, 0, 0, 1]), "balanced").round(3).tolist()
[0.167, 0.167, 0.167, 0.5]
>>> sampling_weights(np.array([0, 0, 0, 1]), "none") is None
True
"""

from __future__ import annotations

import numpy as np

from medlens.errors import ConfigError

SAMPLERS = ("none", "balanced", "sqrt")


def sampling_weights(labels: np.ndarray, sampler: str) -> np.ndarray | None:
    """(N,) draw probability of each image for ``sampler`` (None: plain shuffling)."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown train.sampler {sampler!r}", hint=f"use one of {SAMPLERS}")
    if sampler == "none":
        return None
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ConfigError(
            "train.sampler balances classes of single-label tasks only",
            hint="set train.sampler: none for multi-label data",
        )
    counts = np.bincount(y).astype(float)
    share = np.where(counts > 0, 1.0 if sampler == "balanced" else np.sqrt(counts), 0.0)
    per_image = (share / np.maximum(counts, 1))[y]
    return per_image / per_image.sum()
