"""``medlens evaluate RUN --on DATA``: external validation, "will it work at my hospital?".

Every image of the external source (all of its splits) is read through the run's own
preprocessing and resizing, its classes are matched to the run's (``label_map`` where the
names differ), and the run's model, calibration, operating points and conformal threshold are
applied unchanged. Written to ``RUN/external/<name>/``:

* ``external.json``: the metric table with bootstrap CIs (patients resampled when the source
  has patient ids), calibration before and after the run's temperature, the run's operating
  points as the site sees them, conformal coverage at the run's threshold, the drop against the
  internal test split with an unpaired bootstrap CI, and the share the OOD guard flags;
* ``shift.json``: intensity and size differences from the training fingerprint and the
  feature-space domain classifier (:func:`medlens.evaluate.shift.domain_shift`);
* ``predictions.csv``: one row per external image.

The folder is written whole or not at all; the run's own files are never touched.

>>> summary = evaluate_external("runs/pneumonia", "chest_xray/",
...                             label_map={"NORMAL": "normal"})  # doctest: +SKIP
>>> summary["confidence_intervals"]["auc"]["value"]  # doctest: +SKIP
0.87
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.config import Plan, positive_index
from medlens.data.dataset import ArrayDataset
from medlens.errors import ConfigError, DataError
from medlens.evaluate.bootstrap import bootstrap_metrics
from medlens.evaluate.calibration import judge_calibration, probabilities
from medlens.evaluate.conformal import coverage_report, image_keys
from medlens.evaluate.metrics import classification_metrics
from medlens.evaluate.operating import rates_at
from medlens.evaluate.outputs import calibrated_outputs
from medlens.evaluate.shift import domain_shift, intensity_difference
from medlens.evaluate.transfer import metric_drop
from medlens.run import Run, write_rows
from medlens.stages.evaluate import as_run, prediction_rows


@dataclass
class ExternalSet:
    """An external source as the run's model inputs, with labels in the run's classes."""

    name: str
    source: str
    images: np.ndarray  # uint8 (N, C, ...) as the run's model takes them
    labels: np.ndarray  # indices into the run's label names
    patients: np.ndarray | None
    class_map: dict[str, str]  # external class -> run class
    original_size: dict[str, Any] | None = None


# ----------------------------------------------------------------------------- class names
def match_classes(
    external: list[str], run: list[str], label_map: dict[str, str] | None = None
) -> dict[str, str]:
    """External class -> run class: ``label_map`` first, then equal names ignoring case.

    >>> match_classes(["NORMAL", "PNEUMONIA"], ["normal", "pneumonia"])
    {'NORMAL': 'normal', 'PNEUMONIA': 'pneumonia'}
    """
    given = label_map or {}
    lower_ext = {e.lower(): e for e in external}
    lower_run = {r.lower(): r for r in run}
    mapping: dict[str, str] = {}
    for key, value in given.items():
        if key.lower() not in lower_ext:
            raise ConfigError(
                f"--label-map names {key!r}, which is not a class of the external set "
                f"(its classes: {', '.join(external)})",
                hint="the left side of each item is an external class name",
            )
        if value.lower() not in lower_run:
            raise ConfigError(
                f"--label-map maps {key!r} to {value!r}, which is not a class of the run "
                f"(its classes: {', '.join(run)})",
                hint="the right side of each item is one of the run's classes",
            )
        mapping[lower_ext[key.lower()]] = lower_run[value.lower()]
    for name in external:
        if name in mapping:
            continue
        if name.lower() not in lower_run:
            raise ConfigError(
                f"the external set has a class {name!r} the run does not know "
                f"(the run's classes: {', '.join(run)})",
                hint=f"map it with --label-map {name}=<one of the run's classes>",
            )
        mapping[name] = lower_run[name.lower()]
    return mapping


# ------------------------------------------------------------------------------ reading
def _input_config(recipe: Plan, shape: tuple[int, ...], source: Path):
    """The preprocessing a new file gets (:func:`medlens.data.images.input_config`), decided
    from the first image of a folder, as ``medlens predict`` decides it per file."""
    from medlens.data.images import expand_inputs, input_config
    from medlens.data.readers import read_image_file

    probe = expand_inputs([source])[0] if source.is_dir() else None
    img = read_image_file(probe) if probe is not None else None
    if img is None:  # a manifest: 8-bit files, as most are
        from medlens.data.preprocess import PreprocessConfig

        return recipe.data.preprocess or PreprocessConfig(
            size=list(shape), resize="crop", channels=recipe.data.in_chans, normalize="none"
        )
    return input_config(recipe, shape, img)


def _fit_arrays(images: np.ndarray, recipe: Plan, shape: tuple[int, ...], name: str):
    """Array sources (.npz, MedMNIST): refuse another dimensionality or channel count, resize
    another size as a new file would be."""
    dims, chans = images.ndim - 2, images.shape[1]
    if dims != recipe.data.spatial_dims:
        raise DataError(
            f"{name} holds {dims}D images of shape {images.shape[2:]}; this run's model takes "
            f"{recipe.data.spatial_dims}D images",
            hint="validate on images of the kind the run was trained on",
        )
    if chans != recipe.data.in_chans:
        raise DataError(
            f"{name} has {chans}-channel images; this run's model takes {recipe.data.in_chans}",
            hint="convert the images (grey or RGB) to match the run, or use an image folder, "
            "which the run's preprocessing converts",
        )
    if tuple(images.shape[2:]) == tuple(shape):
        return images
    from medlens.data.images import model_input
    from medlens.data.readers import LoadedImage

    def loaded(a: np.ndarray) -> LoadedImage:
        arr = a[0] if chans == 1 else np.moveaxis(a, 0, -1)
        return LoadedImage(arr.astype(np.float32), None, "npy", meta={"dtype": "uint8"})

    return np.stack([model_input(loaded(a), recipe, shape, name) for a in images])


def external_set(
    run: Run,
    source: str,
    *,
    label_map: dict[str, str] | None = None,
    name: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
) -> ExternalSet:
    """Every image of ``source`` as the run's model inputs, labelled in the run's classes."""
    from medlens.data.labelled import SourceOptions, is_labelled_source
    from medlens.data.sources import load_dataset

    recipe, shape = run.plan, run.input_shape()
    path = Path(source).expanduser()
    if is_labelled_source(path) and path.exists():
        cfg = _input_config(recipe, shape, path)
        ds = load_dataset(str(path), options=SourceOptions(preprocess=cfg))
    else:
        ds = load_dataset(source, data_dir=data_dir, download=download)
    label = name or (path.stem if path.exists() else source)
    check_task(ds, recipe, label)
    parts = [ds.splits[s] for s in ("train", "val", "test") if len(ds.splits[s])]
    images = _fit_arrays(
        np.concatenate([np.asarray(p.images) for p in parts]), recipe, shape, label
    )
    mapping = match_classes(ds.label_names, recipe.data.label_names, label_map)
    to_run = np.array([recipe.data.label_names.index(mapping[n]) for n in ds.label_names])
    labels = np.concatenate([p.labels for p in parts])
    labels = to_run[labels] if recipe.data.task != "multi-label" else labels[:, to_run.argsort()]
    patients = None
    if all(p.patients is not None for p in parts):
        patients = np.concatenate([p.patients for p in parts])
    return ExternalSet(
        label, str(ds.source or source), images, labels, patients, mapping,
        ds.metadata.get("original_size"),
    )  # fmt: skip


def check_task(ds: ArrayDataset, recipe: Plan, name: str) -> None:
    """Multi-label sets go with multi-label runs only."""
    if (ds.task == "multi-label") != (recipe.data.task == "multi-label"):
        raise DataError(
            f"{name} is a {ds.task} set; this run's task is {recipe.data.task}",
            hint="validate on labels of the kind the run was trained on",
        )


# ---------------------------------------------------------------------------- the analysis
def operating_points_in_use(run: Run, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The thresholds in use: the calibration's own (after ``medlens recalibrate``), else those
    the evaluation chose on val (trust.json)."""
    if "operating_points" in record:
        return record["operating_points"]
    if not run.trust_file.is_file():
        return []
    points = run.trust().get("operating_points")
    if not isinstance(points, list):
        return []
    keys = ("positive_class", "target", "value", "threshold")
    return [{k: p[k] for k in keys} for p in points]


def judged_site(
    run: Run,
    logits: np.ndarray,
    y: np.ndarray,
    keys: np.ndarray,
    record: dict[str, Any],
    *,
    patients: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """What the run's calibration, thresholds and sets give on a site's labelled cases."""
    recipe, ev = run.plan, run.plan.evaluate
    task, names = recipe.data.task, recipe.data.label_names
    boot = {"n_boot": ev.bootstrap, "ci": ev.ci, "seed": seed}
    probs = probabilities(logits, task)
    calibrated, sets = calibrated_outputs(logits, record, keys)
    present = sorted({int(v) for v in np.unique(y)}) if task != "multi-label" else None
    out: dict[str, Any] = {
        "n_images": len(y),
        "n_patients": None if patients is None else len(np.unique(patients)),
        "resampled": "patients" if patients is not None else "images",
        "confidence_intervals": bootstrap_metrics(
            y, probs, task, groups=patients, positive=positive_index(recipe), **boot
        ),
        "calibration": {
            "temperature": float(record["temperature"]),
            "version": record.get("version", "v1"),
            "before": judge_calibration(logits, y, task, 1.0),
            "after": judge_calibration(logits, y, task, float(record["temperature"])),
        },
    }
    if present is not None and len(present) < 2:
        only = names[present[0]]
        out["undefined"] = {
            "auc": f"only one class ({only}) in these cases: AUC needs both; "
            "accuracy and the rates of that class are reported"
        }
    else:
        out["metrics"] = classification_metrics(
            y, probs, task, label_names=names, positive=positive_index(recipe)
        )
    points = []
    for p in operating_points_in_use(run, record):
        j = names.index(p["positive_class"])
        rates = rates_at(
            (y == j).astype(int), calibrated[:, j], p["threshold"], groups=patients, **boot
        )
        points.append({**p, "site": rates})
    if points:
        out["operating_points"] = points
    if sets is not None:
        c = record["conformal"]
        out["conformal"] = {
            "method": c["method"],
            "qhat": c["qhat"],
            "target_coverage": 1 - float(c["alpha"]),
            **coverage_report(sets, y, names),
        }
    return out


def evaluate_external(
    run_dir: str | Path | Run,
    source: str,
    *,
    label_map: dict[str, str] | None = None,
    name: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    n_permutations: int = 99,
) -> dict[str, Any]:
    """Validate a run on another site's labelled images; returns what external.json holds."""
    from medlens.analyse.ood_guard import OodGuard, case_features
    from medlens.data.fingerprint import intensity_stats
    from medlens.device import resolve_device

    run = as_run(run_dir)
    recipe = run.plan
    ext = external_set(
        run, source, label_map=label_map, name=name, data_dir=data_dir, download=download
    )
    record = run.calibration()
    device = resolve_device(recipe.train.device)
    model, _ = run.load_model(device)
    ext_f, ext_z = case_features(model, recipe, ext.images, device)
    test = run.data(data_dir, download).splits["test"]
    int_f, int_z = case_features(model, recipe, np.asarray(test.images), device)
    keys = image_keys(ext.images)
    seed = recipe.train.seed
    out: dict[str, Any] = {
        "name": ext.name,
        "source": ext.source,
        "run": run.root.name,
        "classes": ext.class_map,
        **judged_site(run, ext_z, ext.labels, keys, record, patients=ext.patients, seed=seed),
    }
    ev = recipe.evaluate
    out["drop"] = {
        "comparison": "internal test split vs external set: different cases, so an unpaired "
        "bootstrap (each set resampled on its own); drop = internal - external",
        "metrics": metric_drop(
            test.labels, probabilities(int_z, recipe.data.task), ext.labels,
            probabilities(ext_z, recipe.data.task), recipe.data.task,
            internal_groups=test.patients, external_groups=ext.patients,
            n_boot=ev.bootstrap, ci=ev.ci, seed=seed, positive=positive_index(recipe),
        ),
    }  # fmt: skip
    guard = OodGuard.load(run)
    if guard is None:
        out["ood"] = {"note": f"no OOD guard: {run.root} was evaluated before medlens fitted "
                      f"one (run `medlens evaluate {run.root}`)"}  # fmt: skip
        ood = None
    else:
        ood = guard.check(ext_f, ext_z)
        out["ood"] = {
            "method": guard.method,
            "threshold": guard.threshold,
            "flagged_share": float((~ood[1]).mean()),
            "internal_test_flagged_share": float((~guard.check(int_f, int_z)[1]).mean()),
        }
    shift = {
        "name": ext.name,
        "feature_space": domain_shift(int_f, ext_f, n_permutations=n_permutations, seed=seed),
        "intensity": {
            "training": run.fingerprint["intensity"],
            "external": intensity_stats(ext.images).model_dump(),
        },
        "size": {
            "training_model_input": run.fingerprint["image_shape"],
            "training_original": run.fingerprint.get("metadata", {}).get("original_size"),
            "external_original": ext.original_size,
        },
    }
    shift["intensity"]["difference"] = intensity_difference(
        shift["intensity"]["training"], shift["intensity"]["external"]
    )
    out["shift"] = {
        k: shift["feature_space"][k] for k in ("domain_auc", "p_value", "statement")
    } | {"intensity_difference": shift["intensity"]["difference"]}
    rows = prediction_rows("external", ext.labels, ext_z, recipe, record, keys)
    write_external(run, ext.name, out, shift, rows, ood)
    return out


def write_external(
    run: Run,
    name: str,
    summary: dict[str, Any],
    shift: dict[str, Any],
    rows: list,
    ood: tuple[np.ndarray, np.ndarray] | None,
) -> Path:
    """``RUN/external/<name>/``, written in a temporary folder and renamed into place."""
    from medlens.stages.evaluate import write_predictions

    final = run.external_dir / name
    tmp = run.external_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run.write_json(tmp / "external.json", summary)
    run.write_json(tmp / "shift.json", shift)
    write_predictions(tmp / "predictions.csv", rows, run.plan)
    if ood is not None:
        scores, inside = ood
        write_rows(
            tmp / "ood.csv",
            [
                {"index": i, "ood_score": f"{s:.6f}", "in_distribution": bool(v)}
                for i, (s, v) in enumerate(zip(scores, inside, strict=True))
            ],
        )
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final
