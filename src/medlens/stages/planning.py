"""Fingerprint a dataset and choose its recipe: the first two steps of the flow.

>>> fp = data_info("breastmnist", data_dir="data")  # doctest: +SKIP
>>> recipe, fp, ds = plan_dataset("breastmnist", data_dir="data")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from medlens.config import Plan
from medlens.data.dataset import ArrayDataset
from medlens.data.fingerprint import Fingerprint, fingerprint
from medlens.data.sources import load_dataset
from medlens.errors import ConfigError
from medlens.plan import make_plan
from medlens.progress import Reporter
from medlens.run import source_options

# the CLI's shortcut flags and the plan fields they set
FLAG_FIELDS = {
    "model": "model.name",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "optim.lr",
    "seed": "train.seed",
    "device": "train.device",
    "init": "model.init",
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
) -> tuple[Plan, Fingerprint, ArrayDataset]:
    """The default recipe for ``source`` on ``device``, with ``overrides`` applied."""
    from medlens.device import device_facts, resolve_device
    from medlens.train.distributed import ranks

    fields = source_fields or {}
    ds = load_dataset(
        source,
        data_dir=data_dir,
        size=size,
        download=download,
        options=source_options(fields),
        on_progress=_progress(reporter),
    )
    fp = fingerprint(ds)
    overrides = dict(overrides or {})
    overrides.setdefault("train.device", device)
    # the GPU's name and memory set the batch size and lr (the global batch, over all ranks)
    facts = device_facts(resolve_device(str(overrides["train.device"])), ranks().world)
    is_medmnist = "medmnist_flag" in fp.metadata

    def recipe_for(fp: Fingerprint) -> Plan:
        return make_plan(
            fp,
            device=facts,
            data_dir=data_dir,
            size=size if is_medmnist else None,
            overrides=overrides,
            source_fields=fields,
        )

    recipe = recipe_for(fp)
    chosen = recipe.data.preprocess
    if chosen is not None and chosen.model_dump(mode="json") != fp.metadata.get("preprocess"):
        # --set data.preprocess.* changed how files become arrays: cache them that way, and
        # take the fingerprint (and so the normalisation statistics) from that data
        ds = load_dataset(
            source,
            size=size,
            options=source_options(fields, chosen),
            on_progress=_progress(reporter),
        )
        fp = fingerprint(ds)
        recipe = recipe_for(fp)
    from medlens.models.registry import model_spatial_dims

    model_spatial_dims(recipe.model.name)  # `medlens plan` refuses an unknown model, as train does
    return recipe, fp, ds


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
    return [
        f"data: {fp.name} ({fp.modality}), {fp.task}, {shape}, train {n['train']} / val "
        f"{n['val']} / test {n['test']}, smallest class {fp.minority_fraction:.1%}",
        f"plan: {recipe.model.name}, {recipe.train.epochs} epochs, batch "
        f"{recipe.train.batch_size}, {recipe.optim.name} lr {recipe.optim.lr:g} "
        f"({recipe.schedule.name}), loss {recipe.loss.name}, augment: {', '.join(geometric)}",
    ]
