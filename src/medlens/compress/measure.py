"""What a compressed model is compared on: size, compute, test AUC/ACC and CPU speed."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from medlens.config import Plan
from medlens.data.dataset import ArrayDataset
from medlens.evaluate.calibration import probabilities
from medlens.evaluate.metrics import medmnist_acc, medmnist_auc
from medlens.models.registry import count_parameters

LATENCY_BATCHES = (1, 64)


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of the conv and linear layers for one ``example`` (batch of 1)."""
    total = 0

    def conv_hook(m: _ConvNd, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kernel = math.prod(m.kernel_size)
        total += out[0].numel() * kernel * (m.in_channels // m.groups)

    def linear_hook(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, _ConvNd):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.inference_mode():
            model.eval()(example[:1])
    finally:
        for h in handles:
            h.remove()
    return int(total)


def normalised(plan: Plan, images: np.ndarray) -> np.ndarray:
    """uint8 images as the model's float32 inputs (N, C, ...), normalised as the plan says."""
    from medlens.data.loader import device_arrays

    data = device_arrays(plan, images, np.zeros(len(images), np.int64), torch.device("cpu"))
    return data.prepare(data.images).contiguous().numpy()


def test_scores(model: nn.Module, plan: Plan, ds: ArrayDataset) -> dict[str, float]:
    """MedMNIST AUC and ACC of ``model`` on the test split."""
    from medlens.data.loader import device_arrays
    from medlens.inference import predict_logits

    device = next(model.parameters()).device
    test = ds.splits["test"]
    data = device_arrays(plan, test.images, test.labels, device)
    logits, labels, _ = predict_logits(model, data, plan.train.eval_batch_size, plan.train.amp)
    probs = probabilities(logits, plan.data.task)
    task = plan.data.task
    return {"auc": medmnist_auc(labels, probs, task), "acc": medmnist_acc(labels, probs, task)}


def cpu_speed(
    model: nn.Module,
    inputs: np.ndarray,
    *,
    channels_last: bool = False,
    seconds: float = 0.5,
    batch_sizes: tuple[int, ...] = LATENCY_BATCHES,
) -> dict[str, dict[str, float]]:
    """Median latency (ms per batch) and images/s on the CPU in fp32, per batch size."""
    from medlens.export.speed import batch_of, throughput, torch_runner

    cpu = copy.deepcopy(model).cpu().eval()
    if channels_last and inputs.ndim == 4:
        cpu = cpu.to(memory_format=torch.channels_last)
    run = torch_runner(cpu, channels_last=channels_last)
    return {
        str(b): throughput(run, batch_of(inputs, b), seconds=seconds, min_runs=3, warmup=2)
        for b in batch_sizes
    }


def summarise(
    model: nn.Module,
    plan: Plan,
    ds: ArrayDataset,
    *,
    run: str,
    latency_seconds: float = 0.5,
) -> dict[str, Any]:
    """One model's entry in compression.json: parameters, MACs, test scores, CPU speed."""
    inputs = normalised(plan, ds.splits["test"].images[:64])
    cpu = copy.deepcopy(model).cpu().eval()
    entry: dict[str, Any] = {
        "run": run,
        "model": plan.model.name,
        "pruned": plan.prune is not None,
        "parameters": count_parameters(model),
        "macs": count_macs(cpu, torch.from_numpy(inputs[:1])),
        "test": test_scores(model, plan, ds),
    }
    if latency_seconds > 0:
        entry["cpu"] = cpu_speed(
            cpu, inputs, channels_last=plan.train.channels_last, seconds=latency_seconds
        )
    return entry


def comparison(original: dict[str, Any], compressed: dict[str, Any]) -> dict[str, Any]:
    """How the compressed model compares: AUC/ACC change, size and compute ratios, speed-up."""
    out: dict[str, Any] = {
        "test_auc_difference": compressed["test"]["auc"] - original["test"]["auc"],
        "test_acc_difference": compressed["test"]["acc"] - original["test"]["acc"],
        "parameter_ratio": compressed["parameters"] / original["parameters"],
        "parameter_reduction": 1 - compressed["parameters"] / original["parameters"],
        "macs_ratio": compressed["macs"] / original["macs"] if original["macs"] else None,
    }
    if "cpu" in original and "cpu" in compressed:
        out["cpu_speedup"] = {
            b: compressed["cpu"][b]["images_per_s"] / original["cpu"][b]["images_per_s"]
            for b in original["cpu"]
            if b in compressed["cpu"]
        }
    return out
