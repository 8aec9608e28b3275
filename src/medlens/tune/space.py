"""What ``medlens tune`` searches, and how a trial's parameters become plan fields.

==================  ===========================================  ==================================
parameter           plan field(s)                                values
==================  ===========================================  ==================================
lr                  optim.lr                                     1e-4 to 1e-2, log-uniform
weight_decay        optim.weight_decay                           1e-5 to 0.3, log-uniform
batch_size          train.batch_size                             32, 64 or 128
drop_rate           model.drop_rate                              0 to 0.5 (dropout before the head)
loss                loss.name                                    cross_entropy or focal
                                                                 (multi-label: bce or focal)
label_smoothing     loss.label_smoothing                         0 to 0.2 (not with focal loss)
focal_gamma         loss.focal_gamma                             0.5 to 4 (focal loss only)
augment_strength    augment.rotate_deg, scale, translate,        0 to 2 times the planner's
                    brightness, contrast                         magnitudes (0: none; flips kept)
==================  ===========================================  ==================================

Everything else is the planner's plan. A field fixed with ``--set`` is left out of the search
(with ``--set augment.<any magnitude>``, augment_strength is). The first trial of a new study is
the planner's own plan where it lies inside these ranges, so the search starts from the
baseline it has to beat.
"""

from __future__ import annotations

from typing import Any

from medlens.config import Plan

LR = (1e-4, 1e-2)
WEIGHT_DECAY = (1e-5, 0.3)
BATCH_SIZES = (32, 64, 128)
DROP_RATE = (0.0, 0.5)
LABEL_SMOOTHING = (0.0, 0.2)
FOCAL_GAMMA = (0.5, 4.0)
AUGMENT_STRENGTH = (0.0, 2.0)
AUGMENT_FIELDS = tuple(
    f"augment.{k}" for k in ("rotate_deg", "scale", "translate", "brightness", "contrast")
)
FIELDS = {
    "lr": ("optim.lr",),
    "weight_decay": ("optim.weight_decay",),
    "batch_size": ("train.batch_size",),
    "drop_rate": ("model.drop_rate",),
    "loss": ("loss.name",),
    "label_smoothing": ("loss.label_smoothing",),
    "focal_gamma": ("loss.focal_gamma",),
    "augment_strength": AUGMENT_FIELDS,
}


def loss_choices(base: Plan) -> list[str]:
    return ["bce", "focal"] if base.data.task == "multi-label" else ["cross_entropy", "focal"]


def _has_augment(base: Plan) -> bool:
    a = base.augment
    return any((a.rotate_deg, a.translate, a.brightness, a.contrast, a.scale != (1.0, 1.0)))


def searched(base: Plan, fixed: set[str]) -> list[str]:
    """The parameters searched: all of them but those whose fields are fixed."""
    names = [n for n, fields in FIELDS.items() if not set(fields) & fixed]
    return [n for n in names if n != "augment_strength" or _has_augment(base)]


def suggest_params(trial: Any, base: Plan, fixed: set[str]) -> dict[str, Any]:
    """Draw one trial's parameters (an Optuna trial's suggest_* calls)."""
    free = searched(base, fixed)
    params: dict[str, Any] = {}
    if "lr" in free:
        params["lr"] = trial.suggest_float("lr", *LR, log=True)
    if "weight_decay" in free:
        params["weight_decay"] = trial.suggest_float("weight_decay", *WEIGHT_DECAY, log=True)
    if "batch_size" in free:
        params["batch_size"] = trial.suggest_categorical("batch_size", list(BATCH_SIZES))
    if "drop_rate" in free:
        params["drop_rate"] = trial.suggest_float("drop_rate", *DROP_RATE)
    loss = base.loss.name
    if "loss" in free:
        loss = params["loss"] = trial.suggest_categorical("loss", loss_choices(base))
    if loss == "focal" and "focal_gamma" in free:
        params["focal_gamma"] = trial.suggest_float("focal_gamma", *FOCAL_GAMMA)
    if loss != "focal" and "label_smoothing" in free:
        params["label_smoothing"] = trial.suggest_float("label_smoothing", *LABEL_SMOOTHING)
    if "augment_strength" in free:
        params["augment_strength"] = trial.suggest_float("augment_strength", *AUGMENT_STRENGTH)
    return params


def augment_overrides(base: Plan, strength: float) -> dict[str, Any]:
    """The planner's augmentation magnitudes times ``strength``, within the plan's limits."""
    a = base.augment
    lo, hi = a.scale
    return {
        "augment.rotate_deg": min(180.0, a.rotate_deg * strength),
        "augment.scale": [max(0.05, 1 - (1 - lo) * strength), 1 + (hi - 1) * strength],
        "augment.translate": min(0.5, a.translate * strength),
        "augment.brightness": min(1.0, a.brightness * strength),
        "augment.contrast": min(1.0, a.contrast * strength),
    }


def plan_overrides(params: dict[str, Any], base: Plan) -> dict[str, Any]:
    """Dotted plan overrides for a trial's parameters (see the table above)."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name == "augment_strength":
            out.update(augment_overrides(base, float(value)))
        else:
            out[FIELDS[name][0]] = value
    return out


def baseline_params(base: Plan, fixed: set[str]) -> dict[str, Any]:
    """The planner's own values of the searched parameters, where they lie in the ranges."""
    free = searched(base, fixed)
    value = {
        "lr": base.optim.lr,
        "weight_decay": base.optim.weight_decay,
        "batch_size": base.train.batch_size,
        "drop_rate": base.model.drop_rate,
        "loss": base.loss.name,
        "label_smoothing": base.loss.label_smoothing,
        "focal_gamma": base.loss.focal_gamma,
        "augment_strength": 1.0,
    }
    inside = {
        "lr": LR[0] <= value["lr"] <= LR[1],
        "weight_decay": WEIGHT_DECAY[0] <= value["weight_decay"] <= WEIGHT_DECAY[1],
        "batch_size": value["batch_size"] in BATCH_SIZES,
        "drop_rate": DROP_RATE[0] <= value["drop_rate"] <= DROP_RATE[1],
        "loss": value["loss"] in loss_choices(base),
        "label_smoothing": base.loss.name != "focal"
        and LABEL_SMOOTHING[0] <= value["label_smoothing"] <= LABEL_SMOOTHING[1],
        "focal_gamma": base.loss.name == "focal"
        and FOCAL_GAMMA[0] <= value["focal_gamma"] <= FOCAL_GAMMA[1],
        "augment_strength": True,
    }
    return {name: value[name] for name in free if inside[name]}
