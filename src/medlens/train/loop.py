"""The training loop: epochs over device-resident batches, validation, checkpoints, resume.

Reproducibility: every epoch re-seeds torch from (seed, epoch) and draws its batch order and
augmentation from a generator seeded the same way, so an epoch depends only on the weights and
optimizer state it starts from. That is what makes ``--resume`` land on the same final weights
as an uninterrupted run.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlens.config import Plan
from medlens.data.dataset import ArrayDataset
from medlens.data.loader import DeviceArrays
from medlens.errors import ConfigError, TrainingError
from medlens.evaluate.metrics import nll, validation_scores
from medlens.inference import predict_arrays
from medlens.models.registry import create_model
from medlens.progress import Reporter, SilentReporter
from medlens.rundir import RunDir, file_logger
from medlens.train import distributed
from medlens.train.checkpoint import (
    load_training_state,
    load_weights,
    save_training_state,
    save_weights,
)
from medlens.train.compiled import training_forward
from medlens.train.device import autocast, resolve_device
from medlens.train.finetune import Freezer, starting_weights
from medlens.train.losses import build_loss
from medlens.train.optim import build_optimizer, build_scheduler, current_lr

EpochCallback = Callable[[int, dict[str, Any]], None]
CURVE_FIELDS = (
    "epoch",
    "train_loss",
    "val_nll",
    "val_auc",
    "val_acc",
    "lr",
    "images_per_s",
    "seconds",
)


@dataclass
class FitResult:
    best_epoch: int
    best_val_auc: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def plan_image_size(plan: Plan) -> int | None:
    """The side of the plan's images (the last axis), when the plan says."""
    if plan.data.preprocess is not None:
        return int(plan.data.preprocess.size[-1])
    return plan.data.size


def check_distributed(plan: Plan, r: distributed.Ranks) -> None:
    """Refuse what does not work across ranks, before any training."""
    if not r.active:
        return
    if plan.train.batch_size < r.world:
        raise ConfigError(
            f"batch size {plan.train.batch_size} is smaller than the {r.world} processes",
            hint=f"use --batch-size {r.world * 8} or more (the global batch, split over ranks)",
        )
    if plan.model.freeze != "none":
        raise ConfigError(
            "model.freeze is not supported under torchrun yet (DDP fixes its parameters)",
            hint="train a frozen or gradually unfrozen model in one process",
        )


def build_model_for(plan: Plan, device: torch.device) -> torch.nn.Module:
    """The plan's model on ``device``; with ``plan.prune``, slimmed to its pruned channels."""
    model = create_model(
        plan.model.name,
        in_chans=plan.data.in_chans,
        num_classes=plan.data.n_classes,
        spatial_dims=plan.data.spatial_dims,
        pretrained=plan.model.pretrained,
        drop_rate=plan.model.drop_rate,
        img_size=plan.model.img_size or plan_image_size(plan),
        slices=plan.model.slices,
    )
    if plan.prune is not None:
        from medlens.compress.structure import apply_shapes

        apply_shapes(model, plan.prune.shapes)
    model = model.to(device)
    if plan.train.channels_last and plan.data.spatial_dims == 2:
        model = model.to(memory_format=torch.channels_last)
    return model


def device_arrays(
    plan: Plan, images: np.ndarray, labels: np.ndarray, device: torch.device
) -> DeviceArrays:
    """Images and labels on ``device`` (or streamed to it), normalised and laid out as the plan
    says."""
    return DeviceArrays(
        images,
        labels,
        device,
        plan.data.mean,
        plan.data.std,
        plan.train.channels_last,
        on_device=plan.train.data_on_device,
        workers=plan.train.workers,
    )


def _write_curves(run: RunDir, history: list[dict[str, Any]]) -> None:
    with run.curves.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


BatchLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``batch_loss(logits, labels, images) -> loss`` for one training batch."""


def batch_loss_for(plan: Plan, loss_fn: torch.nn.Module, device: torch.device) -> BatchLoss:
    """The training loss of one batch: the plan's loss, or with ``plan.distill`` the
    distillation loss, whose teacher sees the same augmented images as the student."""
    if plan.distill is None:
        return lambda logits, labels, images: loss_fn(logits, labels)
    from medlens.compress.losses import DistillationLoss
    from medlens.compress.teacher import load_teacher

    teacher = load_teacher(plan, device)
    return DistillationLoss(
        teacher, loss_fn, plan.distill.alpha, plan.distill.temperature, plan.data.task
    )


def weight_average(plan: Plan, model: torch.nn.Module):
    """timm's ``ModelEmaV3`` of ``model`` when the plan sets ``train.ema``, else None.

    The decay warms up as ``1 - (1 + step)^(-2/3)`` (capped at ``train.ema``), so short runs
    on small datasets average over the last few epochs instead of keeping the random start.
    """
    if plan.train.ema is None:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=plan.train.ema, use_warmup=True)


def _tensorboard(run: RunDir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(run.tensorboard))


def fit(
    plan: Plan,
    ds: ArrayDataset,
    run: RunDir,
    *,
    resume: bool = False,
    reporter: Reporter | None = None,
    callbacks: Sequence[EpochCallback] = (),
    init_weights: Path | None = None,
) -> FitResult:
    """Train ``plan`` on ``ds``, writing checkpoints and curves into ``run``.

    ``init_weights``: start from these weights (a safetensors file that fits the plan's model,
    e.g. freshly pruned ones) instead of a random initialisation; ignored with ``resume``.
    With ``plan.distill`` the loss is the distillation loss (see :func:`batch_loss_for`).
    """
    cfg = plan.train
    r, device = distributed.setup(resolve_device(cfg.device))
    check_distributed(plan, r)
    # rank 0 talks and writes; the other ranks train their shard silently
    reporter = (reporter or SilentReporter()) if r.main else SilentReporter()
    log = file_logger(run) if r.main else logging.getLogger("medlens.rank")
    seed_everything(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_model_for(plan, device)
    if init_weights is not None and not resume:
        load_weights(init_weights, model)
    elif not resume:
        for line in starting_weights(model, plan):  # model.weights, model.init
            reporter.message(line)
            log.info(line)
    freezer = Freezer.for_plan(model, plan)
    averager = weight_average(plan, model)
    average = averager.module if averager is not None else None
    evaluated = model if average is None else average  # validated and saved as best
    net = distributed.wrap(model, r, device)  # DDP under torchrun; ``model`` is what is saved
    forward = training_forward(net, cfg.compile)  # train.compile: compiled, checked once
    train_split, val_split = ds.splits["train"], ds.splits["val"]
    train = device_arrays(plan, train_split.images, train_split.labels, device)
    val_rows = distributed.shard_indices(len(val_split.labels), r)
    # one process takes every val image: pass the split as it is (a memmap stays one)
    val_images = val_split.images[val_rows] if r.active else val_split.images
    val = device_arrays(plan, val_images, val_split.labels[val_rows], device)
    loss_fn = build_loss(plan.loss, plan.data.task, ds.class_counts("train"), len(train)).to(device)
    batch_loss = batch_loss_for(plan, loss_fn, device)
    batch_size = cfg.batch_size // r.world  # the plan's batch is the global batch
    shard_len = len(train) // r.world
    drop_last = shard_len > batch_size
    steps_per_epoch = shard_len // batch_size if drop_last else 1
    optimizer = build_optimizer(model, plan.optim)
    scheduler = build_scheduler(optimizer, plan.schedule, cfg.epochs, steps_per_epoch)

    state = {
        "epoch": -1,
        "step": 0,
        "best_auc": -math.inf,
        "best_epoch": -1,
        "stale": 0,
        "history": [],
    }
    if resume:
        state = load_training_state(run.last, model, optimizer, ema=average)
        reporter.message(f"resuming after epoch {state['epoch'] + 1} from {run.last}")
        log.info("resume from %s after epoch %d", run.last, state["epoch"] + 1)
    if scheduler is not None:
        scheduler.step_update(state["step"])
    history: list[dict[str, Any]] = state["history"]
    writer = _tensorboard(run) if r.main else None
    log.info(
        "train %s on %s (%d images), device %s, data on device: %s",
        plan.model.name,
        ds.name,
        len(train),
        device,
        train.resident,
    )
    stopped_early = False
    try:
        for epoch in range(state["epoch"] + 1, cfg.epochs):
            torch.manual_seed(epoch_seed(cfg.seed, epoch))
            gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
            net.train()
            freezer.apply(model, epoch)  # model.freeze: which layer groups train this epoch
            reporter.epoch_start(epoch, cfg.epochs, steps_per_epoch)
            loss_sum = torch.zeros((), device=device)
            start = time.perf_counter()
            n_seen = 0
            for x, y in train.batches(
                batch_size,
                shuffle=True,
                generator=gen,
                drop_last=drop_last,
                augment=plan.augment,
                shard=(r.rank, r.world),
            ):
                with autocast(device, cfg.amp):
                    loss = batch_loss(forward(x), y, x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                state["step"] += 1
                if averager is not None:
                    averager.update(model, step=state["step"])
                if scheduler is not None:
                    scheduler.step_update(state["step"])
                loss_sum += loss.detach()
                n_seen += x.shape[0]
                # reading the loss forces a device sync; on a GPU only do it for the bar
                reporter.batch_end(float(loss.detach()) if device.type == "cpu" else None)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            train_loss = distributed.mean_over_ranks(float(loss_sum) / steps_per_epoch, r)
            if not math.isfinite(train_loss):
                raise TrainingError(
                    f"the training loss became {train_loss} in epoch {epoch + 1}",
                    hint="lower the learning rate (--lr) or use loss.name=cross_entropy; "
                    "the last good checkpoint is kept",
                )
            distributed.sync_batchnorm_stats(model, r)  # one model on every rank
            if average is not None:
                distributed.sync_batchnorm_stats(average, r)
            probs, labels, _ = predict_arrays(
                evaluated, val, plan.data.task, cfg.eval_batch_size, cfg.amp
            )
            n_val = len(val_split.labels)
            probs = distributed.gather_in_order(probs, n_val, r)  # all val images, in order
            labels = distributed.gather_in_order(labels, n_val, r)
            val_auc, val_acc = validation_scores(probs, labels, plan.data.task)
            score = val_auc if math.isfinite(val_auc) else val_acc
            is_best = score > state["best_auc"] + 1e-6
            record = {
                "epoch": epoch + 1,
                "train_loss": round(train_loss, 6),
                "val_nll": round(nll(probs, labels, plan.data.task), 6),
                "val_auc": round(val_auc, 6),
                "val_acc": round(val_acc, 6),
                "lr": current_lr(optimizer),
                "images_per_s": round(n_seen * r.world / seconds, 1),
                "seconds": round(seconds, 3),
                "is_best": is_best,
            }
            if is_best:
                state.update(best_auc=score, best_epoch=epoch, stale=0)
            if is_best and r.main:
                save_weights(
                    run.best,
                    evaluated,
                    {
                        "epoch": epoch + 1,
                        "val_auc": val_auc,
                        "val_acc": val_acc,
                        "model": plan.model.name,
                    },
                )
            if not is_best:
                state["stale"] += 1
            history.append(record)
            state["epoch"] = epoch
            state["history"] = history
            if r.main:
                save_training_state(run.last, model, optimizer, state, ema=average)
                _write_curves(run, history)
            if writer is not None:
                for key in ("train_loss", "val_nll", "val_auc", "val_acc", "lr", "images_per_s"):
                    writer.add_scalar(key, record[key], epoch + 1)
            log.info("epoch %d: %s", epoch + 1, {k: v for k, v in record.items() if k != "epoch"})
            reporter.epoch_end(record)
            for callback in callbacks:
                callback(epoch, record)
            patience = cfg.early_stopping_patience
            if patience is not None and state["stale"] >= patience:
                stopped_early = True
                reporter.message(f"early stop: no val AUC gain for {patience} epochs")
                log.info("early stop after epoch %d", epoch + 1)
                break
    finally:
        if writer is not None:
            writer.close()
    return FitResult(
        best_epoch=state["best_epoch"] + 1,
        best_val_auc=float(state["best_auc"]),
        epochs_run=state["epoch"] + 1,
        stopped_early=stopped_early,
        history=history,
    )
