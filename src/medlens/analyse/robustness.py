"""AUC and ACC of a trained model on corrupted copies of a split (ImageNet-C style table).

>>> rows = corruption_table(model, split.images, split.labels, plan, device)  # doctest: +SKIP
>>> rows[0]["corruption"], rows[0]["severity"]  # doctest: +SKIP
('clean', 0)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from medlens.analyse.corruptions import CORRUPTIONS, SEVERITIES, check_corruption, corrupt
from medlens.config import Plan
from medlens.data.loader import DeviceArrays
from medlens.device import autocast
from medlens.errors import ConfigError
from medlens.evaluate.metrics import medmnist_acc, medmnist_auc
from medlens.inference import probabilities

Transform = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def kept_modes(model: torch.nn.Module) -> Iterator[None]:
    """Restore every module's train/eval flag on exit, whatever the block changed."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def arrays_for(plan: Plan, images: np.ndarray, device: torch.device) -> DeviceArrays:
    """Split images on ``device`` with the plan's normalisation (labels are not needed)."""
    from medlens.data.loader import device_arrays

    return device_arrays(plan, images, np.zeros(len(images), dtype=np.int64), device)


@torch.inference_mode()
def transformed_probabilities(
    model: torch.nn.Module,
    data: DeviceArrays,
    plan: Plan,
    batch_size: int,
    transform: Transform | None = None,
) -> np.ndarray:
    """Probabilities (N, K) for every image, with ``transform`` applied on the [0, 1] scale.

    Each batch goes uint8 -> float [0, 1] -> ``transform`` -> the plan's normalisation, the
    same steps as :meth:`DeviceArrays.prepare`; with no transform the result is what
    :func:`medlens.inference.predict_arrays` gives. The model's train/eval modes are the
    caller's business (evaluation needs ``model.eval()``).
    """
    logits = []
    for raw in data.uint8_batches(batch_size):
        x = raw.float().div_(255.0)
        if transform is not None:
            x = transform(x)
        x = (x - data.mean) / data.std
        if data.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(data.device, plan.train.amp):
            logits.append(model(x).float())
    # softmax / sigmoid on the CPU, as predict_arrays does, so clean scores match it exactly
    return probabilities(torch.cat(logits).cpu(), plan.data.task).numpy().astype(np.float64)


def _scores(labels: np.ndarray, probs: np.ndarray, task: str) -> tuple[float | None, float]:
    """(AUC or None where undefined, ACC) by MedMNIST's definitions."""
    try:
        auc: float | None = medmnist_auc(labels, probs, task)
    except ConfigError:  # a class absent from the labels
        auc = None
    return auc, medmnist_acc(labels, probs, task)


def _drop(clean: float | None, value: float | None) -> float | None:
    return None if clean is None or value is None else clean - value


def _seed_for(seed: int, corruption_index: int) -> int:
    """A generator seed per corruption; every severity of one corruption shares it."""
    return int(np.random.SeedSequence([seed, corruption_index]).generate_state(1)[0])


def corruption_table(
    model: torch.nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    plan: Plan,
    device: torch.device,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    batch_size: int | None = None,
) -> list[dict[str, Any]]:
    """AUC and ACC on clean and corrupted copies of a split.

    ``images`` and ``labels`` are a split's arrays as stored (uint8, channel first). Rows:
    ``{"corruption", "severity", "auc", "acc", "auc_drop", "acc_drop"}``, first ``"clean"``
    at severity 0, then each corruption at each severity; a drop is clean minus corrupted
    (positive = worse). ``auc`` is None when the labels lack a class. The same ``seed`` (and
    ``batch_size``, default the plan's ``train.eval_batch_size``) gives the same table; every
    severity of a corruption reuses one random stream, so severities differ only in strength.
    """
    names = list(CORRUPTIONS) if corruptions is None else list(corruptions)
    for name in names:
        for severity in severities:
            check_corruption(name, severity)
    if len(images) != len(labels):
        raise ConfigError(
            f"{len(images)} images but {len(labels)} labels",
            hint="pass the images and labels of the same split",
        )
    task = plan.data.task
    batch_size = batch_size or plan.train.eval_batch_size
    data = arrays_for(plan, images, device)
    rows: list[dict[str, Any]] = []
    with kept_modes(model):
        model.eval()
        clean_auc, clean_acc = _scores(
            labels, transformed_probabilities(model, data, plan, batch_size), task
        )
        rows.append(
            {
                "corruption": "clean",
                "severity": 0,
                "auc": clean_auc,
                "acc": clean_acc,
                "auc_drop": 0.0 if clean_auc is not None else None,
                "acc_drop": 0.0,
            }
        )
        for name in names:
            index = list(CORRUPTIONS).index(name)
            for severity in severities:
                generator = torch.Generator(device=device).manual_seed(_seed_for(seed, index))

                def transform(x, name=name, severity=severity, generator=generator):
                    return corrupt(x, name, severity, generator)

                probs = transformed_probabilities(model, data, plan, batch_size, transform)
                auc, acc = _scores(labels, probs, task)
                rows.append(
                    {
                        "corruption": name,
                        "severity": int(severity),
                        "auc": auc,
                        "acc": acc,
                        "auc_drop": _drop(clean_auc, auc),
                        "acc_drop": clean_acc - acc,
                    }
                )
    return rows
