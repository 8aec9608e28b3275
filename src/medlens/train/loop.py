"""The training loop: epochs over device-resident batches, validation, checkpoints, resume.

Reproducibility: every epoch re-seeds torch from (seed, epoch) and draws its batch order and
augmentation from a generator seeded the same way, so an epoch depends only on the weights and
optimizer state it starts from. That is what makes ``--resume`` land on the same final weights
as an uninterrupted run.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medlens.config import Plan
from medlens.data.dataset import ArrayDataset
from medlens.data.loader import DeviceArrays
from medlens.errors import ConfigError, TrainingError
from medlens.evaluate.metrics import medmnist_acc, medmnist_auc
from medlens.inference import predict_arrays
from medlens.models.registry import create_model
from medlens.progress import Reporter, SilentReporter
from medlens.rundir import RunDir, file_logger
from medlens.train.checkpoint import load_training_state, save_training_state, save_weights
from medlens.train.device import autocast, resolve_device
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


def build_model_for(plan: Plan, device: torch.device) -> torch.nn.Module:
    model = create_model(
        plan.model.name,
        in_chans=plan.data.in_chans,
        num_classes=plan.data.n_classes,
        spatial_dims=plan.data.spatial_dims,
        pretrained=plan.model.pretrained,
        drop_rate=plan.model.drop_rate,
    ).to(device)
    if plan.train.channels_last and plan.data.spatial_dims == 2:
        model = model.to(memory_format=torch.channels_last)
    return model


def device_arrays(
    plan: Plan, images: np.ndarray, labels: np.ndarray, device: torch.device
) -> DeviceArrays:
    """Images and labels on ``device``, normalised and laid out as the plan says."""
    return DeviceArrays(
        images, labels, device, plan.data.mean, plan.data.std, plan.train.channels_last
    )


def _nll(probs: np.ndarray, labels: np.ndarray, task: str) -> float:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    if task == "multi-label":
        return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())
    return float(-np.log(p[np.arange(len(labels)), labels]).mean())


def validation_scores(probs: np.ndarray, labels: np.ndarray, task: str) -> tuple[float, float]:
    """(AUC, ACC) by MedMNIST's definitions; AUC is NaN when val lacks a class."""
    try:
        auc = medmnist_auc(labels, probs, task)
    except ConfigError:
        auc = float("nan")
    return auc, medmnist_acc(labels, probs, task)


def _write_curves(run: RunDir, history: list[dict[str, Any]]) -> None:
    with run.curves.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


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
) -> FitResult:
    """Train ``plan`` on ``ds``, writing checkpoints and curves into ``run``."""
    reporter = reporter or SilentReporter()
    log = file_logger(run)
    cfg = plan.train
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_model_for(plan, device)
    train_split, val_split = ds.splits["train"], ds.splits["val"]
    train = device_arrays(plan, train_split.images, train_split.labels, device)
    val = device_arrays(plan, val_split.images, val_split.labels, device)
    loss_fn = build_loss(plan.loss, plan.data.task, ds.class_counts("train"), len(train)).to(device)
    drop_last = len(train) > cfg.batch_size
    steps_per_epoch = len(train) // cfg.batch_size if drop_last else 1
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
        state = load_training_state(run.last, model, optimizer)
        reporter.message(f"resuming after epoch {state['epoch'] + 1} from {run.last}")
        log.info("resume from %s after epoch %d", run.last, state["epoch"] + 1)
    if scheduler is not None:
        scheduler.step_update(state["step"])
    history: list[dict[str, Any]] = state["history"]
    writer = _tensorboard(run)
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
            model.train()
            reporter.epoch_start(epoch, cfg.epochs, steps_per_epoch)
            loss_sum = torch.zeros((), device=device)
            start = time.perf_counter()
            n_seen = 0
            for x, y in train.batches(
                cfg.batch_size,
                shuffle=True,
                generator=gen,
                drop_last=drop_last,
                augment=plan.augment,
            ):
                with autocast(device, cfg.amp):
                    loss = loss_fn(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                state["step"] += 1
                if scheduler is not None:
                    scheduler.step_update(state["step"])
                loss_sum += loss.detach()
                n_seen += x.shape[0]
                # reading the loss forces a device sync; on a GPU only do it for the bar
                reporter.batch_end(float(loss.detach()) if device.type == "cpu" else None)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            train_loss = float(loss_sum) / steps_per_epoch
            if not math.isfinite(train_loss):
                raise TrainingError(
                    f"the training loss became {train_loss} in epoch {epoch + 1}",
                    hint="lower the learning rate (--lr) or use loss.name=cross_entropy; "
                    "the last good checkpoint is kept",
                )
            probs, labels, _ = predict_arrays(
                model, val, plan.data.task, cfg.eval_batch_size, cfg.amp
            )
            val_auc, val_acc = validation_scores(probs, labels, plan.data.task)
            score = val_auc if math.isfinite(val_auc) else val_acc
            is_best = score > state["best_auc"] + 1e-6
            record = {
                "epoch": epoch + 1,
                "train_loss": round(train_loss, 6),
                "val_nll": round(_nll(probs, labels, plan.data.task), 6),
                "val_auc": round(val_auc, 6),
                "val_acc": round(val_acc, 6),
                "lr": current_lr(optimizer),
                "images_per_s": round(n_seen / seconds, 1),
                "seconds": round(seconds, 3),
                "is_best": is_best,
            }
            if is_best:
                state.update(best_auc=score, best_epoch=epoch, stale=0)
                save_weights(
                    run.best,
                    model,
                    {
                        "epoch": epoch + 1,
                        "val_auc": val_auc,
                        "val_acc": val_acc,
                        "model": plan.model.name,
                    },
                )
            else:
                state["stale"] += 1
            history.append(record)
            state["epoch"] = epoch
            state["history"] = history
            save_training_state(run.last, model, optimizer, state)
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
