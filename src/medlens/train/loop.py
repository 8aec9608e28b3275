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
from medlens.data.loader import device_arrays
from medlens.data.sampling import sampling_weights
from medlens.device import autocast, resolve_device
from medlens.errors import ConfigError, TrainingError
from medlens.evaluate.metrics import nll, validation_scores
from medlens.inference import predict_arrays
from medlens.models.build import build_model
from medlens.models.checkpoint import load_weights, save_weights
from medlens.progress import Reporter, SilentReporter, format_seconds
from medlens.run import Run, file_logger
from medlens.train import distributed
from medlens.train.checkpoint import load_training_state, save_training_state
from medlens.train.compiled import training_forward
from medlens.train.finetune import Freezer, starting_weights
from medlens.train.losses import BatchLoss, plan_loss
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


HEARTBEAT_SECONDS = 60.0
"""Within an epoch, at most this long passes without a progress line in log.txt (and on a
console that is not a terminal, which shows no progress bar)."""


class Heartbeat:
    """Progress lines within an epoch: images done, images/s and the epoch's ETA."""

    def __init__(self, start: float, total: int, every: float | None = None) -> None:
        self.start = self.last = start
        self.total = total
        self.every = HEARTBEAT_SECONDS if every is None else every

    def line(self, epoch: int, epochs: int, done: int) -> str | None:
        """The line to show now, or None when the last one is recent."""
        now = time.perf_counter()
        if now - self.last < self.every:
            return None
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        return (
            f"epoch {epoch + 1}/{epochs}: {done}/{self.total} images, {rate:.1f} images/s, "
            f"epoch ETA {format_seconds(eta)}"
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


def _write_curves(run: Run, history: list[dict[str, Any]]) -> None:
    with run.curves_file.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def weight_average(plan: Plan, model: torch.nn.Module):
    """timm's ``ModelEmaV3`` of ``model`` when the plan sets ``train.ema``, else None.

    The decay warms up as ``1 - (1 + step)^(-2/3)`` (capped at ``train.ema``), so short runs
    on small datasets average over the last few epochs instead of keeping the random start.
    """
    if plan.train.ema is None:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=plan.train.ema, use_warmup=True)


def _tensorboard(run: Run):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(run.tensorboard))


def fit(
    plan: Plan,
    ds: ArrayDataset,
    run: Run,
    *,
    resume: bool = False,
    reporter: Reporter | None = None,
    callbacks: Sequence[EpochCallback] = (),
    init_weights: Path | None = None,
    batch_loss: Callable[[torch.device], BatchLoss] | None = None,
) -> FitResult:
    """Train ``plan`` on ``ds``, writing checkpoints and curves into ``run``.

    ``init_weights``: start from these weights (a safetensors file that fits the plan's model,
    e.g. freshly pruned ones) instead of a random initialisation; ignored with ``resume``.
    ``batch_loss``: makes the loss of one training batch on the training device (for a
    distilled student, the distillation loss with its teacher); default: the plan's loss.
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
    model = build_model(plan, device)
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
    draw_weights = sampling_weights(train_split.labels, cfg.sampler)  # train.sampler
    val_rows = distributed.shard_indices(len(val_split.labels), r)
    # one process takes every val image: pass the split as it is (a memmap stays one)
    val_images = val_split.images[val_rows] if r.active else val_split.images
    val = device_arrays(plan, val_images, val_split.labels[val_rows], device)
    if batch_loss is None and plan.distill is not None:
        raise ConfigError(
            "a distilled student's plan needs its teacher's loss",
            hint="train it with `medlens distill` or `medlens train --resume`",
        )
    step_loss = batch_loss(device) if batch_loss is not None else plan_loss(plan, ds, device)
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
            pulse = Heartbeat(start, steps_per_epoch * cfg.batch_size if drop_last else len(train))
            for x, y in train.batches(
                batch_size,
                shuffle=True,
                generator=gen,
                drop_last=drop_last,
                augment=plan.augment,
                shard=(r.rank, r.world),
                weights=draw_weights,
            ):
                with autocast(device, cfg.amp):
                    loss = step_loss(forward(x), y, x)
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
                line = pulse.line(epoch, cfg.epochs, n_seen * r.world)
                if line is not None:  # a long epoch shows life in log.txt and in a pipe
                    log.info(line)
                    reporter.heartbeat(line)
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
