"""Fingerprint a dataset and choose its recipe: the first two steps of the flow.

>>> fp = data_info("breastmnist", data_dir="data")  # doctest: +SKIP
>>> recipe, fp, ds = plan_dataset("breastmnist", data_dir="data")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Any

from medlens.config import Plan
from medlens.data.dataset import ArrayDataset
from medlens.data.fingerprint import Fingerprint, fingerprint
from medlens.data.sources import load_dataset
from medlens.errors import ConfigError
from medlens.plan import make_plan
from medlens.plan.budget import (
    LONG_CPU_RUN_S,
    MIN_EPOCHS_FINETUNE,
    MIN_EPOCHS_SCRATCH,
    Estimate,
    StepCosts,
    candidate_sides,
    check_budget,
    epochs_within,
    estimate_run,
    too_small,
)
from medlens.progress import Reporter, format_seconds
from medlens.run import absolute_root, source_options

# a lighter model the budget may fall back on, per planner default (2D, 64 px and up)
LIGHTER_MODEL = {"resnet18": "resnet10t"}

# the CLI's shortcut flags and the plan fields they set
FLAG_FIELDS = {
    "model": "model.name",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "optim.lr",
    "seed": "train.seed",
    "device": "train.device",
    "init": "model.init",
    "budget": "train.budget",
    "folds": "train.folds",
    "seeds": "train.seeds",
}


def flag_overrides(**flags: Any) -> dict[str, Any]:
    """Map CLI-style keyword flags (``epochs=5``) to dotted plan fields."""
    unknown = set(flags) - set(FLAG_FIELDS)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))}")
    return {FLAG_FIELDS[k]: v for k, v in flags.items() if v is not None}


def _progress(reporter: Reporter | None):
    return getattr(reporter, "cache_progress", None)


def data_info(
    source: str,
    *,
    data_dir: str | None = None,
    size: int | None = None,
    download: bool = True,
    source_fields: dict[str, Any] | None = None,
    reporter: Reporter | None = None,
) -> Fingerprint:
    """Fingerprint a dataset: task, shapes, class counts, patients, intensities, duplicates."""
    ds = load_dataset(
        source,
        data_dir=data_dir,
        size=size,
        download=download,
        options=source_options(source_fields or {}),
        on_progress=_progress(reporter),
    )
    return fingerprint(ds)


def plan_dataset(
    source: str,
    *,
    data_dir: str | None = None,
    size: int | None = None,
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    download: bool = True,
    source_fields: dict[str, Any] | None = None,
    reporter: Reporter | None = None,
    estimate: bool = True,
) -> tuple[Plan, Fingerprint, ArrayDataset]:
    """The default recipe for ``source`` on ``device``, with ``overrides`` applied.

    ``train.budget`` (``--budget 20m``) fits resolution, model and epochs to the budget on this
    machine; ``estimate`` measures the plan's wall time here (a few training steps of its
    model) and writes it to ``train.estimated_seconds`` and ``plan.notes``.
    """
    from medlens.device import device_facts, resolve_device
    from medlens.models.weights import pretrained_source
    from medlens.train.distributed import ranks

    fields = absolute_root(source_fields or {})
    overrides = dict(overrides or {})
    overrides.setdefault("train.device", device)
    # the GPU's name and memory set the batch size and lr (the global batch, over all ranks)
    torch_device = resolve_device(str(overrides["train.device"]))
    facts = device_facts(torch_device, ranks().world)
    options = source_options(fields)
    options.upsample = torch_device.type != "cpu"  # a CPU recipe keeps the images' own size
    ds = load_dataset(
        source,
        data_dir=data_dir,
        size=size,
        download=download,
        options=options,
        on_progress=_progress(reporter),
    )
    fp = fingerprint(ds)
    is_medmnist = "medmnist_flag" in fp.metadata

    def recipe_for(fp: Fingerprint, extra: dict[str, Any]) -> Plan:
        return make_plan(
            fp,
            device=facts,
            data_dir=data_dir,
            size=size if is_medmnist else None,
            overrides={**overrides, **extra},
            source_fields=fields,
            weights_source=pretrained_source,
        )

    def planned(extra: dict[str, Any]) -> tuple[Plan, Fingerprint, ArrayDataset]:
        """The recipe with ``extra`` fields, on data cached as that recipe says."""
        nonlocal ds, fp
        recipe = recipe_for(fp, extra)
        chosen = recipe.data.preprocess
        if chosen is not None and chosen.model_dump(mode="json") != fp.metadata.get("preprocess"):
            # the plan changed how files become arrays (--set data.preprocess.*, a budget's
            # resolution): cache them that way, and take the fingerprint (and so the
            # normalisation statistics) from that data
            ds = load_dataset(
                source,
                size=size,
                options=source_options(fields, chosen),
                on_progress=_progress(reporter),
            )
            fp = fingerprint(ds)
            first, recipe = recipe, recipe_for(fp, extra)
            # the planner's own resize is said by the first recipe only (the data now fits)
            kept = [n for n in first.notes if n.startswith("data: resolution")]
            recipe = recipe.model_copy(update={"notes": [*kept, *recipe.notes]})
        return recipe, fp, ds

    recipe, fp, ds = planned({})
    from medlens.models.names import check_model_name

    check_model_name(recipe.model.name)  # an unknown model fails here, with close names
    if recipe.train.folds:  # too many folds for the data: before any probe, in well under 1 s
        from medlens.data.folds import check_fold_count

        check_fold_count(ds, recipe.train.folds)
    budget = recipe.train.budget
    check_budget(budget)
    notes: list[str] = []
    choice: dict[str, Any] = {}
    costs: StepCosts | None = None
    if budget is not None:
        planner = recipe
        choice, notes, costs = budget_choice(
            recipe, fp, ds, torch_device, fixed_model="model.name" in overrides
        )
        if "model.name" in choice and costs is not None:
            # another model than the planner's: as many epochs as fit, up to its own recipe's
            own = planned({k: v for k, v in choice.items() if k != "train.epochs"})[0]
            fit = epochs_within(budget, costs, **_counts(own, ds))
            epochs = min(own.train.epochs, max(fit, choice["train.epochs"]))
            if epochs != choice["train.epochs"]:
                choice = {**choice, "train.epochs": epochs}
                notes = [budget_note(planner, choice, float(budget), target=own.train.epochs)]
        recipe, fp, ds = planned(choice)
    if estimate or budget is not None:
        if costs is None:  # not measured at the chosen recipe yet
            costs = measure_plan(recipe, ds, torch_device)
            fit = epochs_within(budget, costs, **_counts(recipe, ds)) if budget else 0
            if 1 <= fit < recipe.train.epochs:  # measured on the data at the chosen size
                choice = {**choice, "train.epochs": fit}
                recipe, fp, ds = planned(choice)
                notes = [budget_note(planner, choice, float(budget)) + " (measured at this size)"]
        recipe = recipe.model_copy(update={"notes": [*recipe.notes, *notes]})
        runtime = estimate_run(costs, epochs=recipe.train.epochs, **_counts(recipe, ds))
        recipe = with_estimate(recipe, runtime, torch_device.type)
    return recipe, fp, ds


def _counts(recipe: Plan, ds: ArrayDataset) -> dict[str, int]:
    return {
        "n_train": len(ds.splits["train"]),
        "n_val": len(ds.splits["val"]),
        "n_test": len(ds.splits["test"]),
        "batch_size": recipe.train.batch_size,
    }


def measure_plan(recipe: Plan, ds: ArrayDataset, device, side: int | None = None) -> StepCosts:
    """The plan's unit costs here, from a short measured probe of its model; ``side``: with
    its images at that many pixels (resized for the probe only)."""
    from medlens.train.probe import measure_costs
    from medlens.train.teacher import batch_loss_for

    loss = batch_loss_for(recipe, ds)
    return measure_costs(recipe, ds, device, shape=_shape(side), batch_loss=loss)


def estimate_plan(recipe: Plan, ds: ArrayDataset, device) -> Estimate:
    """The plan's training and evaluation wall time here, from a short measured probe."""
    costs = measure_plan(recipe, ds, device)
    return estimate_run(costs, epochs=recipe.train.epochs, **_counts(recipe, ds))


def with_estimate(recipe: Plan, estimate: Estimate, device_kind: str) -> Plan:
    """The plan with its estimate in ``train.estimated_seconds`` and ``plan.notes``."""
    notes = [f"estimate on this machine ({device_kind}): {estimate.text()}"]
    members = recipe.train.folds or recipe.train.seeds or 1
    if members > 1:  # an ensemble trains each member on about the same number of images
        estimate = dataclasses.replace(estimate, seconds=estimate.seconds * members)
        notes.append(f"{members} ensemble members: {format_seconds(estimate.seconds)} in all")
    budget = recipe.train.budget
    if budget is None and device_kind == "cpu" and estimate.seconds > LONG_CPU_RUN_S:
        notes.append(
            f"this CPU plan takes over an hour ({format_seconds(estimate.seconds)}): "
            "--budget 20m (or any time) fits resolution, model and epochs to it"
        )
    train = recipe.train.model_copy(update={"estimated_seconds": round(estimate.seconds, 1)})
    return recipe.model_copy(update={"train": train, "notes": [*recipe.notes, *notes]})


def _scaled(costs: StepCosts, ratio: float) -> StepCosts:
    """Costs at ``ratio`` times the pixels: per-image work scales with them."""
    return dataclasses.replace(
        costs,
        train_s_per_image=costs.train_s_per_image * ratio,
        eval_s_per_image=costs.eval_s_per_image * ratio,
    )


def budget_choice(
    recipe: Plan, fp: Fingerprint, ds: ArrayDataset, device, *, fixed_model: bool = False
) -> tuple[dict[str, Any], list[str], StepCosts | None]:
    """Plan fields (resolution, model, epochs) that fit ``train.budget``, why, and the costs
    measured at the chosen model and side (None when they were only scaled to it).

    The largest side (not above the data's own size, unless the budget allows the full recipe
    at 224 px) that still trains the planner's epochs, or at least a minimum of epochs (6 from
    scratch, 3 fine-tuning); then fewer epochs; then a lighter model; then the small CNN the
    planner uses at 32 px and below. Each model is measured at two of its smaller sides (cheap)
    and its costs at the others read off a line through them (:func:`costs_at`); a side that
    seems to fit is measured itself before it is chosen. ``fixed_model``: the user named the
    model, so only resolution and epochs change.
    """
    budget = float(recipe.train.budget)
    counts = _counts(recipe, ds)
    target = recipe.train.epochs
    pre = recipe.data.preprocess
    real = _real_side(fp)
    if pre is None or recipe.data.spatial_dims != 2:
        sides: list[int | None] = [None]  # arrays that come sized (MedMNIST), or volumes
    else:
        sides = list(candidate_sides(min(pre.size[-1], real), allow_larger=real < 224))
    candidates = budget_candidates(recipe, sides, device.type, fixed_model)
    points: dict[str, dict[int | None, StepCosts]] = {}  # model -> side -> measured costs
    fallback = None  # (epochs, model, side, measured costs or None): below the minimum
    cheapest = None
    for model, side in candidates:
        plan = recipe if model == recipe.model.name else _with_model(recipe, model)
        finetune = model == recipe.model.name and (
            recipe.model.pretrained is True or bool(recipe.model.weights)
        )
        upsampled = side is not None and side > real
        least = MIN_EPOCHS_FINETUNE if finetune else MIN_EPOCHS_SCRATCH
        needed = target if upsampled else min(target, least)
        measured = points.get(model)
        if measured is None:  # two cheap probes per model; the others are interpolated
            own = [s for m, s in candidates if m == model]
            probes = probe_sides(own)
            measured = points[model] = {s: measure_plan(plan, ds, device, s) for s in probes}
        exact = side in measured
        costs = measured[side] if exact else costs_at(measured, side)
        epochs = epochs_within(budget, costs, **counts)
        if epochs >= needed and not exact:
            costs = measured[side] = measure_plan(plan, ds, device, side)
            exact = True
            epochs = epochs_within(budget, costs, **counts)
        cheapest = estimate_run(costs, epochs=1, **counts)
        if epochs >= needed:
            return (*_choice(recipe, model, side, min(target, epochs), budget), costs)
        if not upsampled and epochs >= 1 and (fallback is None or epochs > fallback[0]):
            fallback = (epochs, model, side, costs if exact else None)
    if fallback is not None:  # fewer epochs than the minimum: the most that fit
        epochs, model, side, costs = fallback
        return (*_choice(recipe, model, side, epochs, budget), costs)
    model, side = candidates[-1]
    raise too_small(budget, cheapest, model + (f" at {side} px" if side else ""))


def budget_candidates(
    recipe: Plan, sides: list[int | None], device_kind: str, fixed_model: bool
) -> list[tuple[str, int | None]]:
    """(model, side) pairs a budget tries, most preferred first: the recipe's model at every
    side where the planner would keep it, then its lighter sibling, then the planner's own
    model for the smaller sides (a small CNN at 32 px on a CPU), so that the plan made at the
    chosen side trains the model that was measured.

    >>> budget_candidates(plan, [64, 48, 32], "cpu", False)  # doctest: +SKIP
    [('resnet18', 64), ('resnet18', 48), ('resnet10t', 64), ('resnet10t', 48), ('small_cnn', 32)]
    """
    from medlens.plan.planner import model_for_side

    name = recipe.model.name
    models = [name]
    if name in LIGHTER_MODEL and recipe.model.weights is None and not fixed_model:
        models.append(LIGHTER_MODEL[name])
    if fixed_model or sides == [None] or model_for_side(sides[0], device_kind)[0] != name:
        return [(m, s) for m in models for s in sides]  # not the planner's size-driven choice
    own = [s for s in sides if model_for_side(s, device_kind)[0] == name]
    pairs = [(m, s) for m in models for s in own]
    return pairs + [(model_for_side(s, device_kind)[0], s) for s in sides if s not in own]


def probe_sides(sides: list[int | None]) -> list[int | None]:
    """The two sides a model is measured at: its smallest and the first at least twice as
    wide (or its largest). Probing at 224 px costs a minute on a CPU; 48 and 96 px seconds.

    >>> probe_sides([224, 192, 160, 128, 112, 96, 80, 64, 48])
    [48, 96]
    """
    if None in sides:
        return [None]
    lo = min(sides)
    wide = [s for s in sorted(sides) if s >= 2 * lo]
    return sorted({lo, wide[0] if wide else max(sides)})


def costs_at(measured: dict[int | None, StepCosts], side: int | None) -> StepCosts:
    """Costs at ``side`` from those measured at other sides: per-image time as a fixed part
    plus a part proportional to the pixels, through the smallest and largest measured sides
    (just proportional to the pixels when one side was measured).

    >>> c = lambda t: StepCosts(t, t / 4, 0.1, 1.0, 1.0)
    >>> round(costs_at({32: c(0.002), 64: c(0.005)}, 128).train_s_per_image, 6)
    0.017
    """
    sides = list(measured)
    if len(sides) == 1:
        return _scaled(measured[sides[0]], (side / sides[0]) ** 2)
    sides.sort()
    near = measured[min(sides, key=lambda s: abs(s - side))]
    lo, hi = sides[0], sides[-1]

    def line(low: float, high: float) -> float:
        slope = max(0.0, (high - low) / (hi**2 - lo**2))
        return max(0.0, low - slope * lo**2) + slope * side**2

    a, b = measured[lo], measured[hi]
    return dataclasses.replace(
        near,
        train_s_per_image=line(a.train_s_per_image, b.train_s_per_image),
        eval_s_per_image=line(a.eval_s_per_image, b.eval_s_per_image),
    )


def _choice(
    recipe: Plan, model: str, side: int | None, epochs: int, budget: float
) -> tuple[dict[str, Any], list[str]]:
    fields: dict[str, Any] = {"train.epochs": epochs}
    if side is not None and recipe.data.preprocess is not None:
        fields["data.preprocess.size"] = [side, side]
    if model != recipe.model.name:
        fields["model.name"] = model
    return fields, [budget_note(recipe, fields, budget)]


def budget_note(
    recipe: Plan, fields: dict[str, Any], budget: float, target: int | None = None
) -> str:
    """What a budget chose (``fields`` over ``recipe``), for ``plan.notes``; ``target``: the
    epochs the planner gives the chosen model (default the recipe's)."""
    epochs = fields["train.epochs"]
    target = target or recipe.train.epochs
    why = [f"{epochs} epochs" + (f" (of the planner's {target})" if epochs < target else "")]
    if "data.preprocess.size" in fields:
        why.append(f"{fields['data.preprocess.size'][-1]} px")
    if "model.name" in fields:
        why.append(f"{fields['model.name']} (lighter than {recipe.model.name})")
    return f"budget {format_seconds(budget)}: " + ", ".join(why) + " fit it on this machine"


def _with_model(recipe: Plan, model: str) -> Plan:
    return recipe.model_copy(update={"model": recipe.model.model_copy(update={"name": model})})


def _shape(side: int | None) -> tuple[int, int] | None:
    return None if side is None else (side, side)


def _real_side(fp: Fingerprint) -> int:
    """The shorter side of the data's median original size (its own resolution)."""
    size = (fp.metadata or {}).get("original_size", {}).get("median")
    if size:
        return int(min(size[:2]))
    return int(min(fp.image_shape))


def describe(fp: Fingerprint, recipe: Plan) -> list[str]:
    """A few lines saying what the data is and what the plan will do with it."""
    n = fp.n_images
    shape = "x".join(map(str, [fp.in_chans, *fp.image_shape]))
    aug = recipe.augment
    geometric = [
        name
        for name, on in (("hflip", aug.hflip), ("vflip", aug.vflip), ("rot90", aug.rot90))
        if on
    ]
    geometric.append(f"rotate {aug.rotate_deg:g} deg, zoom {aug.scale[0]:g}-{aug.scale[1]:g}")
    lines = [
        f"data: {fp.name} ({fp.modality}), {fp.task}, {shape}, train {n['train']} / val "
        f"{n['val']} / test {n['test']}, smallest class {fp.minority_fraction:.1%}",
        f"plan: {recipe.model.name}, {recipe.train.epochs} epochs, batch "
        f"{recipe.train.batch_size}, {recipe.optim.name} lr {recipe.optim.lr:g} "
        f"({recipe.schedule.name}), loss {recipe.loss.name}"
        + (f", {recipe.train.sampler} sampling" if recipe.train.sampler != "none" else "")
        + f", augment: {', '.join(geometric)}",
    ]
    # the notes a user must see before a long run starts: weights, budget, time
    shown = ("weights:", "budget", "estimate on this machine", "this CPU plan takes over")
    lines += [note for note in recipe.notes if note.startswith(shown)]
    return lines
