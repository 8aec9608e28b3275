"""The plan (recipe) as validated pydantic models, with YAML in and out.

Every field can be overridden from the command line with ``--set section.field=value``:

>>> plan = Plan.model_validate(example_plan_dict())  # doctest: +SKIP
>>> apply_overrides(plan, {"train.epochs": "5"}).train.epochs  # doctest: +SKIP
5
"""

from __future__ import annotations

import difflib
import re
import typing
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from medlens.config.modality import MODALITIES, check_modality
from medlens.config.preprocess import PreprocessConfig
from medlens.errors import ConfigError

PLAN_VERSION = 1

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text: str | float) -> float:
    """``"20m"``, ``"1h30m"``, ``"90s"``, ``"45"`` (seconds) -> seconds.

    >>> parse_duration("20m"), parse_duration("1h30m"), parse_duration("90")
    (1200.0, 5400.0, 90.0)
    """
    if not isinstance(text, str):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|min|m|s)?", text.strip().lower())
    joined = "".join(f"{n}{u}" for n, u in parts)
    if not parts or joined != re.sub(r"\s+", "", text.strip().lower()):
        raise ValueError(f"{text!r} is not a duration: write e.g. 20m, 1h30m, 90s or 45 (seconds)")
    return float(sum(float(n) * _UNITS[u or "s"] for n, u in parts))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FoldConfig(_Section):
    """Which cross-validation fold a run is: train and val pooled, split into ``k`` folds
    (stratified, whole patients, identical images together, seed ``seed``); this run validates
    on fold ``index`` and trains on the others. The test split is untouched."""

    k: int = Field(ge=2, description="number of folds")
    index: int = Field(ge=0, description="the fold this run validates on (0..k-1)")
    seed: int = Field(0, description="seed of the fold assignment")

    @model_validator(mode="after")
    def _index_below_k(self) -> FoldConfig:
        if self.index >= self.k:
            raise ValueError(f"fold index {self.index} is not below k = {self.k}")
        return self


class DataConfig(_Section):
    """Which data, at which size, and how it is normalised."""

    source: str = Field(
        description="MedMNIST name (e.g. pneumoniamnist), a .npz path, an image folder or a "
        "CSV/Parquet manifest"
    )
    data_dir: str | None = Field(None, description="folder holding MedMNIST .npz files")
    size: int | None = Field(None, description="MedMNIST image size: 28, 64, 128 or 224")
    task: Literal["binary", "multi-class", "multi-label", "ordinal"]
    spatial_dims: Literal[2, 3] = 2
    in_chans: int = Field(ge=1)
    n_classes: int = Field(ge=2)
    label_names: list[str]
    mean: list[float] = Field(description="per-channel mean (0-1 scale) subtracted on the fly")
    std: list[float] = Field(description="per-channel std (0-1 scale) divided on the fly")
    label_columns: list[str] | None = Field(None, description="manifest label column(s)")
    path_column: str | None = Field(None, description="manifest column of image paths")
    patient_column: str | None = Field(None, description="manifest column of patient ids")
    split_column: str | None = Field(None, description="manifest column of train/val/test")
    image_root: str | None = Field(
        None, description="manifest: the folder its paths or ids are relative to"
    )
    modality: str | None = Field(
        None, description=f"one of {', '.join(MODALITIES)} (None: guessed from the data)"
    )
    drop_duplicates: bool = Field(
        False, description="drop images identical to one in an earlier split (listed in a CSV)"
    )
    val_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="data with train and test but no val: the fraction of train carved out "
        "as val (stratified, by patient when ids are known)",
    )
    split_seed: int = Field(0, description="seed of the splits medlens draws (not train.seed)")
    skip_bad: bool = Field(False, description="skip unreadable files (listed in skipped.csv)")
    cache_dir: str | None = Field(None, description="where decoded images are cached")
    preprocess: PreprocessConfig | None = Field(
        None, description="folders and manifests: how files become uint8 arrays"
    )
    fold: FoldConfig | None = Field(
        None, description="a cross-validation fold run: which fold of train+val is its val"
    )

    @field_validator("modality")
    @classmethod
    def _known_modality(cls, value: str | None) -> str | None:
        return None if value is None else check_modality(value)


class ModelConfig(_Section):
    """The network: any timm name, or medlens' own (see ``medlens models``)."""

    name: str
    pretrained: bool | Literal["auto"] = Field(
        False,
        description="ImageNet weights of the timm model: true, false, or auto (used when they "
        "are in the local Hugging Face cache or can be downloaded; the planner resolves auto "
        "and says which in plan.notes)",
    )
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    weights: str | None = Field(
        None,
        description="pretrained weights from a local file (safetensors or a timm/PyTorch "
        "checkpoint) for this architecture: the offline stand-in for pretrained",
    )
    init: str | None = Field(
        None,
        description="start from an earlier medlens run (its folder or best.safetensors): "
        "multistage fine-tuning; a classifier for other classes starts afresh",
    )
    img_size: int | None = Field(
        None, ge=8, description="input size for fixed-size models (ViTs); default: the data's"
    )
    slices: int | None = Field(
        None, ge=1, description="2.5D: run this 2D model over stacks of N neighbouring slices"
    )
    freeze: Literal["none", "backbone", "gradual"] = Field(
        "none",
        description="backbone: train the classifier only; gradual: unfreeze one layer group "
        "more, from the top, every unfreeze_every epochs",
    )
    unfreeze_every: int = Field(1, ge=1, description="epochs per unfrozen group (gradual)")

    @model_validator(mode="after")
    def _one_start(self) -> ModelConfig:
        if self.weights and self.pretrained is True:
            raise ValueError(
                "pretrained (from the hub) and weights (a local file) exclude each other: set one"
            )
        return self


class AugmentConfig(_Section):
    """Batched augmentation applied on the training device."""

    hflip: bool = False
    vflip: bool = False
    dflip: bool = Field(False, description="3D: random flips along the depth axis")
    rot90: bool = Field(
        False,
        description="random multiples of 90 degrees in-plane; cubic volumes: any of the 24 "
        "rotations of the cube",
    )
    rotate_deg: float = Field(
        0.0, ge=0.0, le=180.0, description="max rotation (volumes: about each of the three axes)"
    )
    scale: tuple[float, float] = Field((1.0, 1.0), description="random zoom range")
    translate: float = Field(0.0, ge=0.0, le=0.5, description="max shift, fraction of size")
    crop_scale: tuple[float, float] | None = Field(
        None,
        description="random resized crop: range of the cropped area fraction, e.g. [0.75, 1.0]",
    )
    crop_ratio: tuple[float, float] = Field(
        (3 / 4, 4 / 3), description="random resized crop: aspect ratio range (log-uniform)"
    )
    elastic: float = Field(
        0.0, ge=0.0, le=0.25, description="max elastic displacement, fraction of the image side"
    )
    elastic_grid: int = Field(4, ge=2, le=32, description="elastic control points per side")
    brightness: float = Field(0.0, ge=0.0, le=1.0, description="max additive change (0-1 scale)")
    contrast: float = Field(0.0, ge=0.0, le=1.0, description="max relative contrast change")
    gamma: float = Field(
        0.0, ge=0.0, le=2.0, description="x**g with g log-uniform in [exp(-gamma), exp(gamma)]"
    )
    p: float = Field(1.0, ge=0.0, le=1.0, description="probability that an image is augmented")

    @model_validator(mode="after")
    def _scale_order(self) -> AugmentConfig:
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError("scale must be (lo, hi) with 0 < lo <= hi")
        if self.crop_scale is not None and not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError("crop_scale must be (lo, hi) with 0 < lo <= hi <= 1")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError("crop_ratio must be (lo, hi) with 0 < lo <= hi")
        return self


class LossConfig(_Section):
    """Cross-entropy for single-label tasks, BCE-with-logits for multi-label; optional focal."""

    name: Literal["cross_entropy", "bce", "focal"]
    class_weights: Literal["none", "balanced", "sqrt"] = "none"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    focal_gamma: float = Field(2.0, ge=0.0)


class OptimConfig(_Section):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD only")
    layer_decay: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="layer-wise lr decay: each layer group down from the head gets this "
        "factor of the lr above it (e.g. 0.75)",
    )


class ScheduleConfig(_Section):
    name: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0.0)
    min_lr_ratio: float = Field(0.01, ge=0.0, le=1.0, description="final lr / peak lr")


class TrainConfig(_Section):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    eval_batch_size: int = Field(512, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1, description="epochs without gain")
    amp: bool = Field(True, description="bf16 autocast on GPUs that support it")
    channels_last: bool = True
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = Field(False, description="deterministic GPU kernels (slower)")
    data_on_device: Literal["auto", "always", "never"] = Field(
        "auto",
        description="keep the uint8 images on the training device and index batches there "
        "(auto: when they fit); never: stream batches from RAM or the memory-mapped cache "
        "through loader workers",
    )
    workers: int | None = Field(
        None, ge=0, description="loader processes when streaming (None: half the cores, 1 to 8)"
    )
    ema: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="keep an exponential moving average of the weights with this per-step "
        "decay (e.g. 0.999, warmed up over the first steps); validation, checkpoints and the "
        "final model use the average",
    )
    compile: bool = Field(
        False,
        description="torch.compile the training forward (the planner turns it on for long GPU "
        "runs); checkpoints and evaluation use the plain model",
    )
    budget: float | None = Field(
        None,
        gt=0.0,
        description="wall-time budget in seconds for training and evaluation (--budget 20m): "
        "the planner chooses resolution, model and epochs to fit it",
    )
    estimated_seconds: float | None = Field(
        None,
        ge=0.0,
        description="the planner's estimate of training + evaluation time, measured on the "
        "machine that made the plan (the log compares it with the real time)",
    )
    folds: int | None = Field(
        None,
        ge=2,
        description="k-fold cross-validation (--folds 5): train and val pooled into k folds, one "
        "run per fold under folds/fold-<i>/, and this run the ensemble of them",
    )
    seeds: int | None = Field(
        None,
        ge=2,
        description="an ensemble of this many seeds on one split (--seeds 3), one run per seed "
        "under seeds/seed-<s>/",
    )
    sampler: Literal["none", "balanced", "sqrt"] = Field(
        "none",
        description="class-balanced sampling: balanced draws every class equally often, sqrt "
        "in proportion to the square root of its count (single-label tasks)",
    )

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_ensemble(self) -> TrainConfig:
        if self.folds and self.seeds:
            raise ValueError("folds and seeds exclude each other: set one")
        return self


class EvaluateConfig(_Section):
    """How results are qualified: confidence intervals, calibration, conformal sets."""

    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for CIs (0: none)")
    ci: float = Field(0.95, gt=0.0, lt=1.0, description="confidence level of the intervals")
    conformal_alpha: float = Field(
        0.1, gt=0.0, lt=1.0, description="conformal sets miss the true class at most this often"
    )
    conformal_method: Literal["aps", "raps", "lac"] = "aps"
    target_sensitivity: float = Field(
        0.9, gt=0.0, le=1.0, description="operating point: threshold reaching it on val"
    )
    target_specificity: float = Field(0.9, gt=0.0, le=1.0)
    positive_class: str | None = Field(
        None, description="binary tasks: the class that counts as positive (None: the second)"
    )
    subgroups: list[str] | None = Field(
        None, description="metadata columns to compare (None: sex/age/site-like columns)"
    )


class DistillConfig(_Section):
    """Knowledge distillation (``medlens distill``): a trained teacher run's soft targets join
    the loss, ``alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * the plan's loss``."""

    teacher: str = Field(description="run directory of the trained teacher (same data and plan)")
    alpha: float = Field(
        0.5, ge=0.0, le=1.0, description="weight of the distillation term (0: plain training)"
    )
    temperature: float = Field(
        4.0, gt=0.0, le=100.0, description="softens both models' outputs (Hinton et al.)"
    )


class PruneConfig(_Section):
    """A structurally pruned model (``medlens prune``): the plan's model with whole channels
    removed. ``shapes`` rebuilds it: every layer whose channels differ from the unpruned model,
    as ``[out, in]`` (conv, linear) or ``[features]`` (norm layers)."""

    source: str = Field(description="run directory of the model that was pruned")
    amount: float = Field(gt=0.0, lt=1.0, description="fraction of channels removed per layer")
    importance: Literal["l1", "l2"] = Field("l2", description="filter norm ranking the channels")
    shapes: dict[str, list[int]] = Field(description="layer name -> channel counts after pruning")

    @model_validator(mode="after")
    def _shapes(self) -> PruneConfig:
        for name, dims in self.shapes.items():
            if len(dims) not in (1, 2) or min(dims) < 1:
                raise ValueError(f"shapes.{name} must be [out, in] or [features], all >= 1")
        return self


class Plan(_Section):
    """The whole recipe; written as plan.yaml and read back with ``--plan``."""

    version: int = PLAN_VERSION
    data: DataConfig
    model: ModelConfig
    augment: AugmentConfig
    loss: LossConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    train: TrainConfig
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    distill: DistillConfig | None = Field(None, description="train as a distilled student")
    prune: PruneConfig | None = Field(None, description="the model's pruned channel structure")
    notes: list[str] = Field(default_factory=list, description="why the planner chose this")

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        if self.data.task == "multi-label" and self.loss.name == "cross_entropy":
            raise ValueError("multi-label tasks need loss.name bce or focal, not cross_entropy")
        if self.data.task != "multi-label" and self.loss.name == "bce":
            raise ValueError(f"a {self.data.task} task needs cross_entropy or focal, not bce")
        if len(self.data.mean) != self.data.in_chans or len(self.data.std) != self.data.in_chans:
            raise ValueError("data.mean and data.std need one value per input channel")
        if len(self.data.label_names) != self.data.n_classes:
            raise ValueError("data.label_names needs one name per class")
        if self.data.task == "multi-label" and self.train.sampler != "none":
            raise ValueError("train.sampler balances classes of single-label tasks only")
        return self


def positive_index(plan: Plan) -> int:
    """Index of the class that binary metrics call positive: ``evaluate.positive_class``, or 1."""
    name = plan.evaluate.positive_class
    if name is None:
        return 1
    if plan.data.task != "binary" or name not in plan.data.label_names:
        raise ConfigError(
            f"evaluate.positive_class {name!r} is not a class of this binary task",
            hint=f"use one of {plan.data.label_names}"
            if plan.data.task == "binary"
            else "leave it unset",
        )
    return plan.data.label_names.index(name)


def _format_validation_error(exc: ValidationError, where: str, field: str = "") -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join([field, *map(str, err["loc"])] if field else map(str, err["loc"]))
        parts.append(f"{loc or 'plan'}: {err['msg']}")
    return f"{where}: " + "; ".join(parts)


def validate_plan(data: dict[str, Any], where: str = "plan") -> Plan:
    """Build a :class:`Plan` from a dict, or raise :class:`ConfigError` naming each bad field."""
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            _format_validation_error(exc, where), hint="correct those fields"
        ) from exc


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan.yaml."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"plan file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a plan (a YAML mapping)")
    return validate_plan(data, where=str(path))


class _FlowList(list):
    """A list written on one line (pruned channel counts)."""


class _PlanDumper(yaml.SafeDumper):
    pass


_PlanDumper.add_representer(
    _FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def dump_plan(plan: Plan) -> str:
    """The plan as YAML, in the order of its sections; unset optional sections are left out."""
    data = plan.model_dump(mode="json")
    for key in ("distill", "prune"):
        if data.get(key) is None:
            data.pop(key, None)
    if "prune" in data:
        shapes = data["prune"]["shapes"]
        data["prune"]["shapes"] = {k: _FlowList(v) for k, v in shapes.items()}
    return yaml.dump(data, Dumper=_PlanDumper, sort_keys=False, width=100)


def save_plan(plan: Plan, path: str | Path) -> None:
    Path(path).write_text(dump_plan(plan))


def parse_set_options(items: list[str]) -> dict[str, str]:
    """``["train.epochs=5"]`` -> ``{"train.epochs": "5"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not KEY=VALUE", hint="e.g. --set loss.name=focal")
        out[key.strip()] = value.strip()
    return out


def _fields(data: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in data.items():
        out += _fields(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def _set_dotted(data: dict, key: str, value: Any, created: list | None = None) -> None:
    """Set ``data["a"]["b"]["c"]`` for ``key="a.b.c"``; the field must exist in the plan.

    An optional section that is unset (``data.preprocess: null``) is created on first use and
    takes any of its fields (``created`` remembers it across several keys); validation then
    says which of its fields are unknown or still required.
    """
    created = [] if created is None else created
    *parents, last = key.split(".")
    node: Any = data
    for part in parents:
        child = node.get(part) if isinstance(node, dict) else None
        if child is None and isinstance(node, dict) and part in node:
            child = node[part] = {}
            created.append(child)
        node = child
    fresh = any(node is c for c in created)
    if not isinstance(node, dict) or (last not in node and not fresh):
        close = difflib.get_close_matches(key, _fields(data), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see plan.yaml for the fields"
        raise ConfigError(f"unknown plan field {key!r}", hint=hint)
    node[last] = value


def _parse_value(key: str, value: Any) -> Any:
    """A ``--set`` value as YAML scalar (``"5"`` -> 5, ``"[0.9, 1.1]"`` -> a list)."""
    if not isinstance(value, str) or value == "":
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}={value!r}: cannot parse the value") from exc


def _section(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field (``DataConfig``, ``PreprocessConfig | None``...), or None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


@cache
def _plan_fields(model: type[BaseModel] | None = None, prefix: str = "") -> dict[str, FieldInfo]:
    """Every dotted field of the plan, sections (optional ones too) and their fields."""
    out: dict[str, FieldInfo] = {}
    for name, info in (model or Plan).model_fields.items():
        out[prefix + name] = info
        section = _section(info.annotation)
        if section is not None:
            out.update(_plan_fields(section, f"{prefix}{name}."))
    return out


def check_override(key: str, value: Any) -> None:
    """Refuse an override whose key is no plan field or whose value does not fit the field.

    Needs no plan (nor data), so the CLI checks ``--set`` before it loads anything; the same
    messages as :func:`apply_overrides`. Checks between fields (``Plan._consistent``...) wait
    for the whole plan.

    >>> check_override("train.epochs", "5")
    >>> check_override("loss.nme", "focal")
    Traceback (most recent call last):
    ...
    medlens.errors.ConfigError: unknown plan field 'loss.nme' (fix: did you mean loss.name?)
    """
    fields = _plan_fields()
    parent, _, _ = key.rpartition(".")
    if key not in fields:
        if parent in fields and typing.get_origin(fields[parent].annotation) is dict:
            return  # a key of a mapping field (prune.shapes.<layer>): the plan knows its keys
        leaves = [k for k, info in fields.items() if _section(info.annotation) is None]
        close = difflib.get_close_matches(key, leaves, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see plan.yaml for the fields"
        raise ConfigError(f"unknown plan field {key!r}", hint=hint)
    value = _parse_value(key, value)
    info = fields[key]
    annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    try:
        TypeAdapter(annotation).validate_python(value)
    except ValidationError as exc:
        raise ConfigError(
            _format_validation_error(exc, "plan with overrides", field=key),
            hint="correct those fields",
        ) from exc


def apply_overrides(plan: Plan, overrides: dict[str, Any]) -> Plan:
    """A new plan with dotted-key overrides applied and the whole plan validated again.

    String values are parsed as YAML scalars, so ``"5"`` becomes 5 and ``"[0.9, 1.1]"`` a list.
    """
    data = plan.model_dump(mode="json")
    created: list = []  # optional sections made by these overrides
    for key, value in overrides.items():
        if value is None:
            continue
        _set_dotted(data, key, _parse_value(key, value), created)
    return validate_plan(data, where="plan with overrides")
