"""Run a model over device-resident arrays and return probabilities."""

from __future__ import annotations

import time

import numpy as np
import torch

from medlens.data.loader import DeviceArrays
from medlens.device import autocast


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Softmax over classes, or one sigmoid per label for multi-label tasks."""
    logits = logits.float()
    return torch.sigmoid(logits) if task == "multi-label" else torch.softmax(logits, dim=1)


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module, data: DeviceArrays, batch_size: int = 512, amp: bool = True
) -> tuple[np.ndarray, np.ndarray, float]:
    """(logits (N, K) float64, labels, images per second) over every image, in order.

    Logits rather than probabilities, so that calibration can rescale them.
    """
    model.eval()
    logits, labels = [], []
    start = time.perf_counter()
    for x, y in data.batches(batch_size, shuffle=False):
        with autocast(data.device, amp):
            out = model(x)
        logits.append(out.float())
        labels.append(y)
    out = torch.cat(logits).cpu().numpy().astype(np.float64)
    elapsed = max(time.perf_counter() - start, 1e-9)
    return out, torch.cat(labels).cpu().numpy(), len(data) / elapsed


def predict_arrays(
    model: torch.nn.Module,
    data: DeviceArrays,
    task: str,
    batch_size: int = 512,
    amp: bool = True,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(probabilities (N, K), labels, images per second) over every image, in order."""
    logits, labels, speed = predict_logits(model, data, batch_size, amp)
    probs = probabilities(torch.from_numpy(logits), task).numpy().astype(np.float64)
    return probs, labels, speed
