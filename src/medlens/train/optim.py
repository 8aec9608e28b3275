"""Optimizer and learning-rate schedule, built with timm's factories."""

from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler

from medlens.config import OptimConfig, ScheduleConfig


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD (Nesterov); no weight decay on biases and norm layers (timm's rule)."""
    kwargs = {"momentum": cfg.momentum, "nesterov": True} if cfg.name == "sgd" else {}
    opt = "sgd" if cfg.name == "sgd" else cfg.name
    if cfg.layer_decay is not None:  # groups carry their own weight decay and lr_scale
        from medlens.train.finetune import optimizer_groups

        groups = optimizer_groups(model, cfg.weight_decay, cfg.layer_decay)
        optimizer = create_optimizer_v2(groups, opt=opt, lr=cfg.lr, foreach=False, **kwargs)
        for group in optimizer.param_groups:
            # timm's schedulers start from initial_lr and apply lr_scale at every step; a
            # constant schedule (no scheduler) keeps the scaled lr set here
            group["initial_lr"] = cfg.lr
            group["lr"] = cfg.lr * group["lr_scale"]
        return optimizer
    return create_optimizer_v2(
        model, opt=opt, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False, **kwargs
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int
) -> CosineLRScheduler | None:
    """Per-step cosine decay with linear warm-up; ``None`` for a constant rate.

    The schedule is a pure function of the step count, so resuming only needs that count.
    """
    if cfg.name == "constant":
        return None
    total = max(1, epochs * steps_per_epoch)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    base_lr = optimizer.param_groups[0]["lr"]
    return CosineLRScheduler(
        optimizer,
        t_initial=total - warmup,
        lr_min=base_lr * cfg.min_lr_ratio,
        warmup_t=warmup,
        warmup_lr_init=base_lr * 0.01,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The largest lr of the optimizer's groups (the head's, under layer-wise decay)."""
    return float(max(group["lr"] for group in optimizer.param_groups))
