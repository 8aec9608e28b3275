"""How long a plan takes on this machine, measured rather than guessed.

A probe runs a few real training steps of the plan's model (its batch size, resolution,
augmentation, loss and optimizer, on this device), one inference pass, one checkpoint save and
the trust analysis at the plan's bootstrap settings, and returns the unit costs;
:mod:`medlens.plan.budget` turns them into the run's wall time and fits a recipe to a budget.

>>> costs = measure_costs(plan, ds, torch.device("cpu"))  # doctest: +SKIP
>>> costs.train_s_per_image, costs.eval_s_per_image  # doctest: +SKIP
(0.031, 0.006)
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medlens.config import Plan
from medlens.data.dataset import ArrayDataset
from medlens.data.loader import device_arrays
from medlens.device import autocast
from medlens.inference import predict_logits
from medlens.models.build import build_model
from medlens.models.checkpoint import save_weights
from medlens.plan.budget import StepCosts
from medlens.train.checkpoint import save_training_state
from medlens.train.losses import BatchLoss, plan_loss
from medlens.train.optim import build_optimizer

WARMUP_STEPS = 1  # the first step allocates and tunes kernels: not timed
TIMED_STEPS = 2
EVAL_IMAGES = 256
RAM_BYTES_PER_S = 1e9  # copying the uint8 cache into RAM at the start of training


def _resized(images: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    """``images`` (N, C, *spatial) at another spatial ``shape`` (for timing only: a probe of a
    smaller resolution need not build that cache first)."""
    if shape is None or tuple(images.shape[2:]) == tuple(shape):
        return np.ascontiguousarray(images)
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    y = torch.nn.functional.interpolate(x, size=tuple(shape), mode=mode, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).numpy()


def _train_seconds(
    model: torch.nn.Module, plan: Plan, images: np.ndarray, labels: np.ndarray, device, loss
) -> tuple[float, int]:
    """Seconds and images of the timed training steps (after the warm-up)."""
    batch = min(plan.train.batch_size, len(images) // (WARMUP_STEPS + TIMED_STEPS))
    data = device_arrays(plan, images, labels, device)
    optimizer = build_optimizer(model, plan.optim)
    gen = torch.Generator().manual_seed(0)
    model.train()
    seconds, seen = 0.0, 0
    batches = data.batches(batch, shuffle=True, generator=gen, drop_last=True, augment=plan.augment)
    for step, (x, y) in enumerate(batches):
        start = time.perf_counter()
        with autocast(device, plan.train.amp):
            value = loss(model(x), y, x)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        float(value.detach())  # wait for the device
        if step >= WARMUP_STEPS:
            seconds += time.perf_counter() - start
            seen += x.shape[0]
    return seconds, seen


def _save_seconds(model: torch.nn.Module, plan: Plan) -> float:
    """One epoch's checkpoint writes: best weights and the full training state."""
    optimizer = build_optimizer(model, plan.optim)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        save_weights(Path(tmp) / "best.safetensors", model)
        save_training_state(Path(tmp) / "last.safetensors", model, optimizer, {"epoch": 0})
        return time.perf_counter() - start


def _trust_seconds(plan: Plan, n_val: int, n_test: int) -> float:
    """The trust analysis (calibration, bootstrap CIs, operating points, conformal sets) on
    random logits of the run's sizes, timed at two bootstrap counts and extrapolated to the
    plan's (its cost is linear in the number of resamples)."""
    from medlens.config import positive_index
    from medlens.evaluate.trust import trust_analysis

    rng = np.random.default_rng(0)
    k, task = plan.data.n_classes, plan.data.task

    def labels(n: int) -> np.ndarray:
        if task == "multi-label":
            return (rng.random((n, k)) < 0.5).astype(np.int64)
        return np.arange(n) % k

    val = (rng.normal(size=(n_val, k)), labels(n_val))
    test = (rng.normal(size=(n_test, k)), labels(n_test))
    ev = plan.evaluate
    settings = {
        "task": task,
        "label_names": plan.data.label_names,
        "positive": positive_index(plan),
        "ci": ev.ci,
        "conformal_alpha": ev.conformal_alpha,
        "conformal_method": ev.conformal_method,
        "target_sensitivity": ev.target_sensitivity,
        "target_specificity": ev.target_specificity,
        "val_keys": np.arange(n_val, dtype=np.uint64),
        "test_keys": np.arange(n_val, n_val + n_test, dtype=np.uint64),
    }
    times = {}
    for n_boot in (10, 30):
        start = time.perf_counter()
        trust_analysis(*val, *test, n_boot=n_boot, **settings)
        times[n_boot] = time.perf_counter() - start
    per_resample = max(0.0, (times[30] - times[10]) / 20)
    base = max(0.0, times[10] - 10 * per_resample)
    return base + per_resample * plan.evaluate.bootstrap


def measure_costs(
    plan: Plan,
    ds: ArrayDataset,
    device: torch.device,
    *,
    shape: tuple[int, ...] | None = None,
    batch_loss: Callable[[torch.device], BatchLoss] | None = None,
    trust: bool = True,
) -> StepCosts:
    """Unit costs of ``plan`` on ``device``, measured on a few of ``ds``'s images.

    ``shape``: time the plan at another input size (the images are resized for the probe
    only). ``batch_loss``: the run's loss factory, as ``fit`` takes it (a distilled student's
    teacher costs a forward pass too). ``trust=False`` skips timing the trust analysis.
    """
    start = time.perf_counter()
    model = build_model(plan, device, pretrained=False)  # the weights do not change the speed
    build_s = time.perf_counter() - start
    train, val = ds.splits["train"], ds.splits["val"]
    batch = min(plan.train.batch_size, len(train))
    # enough images for the warm-up and the timed steps (cycled when train is smaller)
    rows = np.arange(batch * (WARMUP_STEPS + TIMED_STEPS)) % len(train)
    first = np.asarray(train.images[: min(len(train), len(rows))])
    images = _resized(first[rows % len(first)], shape)
    labels = np.asarray(train.labels[: len(first)])[rows % len(first)]
    loss = batch_loss(device) if batch_loss is not None else plan_loss(plan, ds, device)
    seconds, seen = _train_seconds(model, plan, images, labels, device, loss)
    m = min(len(val), EVAL_IMAGES)
    eval_images = _resized(np.asarray(val.images[:m]), shape)
    data = device_arrays(plan, eval_images, np.asarray(val.labels[:m]), device)
    predict_logits(model, data, plan.train.eval_batch_size, plan.train.amp)  # warm-up
    start = time.perf_counter()
    predict_logits(model, data, plan.train.eval_batch_size, plan.train.amp)
    eval_s = time.perf_counter() - start
    image_bytes = images[0].nbytes * (len(train) + len(val) + len(ds.splits["test"]))
    return StepCosts(
        train_s_per_image=seconds / max(seen, 1),
        eval_s_per_image=eval_s / max(m, 1),
        save_s=_save_seconds(model, plan),
        trust_s=_trust_seconds(plan, len(val), len(ds.splits["test"])) if trust else 0.0,
        setup_s=build_s + image_bytes / RAM_BYTES_PER_S,
    )
