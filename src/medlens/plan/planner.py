"""Choose a training recipe from a dataset fingerprint (nnU-Net's planning step, for classifiers).

The rules are simple and written down in ``plan.notes`` so that a user can see why each choice
was made and override any of it (``--set section.field=value`` or by editing plan.yaml).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import yaml

from medlens.config import (
    AugmentConfig,
    DataConfig,
    EvaluateConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    Plan,
    ScheduleConfig,
    TrainConfig,
    modality_name,
    validate_plan,
)
from medlens.data.fingerprint import Fingerprint
from medlens.plan.budget import SIDES
from medlens.plan.scaling import DeviceFacts, choose_compile, choose_gpu_batch, scale_lr

# Modalities (config.MODALITIES) whose images have no canonical orientation: flips and
# 90-degree turns are safe. Fundus photographs get horizontal flips (a left eye mirrored is a
# right one); every other modality has a left and a right.
ORIENTATION_FREE = ("dermoscopy", "pathology", "microscopy")
MIRROR_FREE = ("fundus",)
# Optimizer steps the planner aims for (clipped to an epoch range), per device kind.
_TARGET_STEPS = {"cuda": 8000, "cpu": 1500}
_EPOCH_RANGE = {"cuda": (15, 100), "cpu": (10, 40)}
IMBALANCE_THRESHOLD = 0.10
# below this share of train for the smallest class (and above IMBALANCE_THRESHOLD), batches
# are drawn by the square root of the class counts: the evidence is in choose_sampler
SQRT_SAMPLER_BELOW = 0.35
SQRT_SAMPLER_MAX_TRAIN = 2000  # measured on a small set only: larger ones keep plain shuffling
# Fine-tuning ImageNet weights: a quarter of the from-scratch learning rate and half its epochs
# (within _FINETUNE_EPOCH_RANGE). Pretrained features need small steps to be kept, not learned
# again, and converge in fewer epochs: the usual transfer-learning practice (e.g. timm's and
# torchvision's fine-tuning recipes use 5-10x lower rates than their from-scratch ones).
FINETUNE_LR_FACTOR = 0.25
FINETUNE_EPOCH_FACTOR = 0.5
_FINETUNE_EPOCH_RANGE = {"cuda": (8, 50), "cpu": (5, 20)}

WeightsSource = Callable[[str], tuple[str | None, str]]
"""``source(model name) -> (where, why)``: where ImageNet weights come from, "cache" or "hub";
None when they cannot be had here, "none" for a model that has none."""


def choose_model(fp: Fingerprint, device: str) -> tuple[str, str]:
    """(model name, reason) for the data's dimensionality, size and the device."""
    size = min(fp.image_shape)
    if fp.spatial_dims == 3:
        if device == "cpu":
            return "small_cnn_3d", "3D data on a CPU: a small 3D CNN keeps an epoch in seconds"
        return "resnet18_3d", "3D data: MONAI's 3D ResNet-18 with a stride-1 stem for small volumes"
    return model_for_side(size, device)


def model_for_side(side: int, device: str) -> tuple[str, str]:
    """(model name, reason) for 2D images of ``side`` pixels on ``device``."""
    if side <= 32:
        if device == "cpu":
            return "small_cnn", "28 px on a CPU: a small CNN (ResNet-18 runs ~50 images/s here)"
        return "resnet18_medmnist", "28 px: ResNet-18 with the MedMNIST stride-1 stem"
    return "resnet18", f"{side} px: timm's ResNet-18"


def _override(overrides: dict[str, Any] | None, key: str, default: Any) -> Any:
    """The value ``--set key=...`` gives (parsed as YAML, as apply_overrides does), or default."""
    if not overrides or overrides.get(key) is None:
        return default
    value = overrides[key]
    return yaml.safe_load(value) if isinstance(value, str) and value else value


def choose_pretrained(
    fp: Fingerprint,
    model: str,
    wanted: bool | str,
    weights_file: str | None,
    source: WeightsSource | None,
) -> tuple[bool, str]:
    """(start from ImageNet weights?, reason): ``model.pretrained: auto`` uses them for 2D
    images whenever they are obtainable (in the local cache or downloadable)."""
    if weights_file:
        return True, f"weights from {weights_file} (model.weights): fine-tuned"
    if fp.spatial_dims != 2 or wanted is False:
        why = "3D data" if fp.spatial_dims != 2 else "model.pretrained is false"
        return False, f"{why}: trained from scratch"
    where, why = source(model) if source is not None else (None, "no weights were looked up")
    grey = "; grey images: timm sums the RGB stem to one channel" if fp.in_chans == 1 else ""
    if wanted is True:
        return True, f"ImageNet weights, as asked ({why}){grey}"
    if where == "none":
        return False, f"trained from scratch ({why})"
    if where is None:
        return False, (
            f"trained from scratch: {why}; give ImageNet weights with "
            "--set model.weights=FILE (.safetensors or .pth)"
        )
    return True, f"ImageNet weights ({why}), fine-tuned{grey}"


def choose_resolution(fp: Fingerprint, device: str) -> tuple[dict[str, Any] | None, str | None]:
    """The preprocessing of a folder or manifest, its size capped on a CPU at the largest
    standard side not above the images' own (median) size: upsampling 150 px images to 224 costs
    a CPU twice the time and adds no detail. None for arrays that come sized (MedMNIST)."""
    pre = fp.metadata.get("preprocess") if fp.metadata else None
    size = (fp.metadata or {}).get("original_size", {}).get("median")
    if pre is None or fp.spatial_dims != 2 or not size or device != "cpu":
        return pre, None
    real, side = int(min(size[:2])), int(pre["size"][-1])
    fits = [s for s in SIDES if s <= real]
    if side <= real or not fits:
        return pre, None
    return {**pre, "size": [fits[0], fits[0]]}, (
        f"resolution {fits[0]} px: the images are {real} px (median shorter side), and a CPU "
        f"recipe does not upsample them to {side}"
    )


def choose_batch_size(fp: Fingerprint) -> int:
    size = max(fp.image_shape)
    if fp.spatial_dims == 3:
        return 32 if size <= 32 else 8
    return 128 if size <= 128 else 64


def choose_epochs(n_train: int, batch_size: int, device: str, pretrained: bool = False) -> int:
    """About the target number of optimizer steps, clipped to the device's epoch range; half
    that (in a lower range) when fine-tuning pretrained weights."""
    steps_per_epoch = max(1, n_train // batch_size)
    lo, hi = _EPOCH_RANGE[device]
    epochs = min(hi, max(lo, round(_TARGET_STEPS[device] / steps_per_epoch)))
    if pretrained:
        lo, hi = _FINETUNE_EPOCH_RANGE[device]
        epochs = min(hi, max(lo, round(epochs * FINETUNE_EPOCH_FACTOR)))
    return int(epochs)


def choose_augment(fp: Fingerprint) -> tuple[AugmentConfig, str]:
    """Geometry by modality and dimensionality, plus a random resized crop (75-100% of the
    area) for 2D images of 64 px and more.

    Gamma and elastic deformation stay opt-in (``--set augment.gamma=0.2``,
    ``augment.elastic=0.05``): elastic fields can distort the very shapes that carry the label,
    and gamma 0.2 on PneumoniaMNIST's chest X-rays cost 0.12 test ACC (0.949 -> 0.827, same
    seed, test AUC 0.986 -> 0.979) in the run that tried it as a default.
    """
    augment, why = _geometric_augment(fp)
    extra: dict[str, Any] = {}
    if fp.spatial_dims == 2 and min(fp.image_shape) >= 64:
        extra["crop_scale"] = (0.75, 1.0)
        why += f"; random resized crops of 75-100% of the area at {min(fp.image_shape)} px"
    return AugmentConfig.model_validate({**augment.model_dump(), **extra}), why


def _geometric_augment(fp: Fingerprint) -> tuple[AugmentConfig, str]:
    modality = modality_name(fp.modality)  # fingerprints of older versions hold free text
    if modality in ORIENTATION_FREE:
        return (
            AugmentConfig(
                hflip=True,
                vflip=True,
                rot90=True,
                rotate_deg=15,
                scale=(0.9, 1.1),
                translate=0.05,
                brightness=0.1,
                contrast=0.1,
            ),
            f"{fp.modality}: no canonical orientation, so flips and 90-degree turns",
        )
    if fp.spatial_dims == 3:
        return (
            AugmentConfig(
                rotate_deg=10, scale=(0.9, 1.1), translate=0.05, brightness=0.05, contrast=0.1
            ),
            "3D: small rotations, zoom and shifts; no flips, anatomy has a left and a right",
        )
    hflip = modality in MIRROR_FREE
    return (
        AugmentConfig(
            hflip=hflip,
            rotate_deg=10,
            scale=(0.9, 1.1),
            translate=0.05,
            brightness=0.1,
            contrast=0.1,
        ),
        f"{fp.modality}: small rotations, zoom and shifts; "
        + (
            "horizontal flips (left/right eyes)"
            if hflip
            else "no flips, anatomy has a left and a right"
        ),
    )


def choose_loss(fp: Fingerprint) -> tuple[LossConfig, str]:
    if fp.task == "multi-label":
        return LossConfig(name="bce"), "multi-label: one sigmoid per label, BCE-with-logits"
    if fp.minority_fraction < IMBALANCE_THRESHOLD:
        return (
            LossConfig(name="focal", focal_gamma=2.0),
            f"smallest class is {fp.minority_fraction:.1%} of train: focal loss (gamma 2)",
        )
    return LossConfig(name="cross_entropy"), "classes reasonably balanced: cross-entropy"


def choose_sampler(fp: Fingerprint) -> tuple[str, str]:
    """``train.sampler`` for the class balance, and why.

    Measured (``benchmarks/sampler.py``, default CPU plan, seeds 0-2, docs/results.md): on
    BreastMNIST (27% malignant) sqrt sampling raised test balanced accuracy from 0.681 to 0.786
    and ACC from 0.812 to 0.844, higher on every seed, with AUC unchanged (0.905 -> 0.906);
    fully balanced sampling raised balanced accuracy to 0.809 but made ACC erratic (0.791 ±
    0.095). Below 10% the focal loss takes the imbalance (no measurement of both together).
    Above 2,000 training images plain shuffling stays: on PneumoniaMNIST (4,708, 26% normal)
    the one seed measured went the other way (ACC 0.947 -> 0.891, AUC 0.984 -> 0.980).
    """
    share = fp.minority_fraction
    if fp.task == "multi-label":
        return "none", "multi-label: plain shuffling (sampling balances single-label classes)"
    if share < IMBALANCE_THRESHOLD:
        return "none", "plain shuffling: the focal loss takes the imbalance"
    if share < SQRT_SAMPLER_BELOW and fp.n_images["train"] > SQRT_SAMPLER_MAX_TRAIN:
        return "none", (
            f"plain shuffling: sqrt sampling helped a small set with {share:.0%} in its "
            "smallest class (BreastMNIST) and is not measured on one this large "
            "(--set train.sampler=sqrt to try it)"
        )
    if share < SQRT_SAMPLER_BELOW:
        return "sqrt", (
            f"smallest class {share:.0%} of train: batches drawn by the square root of the "
            "class counts (on BreastMNIST, 27%: balanced accuracy 0.68 -> 0.79, ACC 0.81 -> "
            "0.84 over 3 seeds, AUC unchanged; --set train.sampler=none to turn it off)"
        )
    return "none", "classes balanced enough: plain shuffling"


_NORMAL = re.compile(r"\b(normal|benign|negative|healthy|no finding|absent|control)\b", re.I)


def _finding_class(names: list[str]) -> str | None:
    """The class a clinician calls positive: the one of two whose name does not read as normal
    ("malignant" against "normal, benign"); None when that is not clear."""
    normal = [bool(_NORMAL.search(n)) for n in names]
    if sum(normal) != 1:
        return None
    return names[normal.index(False)]


def choose_evaluate(fp: Fingerprint) -> tuple[EvaluateConfig, str]:
    """Conformal score by task: with two classes, randomised APS often gives an empty set
    (then the top class is kept, which over-covers); LAC's sets are exact and never empty there.
    """
    if fp.task == "binary":
        positive = _finding_class(fp.label_names)
        why = "conformal sets by LAC (two classes)"
        if positive is not None:
            why += f"; '{positive}' is the positive class (the other reads as normal)"
        return EvaluateConfig(conformal_method="lac", positive_class=positive), why
    return EvaluateConfig(conformal_method="aps"), "conformal sets by APS (adaptive to hardness)"


def choose_scaling(
    fp: Fingerprint, model: str, ref_batch: int, epochs: int, facts: DeviceFacts
) -> tuple[int, float, bool, list[str]]:
    """(batch, lr, compile, notes): the reference recipe (lr 1e-3 at batch 128, scaled
    linearly to ``ref_batch``) as it is on the CPU, moved to the GPU at hand on CUDA."""
    ref_lr = 1e-3 * ref_batch / 128
    if facts.kind != "cuda":
        return (
            ref_batch,
            ref_lr,
            False,
            [f"batch {ref_batch}, lr scaled linearly from 1e-3 at batch 128"],
        )
    n_train = fp.n_images["train"]
    pixels = math.prod(fp.image_shape)
    batch, batch_why = choose_gpu_batch(ref_batch, n_train, model, pixels, facts)
    lr = scale_lr(ref_lr, batch, ref_batch, "adamw")
    compile_on, compile_why = choose_compile(epochs, n_train, pixels, facts)
    notes = [
        f"batch {batch}: {batch_why}",
        f"lr {lr:.2g}: {ref_lr:.2g} at the reference batch {ref_batch}, times "
        f"sqrt({batch}/{ref_batch}) for AdamW (linear for SGD); warmup kept",
        f"epochs chosen for batch {ref_batch}, so batch {batch} sees the same images in "
        f"{ref_batch / batch:.2g}x the steps",
        compile_why,
    ]
    return batch, lr, compile_on, notes


def make_plan(
    fp: Fingerprint,
    *,
    device: str | DeviceFacts = "cpu",
    data_dir: str | None = None,
    size: int | None = None,
    overrides: dict[str, Any] | None = None,
    source_fields: dict[str, Any] | None = None,
    weights_source: WeightsSource | None = None,
) -> Plan:
    """The default recipe for ``fp`` on ``device``, with overrides applied.

    ``device`` is "cpu", "cuda" (a GPU of unknown size: the reference batch) or the
    :class:`DeviceFacts` of the GPU at hand, from which batch size, lr and compile follow.

    ``source_fields`` are how a folder or manifest was read (label_columns, patient_column,
    ...), kept in ``plan.data`` so that the plan alone reloads the same data.

    >>> plan = make_plan(fingerprint(load_dataset("breastmnist")), device="cuda")  # doctest: +SKIP
    >>> plan.model.name, plan.train.epochs  # doctest: +SKIP
    ('resnet18_medmnist', 100)
    """
    facts = device if isinstance(device, DeviceFacts) else DeviceFacts(kind=device, name=device)
    device = facts.kind
    model, model_why = choose_model(fp, device)
    if _override(overrides, "model.name", model) != model:
        model = _override(overrides, "model.name", model)
        model_why = f"{model}, set with --set model.name"
    pretrained, pretrained_why = choose_pretrained(
        fp,
        model,
        _override(overrides, "model.pretrained", "auto"),
        _override(overrides, "model.weights", None),
        weights_source,
    )
    ref_batch = choose_batch_size(fp)
    epochs = choose_epochs(fp.n_images["train"], ref_batch, device, pretrained)
    batch, lr, compile_on, scaling_notes = choose_scaling(fp, model, ref_batch, epochs, facts)
    if pretrained:
        lr *= FINETUNE_LR_FACTOR
        scaling_notes.append(
            f"fine-tuning: lr x{FINETUNE_LR_FACTOR:g} ({lr:.2g}) and x{FINETUNE_EPOCH_FACTOR:g} "
            "the epochs of training from scratch"
        )
    augment, augment_why = choose_augment(fp)
    loss, loss_why = choose_loss(fp)
    sampler, sampler_why = choose_sampler(fp)
    evaluate, evaluate_why = choose_evaluate(fp)
    preprocess, resolution_why = choose_resolution(fp, device)
    given = {k: v for k, v in (source_fields or {}).items() if v is not None}
    modality = modality_name(fp.modality)
    given["modality"] = None if modality == "unknown" else modality
    plan = Plan(
        data=DataConfig(
            source=fp.metadata.get("medmnist_flag", fp.source) if fp.metadata else fp.source,
            data_dir=data_dir,
            size=size if size is not None else fp.metadata.get("size"),
            task=fp.task,
            spatial_dims=fp.spatial_dims,
            in_chans=fp.in_chans,
            n_classes=fp.n_classes,
            label_names=fp.label_names,
            mean=fp.intensity.mean,
            std=fp.intensity.std,
            preprocess=preprocess,
            **given,
        ),
        model=ModelConfig(
            name=model, pretrained=pretrained and not _override(overrides, "model.weights", None)
        ),
        augment=augment,
        loss=loss,
        optim=OptimConfig(name="adamw", lr=lr, weight_decay=0.05),
        schedule=ScheduleConfig(name="cosine", warmup_epochs=1.0 if epochs < 50 else 2.0),
        train=TrainConfig(
            epochs=epochs,
            batch_size=batch,
            early_stopping_patience=max(10, epochs // 3),
            device="auto",
            compile=compile_on,
            sampler=sampler,
        ),
        evaluate=evaluate,
        notes=[
            *(f"data: {note}" for note in fp.metadata.get("notes", [])),
            *([f"data: {dup}"] if (dup := fp.duplicates.across_note()) else []),
            f"model: {model_why}",
            f"weights: {pretrained_why}",
            *scaling_notes,
            f"{epochs} epochs: about {_TARGET_STEPS[device]} optimizer steps on {device}, "
            f"clipped to {_EPOCH_RANGE[device]}"
            + (", halved for fine-tuning" if pretrained else ""),
            *([f"data: {resolution_why}"] if resolution_why else []),
            f"augment: {augment_why}",
            f"loss: {loss_why}",
            f"sampler: {sampler_why}",
            "normalisation: per-channel mean/std of the training images",
            f"evaluate: {evaluate_why}",
        ],
    )
    if overrides:
        from medlens.config import apply_overrides

        plan = apply_overrides(plan, overrides)
    return validate_plan(plan.model_dump(mode="json"))
