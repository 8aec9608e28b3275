"""``medlens prune``: remove whole conv channels by filter norm, then fine-tune.

Pruning is structural: filters (output channels) with the smallest L1 or L2 norm are removed,
with every layer that consumes them (the next conv's input channels, batch norms, residual
branches added to them, the classifier's inputs) cut to match, so the model really has fewer
parameters and MACs. The dependency analysis is torch-pruning's (``pip install
"medlens[compress]"``); it groups channels coupled through residual additions and removes
``amount`` of each group's channels, never the classifier's outputs.

The new run's plan records the pruned channel counts (``plan.prune.shapes``), so every stage
that builds the model from its plan (``train --resume``, ``evaluate``, ``predict``,
``export``, ``explain``, ``report``) rebuilds the slim model and loads its weights; only
pruning itself needs torch-pruning.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from medlens.compress.measure import comparison, normalised, summarise, test_scores
from medlens.compress.runs import (
    CompressionResult,
    compression_file,
    start_compressed_run,
    trained_run,
)
from medlens.config import Plan, PruneConfig, apply_overrides
from medlens.data.loader import device_arrays
from medlens.errors import ConfigError, ModelError
from medlens.evaluate.metrics import validation_scores
from medlens.inference import predict_arrays
from medlens.models.build import build_model
from medlens.models.checkpoint import save_weights
from medlens.models.structure import changed_shapes, tensor_shapes
from medlens.progress import Reporter, SilentReporter
from medlens.run import Run, default_run_name, write_json
from medlens.stages.evaluate import evaluate_run
from medlens.stages.train import train_run

INSTALL_HINT = 'pip install "medlens[compress]" (torch-pruning)'
IMPORTANCE = ("l1", "l2")
_CPU = torch.device("cpu")


def require_torch_pruning() -> ModuleType:
    """The ``torch_pruning`` package, or ModelError saying how to install it."""
    try:
        return importlib.import_module("torch_pruning")
    except ImportError as exc:
        raise ModelError(
            f"structured pruning needs torch-pruning, which is not installed ({exc})",
            hint=INSTALL_HINT,
        ) from exc


def check_options(amount: float, finetune_epochs: int, importance: str) -> None:
    """ConfigError for an amount outside (0, 1), negative epochs or an unknown norm."""
    if not 0.0 < amount < 1.0:
        raise ConfigError(
            f"--amount must lie strictly between 0 and 1 (the fraction of each layer's "
            f"channels to remove), got {amount}",
            hint="e.g. --amount 0.3 removes 30% of the channels",
        )
    if finetune_epochs < 0:
        raise ConfigError(
            f"--finetune-epochs must be 0 or more, got {finetune_epochs}",
            hint="0 keeps the pruned weights as they are; a few epochs recover most accuracy",
        )
    if importance not in IMPORTANCE:
        raise ConfigError(
            f"unknown channel importance {importance!r}", hint=f"use one of {', '.join(IMPORTANCE)}"
        )


def output_layers(model: nn.Module, n_classes: int) -> list[nn.Module]:
    """The classifier, whose outputs (the classes) must never be pruned."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
        return [head]
    outs = [
        m
        for m in model.modules()
        if (isinstance(m, nn.Linear) and m.out_features == n_classes)
        or (isinstance(m, _ConvNd) and m.out_channels == n_classes)
    ]
    return outs[-1:]


def prune_model(
    model: nn.Module,
    example: torch.Tensor,
    amount: float,
    *,
    n_classes: int,
    importance: str = "l2",
    round_to: int | None = None,
) -> nn.Module:
    """A pruned copy of ``model``: ``amount`` of each layer's channels removed by filter norm."""
    tp = require_torch_pruning()
    pruned = copy.deepcopy(model).cpu().eval()
    norm = 1 if importance == "l1" else 2
    imp_cls = getattr(tp.importance, "GroupMagnitudeImportance", None)
    imp = (imp_cls or tp.importance.MagnitudeImportance)(p=norm)
    pruner_cls = getattr(tp.pruner, "BasePruner", None) or tp.pruner.MetaPruner
    try:
        pruner = pruner_cls(
            pruned,
            example,
            importance=imp,
            pruning_ratio=amount,
            ignored_layers=output_layers(pruned, n_classes),
            round_to=round_to,
        )
        pruner.step()
    except (RuntimeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ModelError(
            f"torch-pruning could not prune {type(model).__name__} ({type(exc).__name__}: {exc})",
            hint="try another --amount, or a convolutional model (ResNet, MobileNet, small_cnn)",
        ) from exc
    return pruned


def pruned_plan(
    plan: Plan,
    source: Run,
    shapes: dict[str, list[int]],
    *,
    amount: float,
    importance: str,
    finetune_epochs: int,
    lr: float | None,
    device: str | None,
    overrides: dict[str, Any] | None,
) -> Plan:
    """The source plan with the pruned structure and a short fine-tuning schedule."""
    peak = lr if lr is not None else plan.optim.lr * 0.1
    recipe = plan.model_copy(
        update={
            "prune": PruneConfig(
                source=str(source.root.resolve()),
                amount=amount,
                importance=importance,
                shapes=shapes,
            ),
            "distill": None,
            "notes": [
                *plan.notes,
                f"prune: {amount:.0%} of the channels of {plan.model.name} removed by "
                f"{importance.upper()} filter norm (from {source.root.name}); fine-tuned "
                f"{finetune_epochs} epochs at lr {peak:g}",
            ],
        }
    )
    flags = {
        "train.epochs": max(1, finetune_epochs),
        "train.early_stopping_patience": None,
        "optim.lr": peak,
        "schedule.warmup_epochs": 0,
        "train.device": device,
    }
    return apply_overrides(recipe, {**flags, **(overrides or {})})


def prune_run(
    run_dir: str | Path,
    *,
    amount: float = 0.3,
    finetune_epochs: int = 3,
    importance: str = "l2",
    lr: float | None = None,
    round_to: int | None = None,
    output: str | Path | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    download: bool = True,
    reporter: Reporter | None = None,
    latency_seconds: float = 0.5,
) -> CompressionResult:
    """Prune a trained run's best model, fine-tune it, evaluate it, and compare.

    Writes a new run directory (``output``, default ``runs/<data>-<model>-pruned<pct>-<time>``)
    with ``checkpoints/pruned.safetensors`` (before fine-tuning), the usual checkpoints and
    metrics, and ``compression.json``: original and pruned parameters, MACs, test AUC/ACC
    (also before fine-tuning) and CPU latency. Fine-tuning runs ``finetune_epochs`` at ``lr``
    (default a tenth of the plan's), cosine decay, no warm-up.
    """
    from medlens.export.speed import hardware

    reporter = reporter or SilentReporter()
    check_options(amount, finetune_epochs, importance)
    require_torch_pruning()
    source = trained_run(run_dir, "run")
    plan = source.plan
    ds = source.data(data_dir, download, reporter)

    model, _ = source.load_model(_CPU)
    example = torch.from_numpy(normalised(plan, ds.splits["train"].images[:1]))
    pruned = prune_model(
        model,
        example,
        amount,
        n_classes=plan.data.n_classes,
        importance=importance,
        round_to=round_to,
    )
    bare = plan.model.model_copy(update={"pretrained": False})
    unpruned = plan.model_copy(update={"prune": None, "model": bare})
    shapes = changed_shapes(pruned, build_model(unpruned, _CPU))
    if not shapes:
        raise ModelError(
            f"pruning {amount:.0%} removed no channel of {plan.model.name}",
            hint="raise --amount",
        )
    recipe = pruned_plan(
        plan,
        source,
        shapes,
        amount=amount,
        importance=importance,
        finetune_epochs=finetune_epochs,
        lr=lr,
        device=device,
        overrides=overrides,
    )
    rebuilt = tensor_shapes(build_model(recipe, _CPU))
    if rebuilt != tensor_shapes(pruned):
        odd = [k for k, v in tensor_shapes(pruned).items() if rebuilt.get(k) != v]
        raise ModelError(
            f"the pruned {plan.model.name} changed tensors medlens cannot rebuild from "
            f"layer shapes: {', '.join(odd[:5])}",
            hint="prune a plain convolutional model (ResNet, MobileNet, small_cnn)",
        )

    name = default_run_name(ds.name, f"{plan.model.name}-pruned{round(amount * 100)}")
    path = Path(output) if output else Path("runs") / name
    Run(path).check_new()
    original = summarise(model, plan, ds, run=str(source.root), latency_seconds=latency_seconds)
    before = test_scores(pruned, recipe, ds)
    run = start_compressed_run(path, recipe, source)
    run.use_data(ds)
    start = run.checkpoints / "pruned.safetensors"
    save_weights(start, pruned, {"model": plan.model.name, "pruned_from": str(source.root)})
    reporter.message(
        f"pruned {plan.model.name}: {original['parameters']:,} -> "
        f"{sum(p.numel() for p in pruned.parameters()):,} parameters; test AUC "
        f"{original['test']['auc']:.4f} -> {before['auc']:.4f} before fine-tuning"
    )
    reporter.message(f"run directory: {run.root}")
    if finetune_epochs > 0:
        train_run(run, ds, reporter=reporter, init_weights=start, evaluate=False)
    else:  # the pruned weights are the result: score them on val as fit would
        probs, labels, _ = _val_probs(pruned, recipe, ds.splits["val"])
        val_auc, val_acc = validation_scores(probs, labels, recipe.data.task)
        info = {"epoch": 0, "val_auc": val_auc, "val_acc": val_acc, "model": plan.model.name}
        save_weights(run.best, pruned, info)
    metrics = evaluate_run(run, ds=ds)
    final, _ = run.load_model(_CPU)
    compressed = summarise(final, recipe, ds, run=str(run.root), latency_seconds=latency_seconds)
    compressed["test_before_finetune"] = before
    record = {
        "kind": "pruning",
        "dataset": ds.name,
        "prune": {
            "amount": amount,
            "importance": importance,
            "finetune_epochs": finetune_epochs,
            "lr": recipe.optim.lr,
            "layers_changed": len(shapes),
        },
        "original": original,
        "pruned": compressed,
        "comparison": comparison(original, compressed),
        "hardware": hardware(),
    }
    write_json(compression_file(run), record)
    return CompressionResult(run.root, recipe, metrics, record)


def _val_probs(model: nn.Module, plan: Plan, split) -> tuple:
    data = device_arrays(plan, split.images, split.labels, _CPU)
    return predict_arrays(model, data, plan.data.task, plan.train.eval_batch_size, plan.train.amp)
