"""Losses: cross-entropy, BCE-with-logits and focal, with optional class weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from medlens.config import LossConfig, Plan

if TYPE_CHECKING:
    from medlens.data.dataset import ArrayDataset

BatchLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``batch_loss(logits, labels, images) -> loss`` for one training batch."""


def class_weights(counts: list[int], mode: str, n_total: int | None = None) -> torch.Tensor | None:
    """Per-class weights from training counts: ``balanced`` = N / (K * n_c), ``sqrt`` = its root.

    For multi-label tasks ``counts`` are positives per label and the weights are ``pos_weight``
    (negatives / positives, or its root).
    """
    if mode == "none":
        return None
    c = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    w = (n_total - c) / c if n_total is not None else c.sum() / (len(c) * c)
    if mode == "sqrt":
        w = np.sqrt(w)
    return torch.tensor(w, dtype=torch.float32)


class SoftmaxFocalLoss(nn.Module):
    """Focal loss for single-label tasks: -(1 - p_t)^gamma * log p_t (Lin et al., 2017).

    torchvision ships only the sigmoid form, used here for multi-label tasks.
    """

    def __init__(self, gamma: float, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1 - logp.exp()) ** self.gamma) * logp
        if self.weight is not None:
            w = self.weight[target]
            return (loss * w).sum() / w.sum()
        return loss.mean()


class MultiLabelLoss(nn.Module):
    """BCE-with-logits or sigmoid focal loss, with label smoothing towards 0.5."""

    def __init__(self, focal: bool, gamma: float, smoothing: float, pos_weight=None) -> None:
        super().__init__()
        self.focal, self.gamma, self.smoothing = focal, gamma, smoothing
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float() * (1 - self.smoothing) + 0.5 * self.smoothing
        if self.focal:
            return sigmoid_focal_loss(
                logits.float(), target, alpha=-1, gamma=self.gamma, reduction="mean"
            )
        return F.binary_cross_entropy_with_logits(
            logits.float(), target, pos_weight=self.pos_weight
        )


def build_loss(cfg: LossConfig, task: str, counts: list[int], n_train: int) -> nn.Module:
    """The loss module for a task; ``counts`` are the training class (or positive) counts."""
    if task == "multi-label":
        pos_weight = class_weights(counts, cfg.class_weights, n_total=n_train)
        return MultiLabelLoss(cfg.name == "focal", cfg.focal_gamma, cfg.label_smoothing, pos_weight)
    weight = class_weights(counts, cfg.class_weights)
    if cfg.name == "focal":
        return SoftmaxFocalLoss(cfg.focal_gamma, weight)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


def task_loss(plan: Plan, ds: ArrayDataset) -> nn.Module:
    """The plan's loss for its task, weighted by the training split's class counts."""
    n_train = len(ds.splits["train"].labels)
    return build_loss(plan.loss, plan.data.task, ds.class_counts("train"), n_train)


def plan_loss(plan: Plan, ds: ArrayDataset, device: torch.device) -> BatchLoss:
    """The training loss of one batch when nothing but the labels teaches (no teacher)."""
    loss_fn = task_loss(plan, ds).to(device)
    return lambda logits, labels, images: loss_fn(logits, labels)
