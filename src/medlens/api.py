"""The stages as Python functions; the CLI is a thin layer over these.

>>> import medlens.api as ml
>>> fp = ml.data_info("breastmnist", data_dir="../shared/data/medmnist")  # doctest: +SKIP
>>> result = ml.train("breastmnist", data_dir="data", epochs=20)  # doctest: +SKIP
>>> result.metrics["test"]["auc"]  # doctest: +SKIP
0.87
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.config import Plan, apply_overrides, load_plan, save_plan
from medlens.data.dataset import ArrayDataset
from medlens.data.fingerprint import Fingerprint, fingerprint
from medlens.data.sources import load_dataset
from medlens.errors import ConfigError
from medlens.evaluate.metrics import classification_metrics, predict_labels
from medlens.models.registry import model_spatial_dims
from medlens.plan import make_plan
from medlens.progress import Reporter, SilentReporter
from medlens.rundir import RunDir, check_output, default_run_name, environment, write_json
from medlens.train.device import device_facts, resolve_device
from medlens.train.loop import EpochCallback, FitResult, fit

_FLAG_FIELDS = {
    "model": "model.name",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "optim.lr",
    "seed": "train.seed",
    "device": "train.device",
    "init": "model.init",
}


@dataclass
class TrainResult:
    run_dir: Path
    plan: Plan
    fit: FitResult
    metrics: dict[str, Any]


SOURCE_FIELDS = (
    "label_columns",
    "path_column",
    "patient_column",
    "split_column",
    "skip_bad",
    "cache_dir",
)


def source_options(fields: dict[str, Any], preprocess=None, seed: int = 0):
    """:class:`SourceOptions` from plan-style fields (``label_columns=[...]``, ...)."""
    from medlens.data.labelled import SourceOptions

    return SourceOptions(
        **{k: v for k, v in fields.items() if k in SOURCE_FIELDS}, preprocess=preprocess, seed=seed
    )


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


def flag_overrides(**flags: Any) -> dict[str, Any]:
    """Map CLI-style keyword flags (``epochs=5``) to dotted plan fields."""
    unknown = set(flags) - set(_FLAG_FIELDS)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))}")
    return {_FLAG_FIELDS[k]: v for k, v in flags.items() if v is not None}


def plan(
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
    from medlens.train.distributed import ranks

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
    return recipe, fp, ds


def check_plan_fits(recipe: Plan, ds: ArrayDataset) -> None:
    """The plan must describe this data, and its model must take it (checked before any write)."""
    d = recipe.data
    found = {
        "task": ds.task,
        "in_chans": ds.in_chans,
        "n_classes": ds.n_classes,
        "spatial_dims": ds.spatial_dims,
    }
    wrong = [
        f"data.{k} is {getattr(d, k)} but the data has {v}"
        for k, v in found.items()
        if getattr(d, k) != v
    ]
    if wrong:
        raise ConfigError(
            "the plan does not fit the data: " + "; ".join(wrong),
            hint="make a new plan with `medlens plan` for this dataset",
        )
    positive = recipe.evaluate.positive_class
    if positive is not None and (d.task != "binary" or positive not in d.label_names):
        raise ConfigError(
            f"evaluate.positive_class {positive!r} is not a class of this binary task",
            hint=f"use one of {d.label_names}" if d.task == "binary" else "leave it unset",
        )
    if recipe.evaluate.subgroups:
        from medlens.evaluate.subgroups import subgroup_columns

        meta = ds.splits["test"].meta
        if meta is None:
            raise ConfigError(
                "evaluate.subgroups names columns, but this data has no metadata columns",
                hint="subgroups come from extra columns of a CSV/Parquet manifest",
            )
        subgroup_columns(meta, recipe.evaluate.subgroups)
    for path in (recipe.model.weights, recipe.model.init):
        if path:
            from medlens.models.weights import weights_file

            weights_file(path)  # a missing file fails now, not after the data is cached
    dims = 3 if recipe.model.slices else model_spatial_dims(recipe.model.name)
    if dims != ds.spatial_dims:
        raise ConfigError(
            f"model {recipe.model.name} is {dims}D but the data is {ds.spatial_dims}D",
            hint="see `medlens models` for models of the right kind",
        )


def _load_for_plan(
    recipe: Plan, data_dir: str | None, download: bool, reporter: Reporter | None = None
) -> ArrayDataset:
    """Reload exactly the data a plan was made for (the cache makes this cheap)."""
    d = recipe.data
    return load_dataset(
        d.source,
        data_dir=data_dir or d.data_dir,
        size=d.size,
        download=download,
        on_progress=_progress(reporter),
        # splits are drawn with seed 0 as when the plan was made (``plan``), never with the
        # training seed: runs of one plan with other seeds must share their test split
        options=source_options(d.model_dump(), d.preprocess),
    )


def train(
    source: str | None = None,
    *,
    plan_file: str | Path | None = None,
    data_dir: str | None = None,
    size: int | None = None,
    output: str | Path | None = None,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    download: bool = True,
    reporter: Reporter | None = None,
    callbacks: Sequence[EpochCallback] = (),
    source_fields: dict[str, Any] | None = None,
    **flags: Any,
) -> TrainResult:
    """Fingerprint, plan, train and evaluate: the whole first half of the flow.

    ``flags`` are the CLI's shortcuts (model, epochs, batch_size, lr, seed, device); ``overrides``
    any dotted plan field. With ``resume=True`` the run in ``output`` continues from its last
    checkpoint with its own plan.
    """
    from medlens.train import distributed

    ranks = distributed.ranks()
    # under torchrun rank 0 writes the run directory and talks; the others train their shard
    reporter = (reporter or SilentReporter()) if ranks.main else SilentReporter()
    overrides = {**(overrides or {}), **flag_overrides(**flags)}
    if resume:
        if output is None:
            raise ConfigError("--resume needs --output naming the run to continue")
        run = RunDir(Path(output))
        check_output(run, resume=True)
        if overrides or plan_file:
            raise ConfigError(
                "a resumed run keeps its own plan.yaml; options that change it "
                "cannot be combined with --resume",
                hint="drop those options, or start a new run",
            )
        recipe = load_plan(run.plan)
        ds = _load_for_plan(recipe, data_dir, download, reporter)
        check_plan_fits(recipe, ds)
    else:
        if plan_file is not None:
            recipe = load_plan(plan_file)
            if overrides:
                recipe = apply_overrides(recipe, overrides)
            if source is not None and Path(source).stem != Path(recipe.data.source).stem:
                raise ConfigError(
                    f"the plan is for {recipe.data.source}, not {source}",
                    hint="drop the dataset argument or use a plan made for it",
                )
            ds = _load_for_plan(recipe, data_dir, download, reporter)
            fp = fingerprint(ds)
        elif source is None:
            raise ConfigError("no dataset given", hint="name one, e.g. medlens train breastmnist")
        else:
            recipe, fp, ds = plan(
                source,
                data_dir=data_dir,
                size=size,
                overrides=overrides,
                download=download,
                source_fields=source_fields,
                reporter=reporter,
            )
        check_plan_fits(recipe, ds)
        if ranks.active and output is None:
            raise ConfigError(
                "under torchrun every process must write to the same run directory",
                hint="give it with --output",
            )
        run = RunDir(
            Path(output) if output else Path("runs") / default_run_name(ds.name, recipe.model.name)
        )
        if ranks.main:
            check_output(run, resume=False)
            run.root.mkdir(parents=True, exist_ok=True)
            save_plan(recipe, run.plan)
            write_json(run.fingerprint, fp.model_dump(mode="json"))
            env = environment(recipe.train.seed, str(resolve_device(recipe.train.device)))
            write_json(run.env, {**env, "world_size": ranks.world})
        for line in describe(fp, recipe):
            reporter.message(line)
    reporter.message(f"run directory: {run.root}")
    result = fit(recipe, ds, run, resume=resume, reporter=reporter, callbacks=callbacks)
    distributed.barrier(ranks)
    metrics = evaluate_run(run, ds=ds) if ranks.main else {}
    return TrainResult(run_dir=run.root, plan=recipe, fit=result, metrics=metrics)


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


def _load_model(run: RunDir, recipe: Plan, device):
    from medlens.train.checkpoint import load_weights
    from medlens.train.loop import build_model_for

    model = build_model_for(
        recipe.model_copy(update={"model": recipe.model.model_copy(update={"pretrained": False})}),
        device,
    )
    info = load_weights(run.best, model)
    return model, info


def evaluate_run(
    run_dir: str | Path | RunDir,
    *,
    ds: ArrayDataset | None = None,
    data_dir: str | None = None,
    download: bool = True,
) -> dict[str, Any]:
    """Evaluate the best checkpoint on val and test.

    Writes metrics.json, predictions.csv, trust.json (calibration, CIs, operating points,
    conformal sets, subgroups) and calibration.json (what ``predict`` applies to new cases).
    """
    from medlens.config import positive_index
    from medlens.evaluate.calibration import probabilities
    from medlens.evaluate.conformal import image_keys
    from medlens.evaluate.trust import trust_analysis
    from medlens.inference import predict_logits
    from medlens.train.loop import device_arrays

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    run.require_trained()
    recipe = load_plan(run.plan)
    if ds is None:
        ds = _load_for_plan(recipe, data_dir, download)
        check_plan_fits(recipe, ds)
    device = resolve_device(recipe.train.device)
    model, info = _load_model(run, recipe, device)
    task = recipe.data.task
    out: dict[str, Any] = {
        "dataset": ds.name,
        "model": recipe.model.name,
        "checkpoint": {"path": str(run.best), **info},
    }
    logits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("val", "test"):
        data = device_arrays(recipe, ds.splits[split].images, ds.splits[split].labels, device)
        z, labels, speed = predict_logits(
            model, data, recipe.train.eval_batch_size, recipe.train.amp
        )
        metrics = classification_metrics(
            labels,
            probabilities(z, task),
            task,
            label_names=recipe.data.label_names,
            positive=positive_index(recipe),
        )
        metrics["inference_images_per_s"] = round(speed, 1)
        out[split] = metrics
        logits[split] = (z, labels)
    test, ev = ds.splits["test"], recipe.evaluate
    keys = {split: image_keys(ds.splits[split].images) for split in logits}
    trust = trust_analysis(
        *logits["val"], *logits["test"], task=task, label_names=recipe.data.label_names,
        positive=positive_index(recipe), n_boot=ev.bootstrap, ci=ev.ci, seed=recipe.train.seed,
        conformal_alpha=ev.conformal_alpha, conformal_method=ev.conformal_method,
        target_sensitivity=ev.target_sensitivity, target_specificity=ev.target_specificity,
        subgroups=ev.subgroups, test_patients=test.patients, test_meta=test.meta,
        val_keys=keys["val"], test_keys=keys["test"],
    )  # fmt: skip
    write_json(run.metrics, out)
    write_json(run.trust, trust)
    record = _calibration_record(trust, task)
    write_json(run.calibration, record)
    rows = []
    for split, (z, labels) in logits.items():
        rows.extend(_prediction_rows(split, labels, z, recipe, record, keys[split]))
    _write_predictions(run.predictions, rows, recipe)
    return out


def _calibration_record(trust: dict[str, Any], task: str) -> dict[str, Any]:
    """What predict needs to turn logits into calibrated probabilities and prediction sets."""
    record: dict[str, Any] = {"task": task, "temperature": trust["calibration"]["temperature"]}
    from medlens.evaluate.trust import section

    c = section(trust, "conformal")
    if c is not None:
        keys = ("method", "alpha", "qhat", "n_calibration", "lam", "k_reg", "seed")
        record["conformal"] = {k: c[k] for k in keys}
    return record


def calibration_record(run: RunDir, task: str) -> dict[str, Any]:
    """The run's calibration.json, or no calibration (T = 1, no sets) before evaluation."""
    if run.calibration.is_file():
        return json.loads(run.calibration.read_text())
    return {"task": task, "temperature": 1.0}


def calibrated_outputs(
    logits: np.ndarray, record: dict[str, Any], keys: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Calibrated probabilities and, for single-label tasks, conformal prediction sets.

    ``keys``: :func:`medlens.evaluate.conformal.image_keys` of the cases' model inputs, which
    APS and RAPS sets need (a case's set then does not depend on its batch).
    """
    from medlens.evaluate.calibration import probabilities
    from medlens.evaluate.conformal import ConformalPredictor

    probs = probabilities(logits, record["task"], record["temperature"])
    if "conformal" not in record:
        return probs, None
    return probs, ConformalPredictor(**record["conformal"]).predict_sets(probs, keys=keys)


def _label_text(names: list[str], value: np.ndarray, task: str) -> str:
    """A class name, or the ';'-joined names of the labels that are on (multi-label)."""
    if task == "multi-label":
        return ";".join(n for n, v in zip(names, value, strict=True) if v > 0.5)
    return names[int(value)]


def _prediction_rows(
    split: str,
    labels: np.ndarray,
    logits: np.ndarray,
    recipe: Plan,
    record: dict[str, Any],
    keys: np.ndarray,
) -> list:
    """One row per case: truth, prediction, raw probabilities, calibrated confidence, set."""
    from medlens.evaluate.calibration import probabilities

    task, names = recipe.data.task, recipe.data.label_names
    probs = probabilities(logits, task)
    calibrated, sets = calibrated_outputs(logits, record, keys)
    pred = predict_labels(probs, task)
    return [
        [
            split,
            i,
            _label_text(names, labels[i], task),
            _label_text(names, pred[i], task),
            *(f"{p:.6f}" for p in probs[i]),
            f"{_confidence(calibrated[i], task):.6f}",
            "" if sets is None else ";".join(n for n, on in zip(names, sets[i], strict=True) if on),
        ]
        for i in range(len(probs))
    ]


def _confidence(probs: np.ndarray, task: str) -> float:
    """Calibrated probability of the predicted class (of each label's call, multi-label: mean)."""
    if task == "multi-label":
        return float(np.maximum(probs, 1 - probs).mean())
    return float(probs.max())


def _write_predictions(path: Path, rows: list, recipe: Plan) -> None:
    header = ["split", "index", "label", "predicted"]
    header += [f"p_{n}" for n in recipe.data.label_names] + ["confidence", "prediction_set"]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)


def input_shape(run: RunDir) -> tuple[int, ...]:
    """The spatial shape the run's model takes, (H, W) or (D, H, W)."""
    return tuple(json.loads(run.fingerprint.read_text())["image_shape"])


def _read_inputs(files: list[Path], recipe: Plan, run: RunDir) -> np.ndarray:
    """Files as the model's inputs, through :func:`medlens.data.images.model_input`."""
    from medlens.data.images import read_inputs

    return read_inputs(files, recipe, input_shape(run))


def unlabelled_arrays(recipe: Plan, images: np.ndarray, device):
    """New cases as the model's device arrays; their labels are placeholders (zeros)."""
    from medlens.train.loop import device_arrays

    multi = recipe.data.task == "multi-label"
    shape = (len(images),) + ((recipe.data.n_classes,) if multi else ())
    return device_arrays(recipe, images, np.zeros(shape, dtype=np.int64), device)


def predict(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    *,
    output: str | Path | None = None,
    onnx: bool | None = None,
    heatmaps: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Class probabilities for image files (or folders of them); writes a CSV when ``output``.

    ``heatmaps``: a folder for a saliency overlay per file (Grad-CAM, or attention rollout
    for ViTs; always from the PyTorch model, which has the gradients), named in a ``heatmap``
    column.

    Probabilities are calibrated (the run's fitted temperature) and single-label tasks get a
    conformal prediction set, when the run has been evaluated (calibration.json).
    ``onnx``: logits from ``<run>/export/model.onnx`` on ONNX Runtime (None: when that export
    exists, onnxruntime is installed and it matches best.safetensors; False: PyTorch).
    """
    from medlens.data.images import expand_inputs
    from medlens.evaluate.conformal import image_keys
    from medlens.export.runtime import run_predictor
    from medlens.inference import predict_logits

    run = RunDir(Path(run_dir))
    run.require_trained()
    recipe = load_plan(run.plan)
    task = recipe.data.task
    files = expand_inputs(list(inputs))
    images = _read_inputs(files, recipe, run)
    session = run_predictor(run.root, onnx)
    device = resolve_device("cpu" if session is not None else recipe.train.device)
    data = unlabelled_arrays(recipe, images, device)
    if session is not None:  # the run's ONNX export on ONNX Runtime
        logits = session.predict_logits(data, recipe.train.eval_batch_size)
    else:
        model, _ = _load_model(run, recipe, device)
        logits, _, _ = predict_logits(model, data, recipe.train.eval_batch_size, recipe.train.amp)
    probs, sets = calibrated_outputs(logits, calibration_record(run, task), image_keys(images))
    pred = predict_labels(probs, task)
    names = recipe.data.label_names
    results = []
    for i, f in enumerate(files):
        row = {
            "path": str(f),
            "predicted": _label_text(names, pred[i], task),
            "confidence": _confidence(probs[i], task),
            **{f"p_{n}": float(v) for n, v in zip(names, probs[i], strict=True)},
        }
        if sets is not None:
            row["prediction_set"] = ";".join(n for n, on in zip(names, sets[i], strict=True) if on)
        results.append(row)
    if heatmaps is not None:
        from medlens.explain import explain

        for row, explained in zip(results, explain(run.root, files, heatmaps), strict=True):
            row["heatmap"] = explained["png"]
    if output is not None:
        with Path(output).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(results[0]))
            writer.writeheader()
            writer.writerows(results)
    return results


def distill(teacher_run: str | Path, **options: Any):
    """Distil a trained run into a smaller student (default: ``mobilenetv3_small_medmnist``
    below 64 px, else ``mobilenetv3_small_100``).

    The student run is an ordinary run plus ``compression.json`` (teacher against student);
    options: see :func:`medlens.compress.distill.distill_run`.

    >>> r = ml.distill("runs/teacher", epochs=10, output="runs/student")  # doctest: +SKIP
    >>> r.compression["comparison"]["test_auc_difference"]  # doctest: +SKIP
    """
    from medlens.compress.distill import distill_run

    return distill_run(teacher_run, **options)


def prune(run_dir: str | Path, **options: Any):
    """Remove whole conv channels of a trained run's model, fine-tune, and compare.

    Options: see :func:`medlens.compress.prune.prune_run` (``amount``, ``finetune_epochs``...).
    """
    from medlens.compress.prune import prune_run

    return prune_run(run_dir, **options)


# ------------------------------------------------------------------------------ compare / tune
def compare(source: str, *, overrides: dict[str, Any] | None = None, **options: Any):
    """Train models x seeds runs with one plan on the same data and splits, and write a
    leaderboard (test metrics, parameters, GFLOPs, training time, CPU latency) with paired AUC
    tests of the best model against each other one.

    ``options``: those of :func:`medlens.compare.comparison.run_comparison` (``models``,
    ``seeds``, ``output``, ``data_dir``, ...) and the CLI flags epochs, batch_size, lr, seed
    (the first seed), device. Runs already finished in ``output`` are kept, not retrained.

    >>> r = ml.compare("breastmnist", models="small_cnn,resnet18", seeds=3)  # doctest: +SKIP
    >>> r.rows[0]["model"], r.rows[0]["auc_mean"], r.paired[0]["p_value"]  # doctest: +SKIP
    """
    from medlens.compare.comparison import run_comparison

    flags = {k: options.pop(k) for k in list(options) if k in _FLAG_FIELDS}
    overrides = {**(overrides or {}), **flag_overrides(**flags)}
    if "model.name" in overrides:
        raise ConfigError("compare sets model.name itself", hint="name the models with --models")
    if not isinstance(options.get("models", ""), str):
        options["models"] = list(options["models"])
    return run_comparison(source, overrides=overrides, **options)


def tune(source: str, *, overrides: dict[str, Any] | None = None, **options: Any):
    """Hyperparameter search with Optuna (TPE, pruned on per-epoch val AUC), scored on val AUC
    only; writes trials.csv, the study (``sqlite:///<output>/study.db`` unless ``storage``) and
    best_plan.yaml, which ``train(plan_file=...)`` takes. Needs ``pip install "medlens[tune]"``.

    ``options``: those of :func:`medlens.tune.search.run_search` (``trials``, ``timeout``,
    ``storage``, ``study_name``, ``output``, ``pruner``, ...) and the CLI flags epochs,
    batch_size, lr, seed (training and sampler), device, model; a field fixed this way or in
    ``overrides`` is left out of the search (:mod:`medlens.tune.space`).

    >>> r = ml.tune("breastmnist", trials=20, epochs=10)  # doctest: +SKIP
    >>> r.best_value, r.best_plan_file  # doctest: +SKIP
    """
    from medlens.tune.search import run_search

    flags = {k: options.pop(k) for k in list(options) if k in _FLAG_FIELDS}
    return run_search(source, overrides={**(overrides or {}), **flag_overrides(**flags)}, **options)
