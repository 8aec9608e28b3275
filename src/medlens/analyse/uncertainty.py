"""Predictive uncertainty: test-time augmentation, MC dropout, entropy, selective prediction.

Sampling functions return probabilities of shape (n, N, K): n passes over N images of K
classes (or labels). :func:`predictive_entropy` and :func:`mutual_information` turn samples into
per-image uncertainty; :func:`medlens.evaluate.selective.selective_curve` says how accuracy
grows when the least confident cases are handed back (to a clinician) and only the rest are
predicted.

>>> samples = mc_dropout_probabilities(model, split.images, plan, device)  # doctest: +SKIP
>>> curve = selective_curve(split.labels, samples.mean(0), plan.data.task)  # doctest: +SKIP
>>> curve["accuracy_at"]["0.8"], curve["aurc"]  # doctest: +SKIP
(0.91, 0.05)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medlens.analyse.robustness import arrays_for, kept_modes, transformed_probabilities
from medlens.config import Plan
from medlens.data.augment import augment_batch, is_geometric
from medlens.errors import ConfigError, ModelError
from medlens.evaluate.validation import TASKS

_EPS = 1e-12

_DROPOUT_LAYERS = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


def _check_n(n: int, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{what} needs n >= 1 passes, got {n!r}", hint="e.g. n=8")


def _pass_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    seed_i = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(seed_i)


def tta_probabilities(
    model: nn.Module,
    images: np.ndarray,
    plan: Plan,
    device: torch.device,
    n: int = 8,
    seed: int = 0,
    batch_size: int | None = None,
) -> np.ndarray:
    """Test-time augmentation: probabilities (n, N, K) of ``n`` passes over ``images``.

    Pass 0 is the un-augmented image; passes 1.. draw, per image, the geometric transforms
    the plan trains with (flips and 90-degree turns only where enabled, rotation, zoom and
    shift within its ranges), through :func:`medlens.data.augment.augment_batch`. Brightness,
    contrast and gamma jitter are left out: they are not label-preserving views of the same scan.
    ``images`` are uint8, channel first, as stored in a split. Raises :class:`ConfigError`
    when ``n > 1`` and the plan allows no geometric transform.
    """
    _check_n(n, "test-time augmentation")
    tta = plan.augment.model_copy(
        update={"brightness": 0.0, "contrast": 0.0, "gamma": 0.0, "p": 1.0}
    )
    if n > 1 and not is_geometric(tta):
        raise ConfigError(
            "the plan's augmentation has no geometric transform to use at test time",
            hint="enable one, e.g. --set augment.rotate_deg=10 or augment.hflip=true",
        )
    batch_size = batch_size or plan.train.eval_batch_size
    data = arrays_for(plan, images, device)
    passes = []
    with kept_modes(model):
        model.eval()
        passes.append(transformed_probabilities(model, data, plan, batch_size))
        for i in range(1, n):
            generator = _pass_generator(seed, i, device)

            def transform(x, generator=generator):
                return augment_batch(x, tta, generator)

            passes.append(transformed_probabilities(model, data, plan, batch_size, transform))
    return np.stack(passes)


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose own train flag turns dropout on: dropout layers with p > 0, and
    modules that call dropout themselves from a ``drop_rate`` > 0 (timm's classifier heads,
    medlens' ``DropoutLinear``)."""
    found = []
    for m in model.modules():
        if isinstance(m, _DROPOUT_LAYERS):
            if m.p > 0:
                found.append(m)
        elif isinstance(getattr(m, "drop_rate", None), (int, float)) and m.drop_rate > 0:
            found.append(m)
    return found


def mc_dropout_probabilities(
    model: nn.Module,
    images: np.ndarray,
    plan: Plan,
    device: torch.device,
    n: int = 20,
    seed: int = 0,
    batch_size: int | None = None,
) -> np.ndarray:
    """Monte Carlo dropout (Gal & Ghahramani, 2016): probabilities (n, N, K) of ``n`` passes.

    Only dropout is switched on: the model goes to eval mode (BatchNorm uses its running
    statistics and updates nothing) and just the modules of :func:`dropout_modules` have their
    own flag set to training; every module's mode is restored afterwards. The draws come from
    ``seed`` in a forked RNG, so the caller's global random state is left as it was. Raises
    :class:`ModelError` for a model without dropout.
    """
    _check_n(n, "MC dropout")
    active = dropout_modules(model)
    if not active:
        raise ModelError(
            f"MC dropout needs dropout, but this {type(model).__name__} has none "
            "(no dropout layer or drop_rate above 0)",
            hint="train with --set model.drop_rate=0.2 (the plan's model.drop_rate)",
        )
    batch_size = batch_size or plan.train.eval_batch_size
    data = arrays_for(plan, images, device)
    cuda = [device] if device.type == "cuda" else []
    passes = []
    with kept_modes(model), torch.random.fork_rng(devices=cuda):
        model.eval()
        for m in active:
            m.training = True  # this module only: its children (e.g. BatchNorm) stay in eval
        torch.manual_seed(seed)
        for _ in range(n):
            passes.append(transformed_probabilities(model, data, plan, batch_size))
    return np.stack(passes)


def _entropy(p: np.ndarray, multilabel: bool) -> np.ndarray:
    """Entropy in nats over the last axis: categorical, or the sum of Bernoulli entropies."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    h = -p * np.log(np.clip(p, _EPS, None))
    if multilabel:
        q = 1.0 - p
        h = h - q * np.log(np.clip(q, _EPS, None))
    return h.sum(axis=-1)


def _check_task(task: str | None) -> bool:
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}", hint=f"use one of {', '.join(TASKS)}")
    return task == "multi-label"


def predictive_entropy(probs: np.ndarray, task: str | None = None) -> np.ndarray:
    """Entropy (nats) of the mean prediction, per image: (N,) from (N, K) or (n, N, K).

    Single-label tasks use the softmax distribution (max ln K); ``task="multi-label"`` sums
    the Bernoulli entropy of every label's sigmoid (max K ln 2).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim not in (2, 3):
        raise ConfigError(
            f"probabilities must be (N, K) or samples (n, N, K), got shape {p.shape}",
            hint="stack the passes on axis 0",
        )
    multilabel = _check_task(task)
    return _entropy(p.mean(axis=0) if p.ndim == 3 else p, multilabel)


def mutual_information(samples: np.ndarray, task: str | None = None) -> np.ndarray:
    """The epistemic part of the uncertainty, per image (N,): the mutual information between
    prediction and model (BALD; Houlsby et al., 2011), entropy of the mean minus the mean
    entropy of the ``n`` samples in (n, N, K). Zero when all samples agree."""
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim != 3:
        raise ConfigError(
            f"mutual information needs samples (n, N, K), got shape {s.shape}",
            hint="pass the output of tta_probabilities or mc_dropout_probabilities",
        )
    multilabel = _check_task(task)
    mi = _entropy(s.mean(axis=0), multilabel) - _entropy(s, multilabel).mean(axis=0)
    return np.maximum(mi, 0.0)  # rounding can leave -1e-17
