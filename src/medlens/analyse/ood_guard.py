"""The out-of-distribution guard of a run: fitted when the run is evaluated, applied by
``predict`` and ``serve`` to every new case.

``ood.json`` says which method is in use, its threshold (set at a stated false-alarm rate on
the run's own validation images) and what every measured method gave on val; ``ood.npz``
holds the fitted Mahalanobis statistics (plain arrays, loaded without pickle). The scores are
computed in :mod:`medlens.evaluate.ood`.

>>> guard = OodGuard.load(run)  # doctest: +SKIP
>>> scores, inside = guard.check(features, logits)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medlens.analyse.features import penultimate_features
from medlens.config import Plan
from medlens.data.dataset import ArrayDataset
from medlens.data.loader import device_arrays, unlabelled_arrays
from medlens.errors import CheckpointError
from medlens.evaluate.ood import (
    DEFAULT_FALSE_ALARM,
    DEFAULT_METHOD,
    METHODS,
    fit_mahalanobis,
    guard_summary,
    ood_scores,
    threshold_at,
)
from medlens.plan.budget import OOD_FIT_IMAGES
from medlens.run import Run

MAX_FIT_IMAGES = OOD_FIT_IMAGES  # training images whose features fit the statistics


@dataclass
class OodGuard:
    """A fitted guard: ``method``, ``threshold`` and (Mahalanobis) the statistics."""

    method: str
    threshold: float
    false_alarm: float
    stats: dict[str, np.ndarray] | None = None

    def scores(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return ood_scores(self.method, features, logits, self.stats)

    def check(self, features: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, in_distribution) of each case: inside when its score is at or below the
        threshold."""
        s = self.scores(features, logits)
        return s, s <= self.threshold

    @classmethod
    def load(cls, run: Run) -> OodGuard | None:
        """The run's guard, or None for a run evaluated before medlens fitted one."""
        if not run.ood_file.is_file():
            return None
        record = run.read_json(run.ood_file)
        stats = None
        if record["method"] == "mahalanobis":
            if not run.ood_stats_file.is_file():
                raise CheckpointError(
                    f"{run.ood_stats_file} is missing",
                    hint=f"run `medlens evaluate {run.root}` to fit the guard again",
                )
            with np.load(run.ood_stats_file, allow_pickle=False) as z:
                stats = {k: z[k] for k in z.files}
        return cls(
            record["method"], float(record["threshold"]), float(record["false_alarm"]), stats
        )


def _features(model, plan: Plan, images: np.ndarray, labels, device) -> tuple[np.ndarray, ...]:
    data = device_arrays(plan, images, labels, device)
    return penultimate_features(model, data, plan.train.eval_batch_size, plan.train.amp)


def case_features(model, plan: Plan, images: np.ndarray, device) -> tuple[np.ndarray, ...]:
    """(features, logits) of new, unlabelled cases (uint8 model inputs)."""
    data = unlabelled_arrays(plan, images, device)
    return penultimate_features(model, data, plan.train.eval_batch_size, plan.train.amp)


def fit_guard(
    model: torch.nn.Module,
    plan: Plan,
    ds: ArrayDataset,
    device: torch.device,
    *,
    false_alarm: float = DEFAULT_FALSE_ALARM,
    method: str = DEFAULT_METHOD,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(ood.json's record, ood.npz's arrays): statistics from (up to 5,000) training
    images, every method's threshold at ``false_alarm`` on the validation images."""
    multi = plan.data.task == "multi-label"
    train = ds.splits["train"]
    rng = np.random.default_rng(plan.train.seed)
    pick = np.arange(len(train))
    if len(pick) > MAX_FIT_IMAGES:
        pick = np.sort(rng.choice(len(pick), MAX_FIT_IMAGES, replace=False))
    train_f, _ = _features(model, plan, train.images[pick], train.labels[pick], device)
    val = ds.splits["val"]
    val_f, val_z = _features(model, plan, val.images, val.labels, device)
    stats = fit_mahalanobis(train_f, None if multi else train.labels[pick])
    # energy and MSP read a softmax over classes: not what a multi-label sigmoid head means
    methods = ("mahalanobis",) if multi else METHODS
    measured = {}
    for m in methods:
        scores = ood_scores(m, val_f, val_z, stats)
        measured[m] = guard_summary(m, threshold_at(scores, false_alarm), false_alarm, scores)
    chosen = method if method in measured else "mahalanobis"
    record = {
        "method": chosen,
        "threshold": measured[chosen]["threshold"],
        "false_alarm": false_alarm,
        "fitted_on": {
            "statistics": f"{len(pick)} training images",
            "threshold": f"{len(val)} validation images",
        },
        "feature_dim": int(train_f.shape[1]),
        "methods": measured,
        "why": "Mahalanobis distance to the nearest class mean of the penultimate features "
        "(Lee et al. 2018): it sees the whole feature vector, so images of another kind are "
        "flagged even when the classifier is confident about them",
    }
    return record, stats


def write_guard(run: Run, record: dict[str, Any], stats: dict[str, np.ndarray]) -> None:
    """ood.npz then ood.json (atomically each), so ood.json never names missing statistics."""
    tmp = run.ood_stats_file.with_name("ood.tmp.npz")
    np.savez(tmp, **stats)
    tmp.replace(run.ood_stats_file)
    run.write_json(run.ood_file, record)


NO_GUARD = "no OOD guard: the run was evaluated before medlens fitted one (`medlens evaluate RUN`)"


def case_flags(
    guard: OodGuard | None,
    features: np.ndarray | None,
    logits: np.ndarray | None,
    conflicts: list[str | None],
) -> list[dict[str, Any]]:
    """Per case: ``ood_score``, ``in_distribution`` and, when it is not, ``ood_reason``.

    A header conflict (:func:`medlens.data.images.modality_conflict`) flags a case whatever
    its score; without a guard ``in_distribution`` is None (not known) unless a header says no.
    """
    scores = inside = None
    if guard is not None and features is not None and logits is not None:
        scores, inside = guard.check(features, logits)
    out = []
    for i, conflict in enumerate(conflicts):
        row: dict[str, Any] = {
            "ood_score": None if scores is None else round(float(scores[i]), 6),
            "in_distribution": None if inside is None else bool(inside[i]),
        }
        reason = conflict
        if reason is None and inside is not None and not inside[i]:
            reason = (
                f"its {guard.method} score {scores[i]:.3g} is above the guard's threshold "
                f"{guard.threshold:.3g}: it looks unlike the training images"
            )
        if conflict is not None:
            row["in_distribution"] = False
        if reason is not None:
            row["ood_reason"] = reason
        out.append(row)
    return out
