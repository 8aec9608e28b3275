"""The explanation gallery: saliency overlays of the most confident right and wrong test cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medlens.analyse.overlay import overlay_image
from medlens.analyse.saliency import default_method, saliency_maps
from medlens.config import Plan
from medlens.data.dataset import Split
from medlens.data.loader import device_arrays
from medlens.evaluate.calibration import probabilities
from medlens.inference import predict_logits

GROUPS = ("Correct, most confident", "Wrong, most confident")


def gallery_cases(
    model: torch.nn.Module, plan: Plan, test: Split, device: torch.device, per_group: int
) -> tuple[str, list[dict[str, Any]]]:
    """(method, groups): for each group of :data:`GROUPS`, up to ``per_group`` cases as
    ``{"index", "caption", "rgb"}`` with ``rgb`` the (H, W, 3) overlay of the predicted class."""
    task, names = plan.data.task, plan.data.label_names
    data = device_arrays(plan, test.images, test.labels, device)
    logits, labels, _ = predict_logits(model, data, plan.train.eval_batch_size, plan.train.amp)
    probs = probabilities(logits, task)
    pred = probs.argmax(1)
    conf = probs.max(1)
    truth = labels.argmax(1) if task == "multi-label" else labels.ravel()
    right = truth == pred if task != "multi-label" else labels[np.arange(len(pred)), pred] > 0
    method = default_method(model)
    groups = []
    for title, mask in zip(GROUPS, (right, ~right), strict=True):
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(-conf[idx], kind="stable")][:per_group]
        cases = []
        if len(idx):
            x = data.prepare(torch.as_tensor(test.images[idx]).to(device))
            maps = saliency_maps(model, x, torch.as_tensor(pred[idx]), method=method).numpy()
            for j, i in enumerate(idx):
                caption = f"#{i}: {names[pred[i]]} ({conf[i]:.2f})" + (
                    "" if task == "multi-label" else f", truth {names[truth[i]]}"
                )
                cases.append(
                    {
                        "index": int(i),
                        "caption": caption,
                        "rgb": overlay_image(test.images[i], maps[j]),
                    }
                )
        groups.append({"title": title, "cases": cases})
    return method, groups
