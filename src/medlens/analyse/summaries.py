"""The model analyses ``medlens analyse`` runs on a run's test split, as JSON-able summaries:
AUC under corruptions, and selective prediction from test-time augmentation and MC dropout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medlens.analyse.robustness import corruption_table
from medlens.analyse.uncertainty import (
    mc_dropout_probabilities,
    mutual_information,
    predictive_entropy,
    tta_probabilities,
)
from medlens.config import Plan
from medlens.data.dataset import Split
from medlens.errors import MedlensError, ModelError
from medlens.evaluate.metrics import medmnist_acc, medmnist_auc
from medlens.evaluate.selective import selective_curve


def robustness_summary(
    model: torch.nn.Module,
    plan: Plan,
    test: Split,
    device: torch.device,
    max_cases: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Corruption table on (a seeded sample of at most ``max_cases`` of) the test split."""
    idx = np.arange(len(test))
    if len(idx) > max_cases:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_cases, replace=False))
    rows = corruption_table(model, test.images[idx], test.labels[idx], plan, device, seed=seed)
    return {"n_cases": len(idx), "of": len(test), "seed": seed, "rows": rows}


def uncertainty_summary(
    model: torch.nn.Module, plan: Plan, test: Split, device: torch.device, seed: int = 0
) -> dict[str, Any]:
    """Selective-prediction curves from test-time augmentation and MC dropout on test.

    Confidence is the negative predictive entropy of the mean of the passes; MC dropout is
    skipped (with the reason) for a model without dropout.
    """
    task = plan.data.task
    out: dict[str, Any] = {}
    samplers = {
        "tta": lambda: tta_probabilities(model, test.images, plan, device, n=8, seed=seed),
        "mc_dropout": lambda: mc_dropout_probabilities(
            model, test.images, plan, device, n=20, seed=seed
        ),
    }
    for name, sample in samplers.items():
        try:
            samples = sample()
        except ModelError as exc:
            out[name] = {"skipped": f"{exc.message} ({exc.hint})" if exc.hint else exc.message}
            continue
        mean = samples.mean(axis=0)
        try:
            auc: float | None = medmnist_auc(test.labels, mean, task)
        except MedlensError:
            auc = None
        out[name] = {
            "passes": int(samples.shape[0]),
            "auc": auc,
            "acc": medmnist_acc(test.labels, mean, task),
            "mean_mutual_information": float(mutual_information(samples, task).mean()),
            "selective": selective_curve(
                test.labels, mean, task, confidence=-predictive_entropy(mean, task)
            ),
        }
    return out
