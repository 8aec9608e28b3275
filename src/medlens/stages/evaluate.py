"""``medlens evaluate``: the best checkpoint on val and test, qualified.

Writes metrics.json, predictions.csv, trust.json (calibration, CIs, operating points, conformal
sets, subgroups), calibration.json (what ``predict`` applies to new cases) and the
out-of-distribution guard (ood.json, ood.npz). The numbers come
from the array functions of :mod:`medlens.evaluate`; this stage only runs the model.

>>> metrics = evaluate_run("runs/breastmnist-small_cnn")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from medlens.config import Plan, positive_index
from medlens.data.dataset import ArrayDataset
from medlens.evaluate.calibration import probabilities
from medlens.evaluate.conformal import image_keys
from medlens.evaluate.metrics import classification_metrics, predict_labels
from medlens.evaluate.outputs import calibrated_outputs, confidence, label_text, set_text
from medlens.evaluate.trust import section, trust_analysis
from medlens.run import Run

EVALUATED_SPLITS = ("val", "test")


def as_run(run: str | Path | Run, *, trained: bool = True) -> Run:
    """A :class:`Run` from a run or its path (opened and checked)."""
    return run if isinstance(run, Run) else Run.open(run, trained=trained)


def split_logits(
    model, plan: Plan, ds: ArrayDataset, device, splits=EVALUATED_SPLITS
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """(logits, labels, images/s) of ``model`` on each split, in order."""
    from medlens.data.loader import device_arrays
    from medlens.inference import predict_logits

    out = {}
    for split in splits:
        data = device_arrays(plan, ds.splits[split].images, ds.splits[split].labels, device)
        out[split] = predict_logits(model, data, plan.train.eval_batch_size, plan.train.amp)
    return out


def evaluate_run(
    run_dir: str | Path | Run,
    *,
    ds: ArrayDataset | None = None,
    data_dir: str | None = None,
    download: bool = True,
) -> dict[str, Any]:
    """Evaluate the best checkpoint on val and test; returns what metrics.json holds."""
    from medlens.device import resolve_device

    run = as_run(run_dir)
    if ds is not None:
        run.use_data(ds)
    ds = run.data(data_dir, download)
    recipe = run.plan
    task = recipe.data.task
    device = resolve_device(recipe.train.device)
    model, info = run.load_model(device)
    out: dict[str, Any] = {
        "dataset": ds.name,
        "model": recipe.model.name,
        "checkpoint": {"path": str(run.best), **info},
    }
    logits = split_logits(model, recipe, ds, device)
    for split, (z, labels, speed) in logits.items():
        metrics = classification_metrics(
            labels,
            probabilities(z, task),
            task,
            label_names=recipe.data.label_names,
            positive=positive_index(recipe),
        )
        metrics["inference_images_per_s"] = round(speed, 1)
        out[split] = metrics
    test, ev = ds.splits["test"], recipe.evaluate
    keys = {split: image_keys(ds.splits[split].images) for split in logits}
    (val_z, val_y, _), (test_z, test_y, _) = logits["val"], logits["test"]
    trust = trust_analysis(
        val_z, val_y, test_z, test_y, task=task, label_names=recipe.data.label_names,
        positive=positive_index(recipe), n_boot=ev.bootstrap, ci=ev.ci, seed=recipe.train.seed,
        conformal_alpha=ev.conformal_alpha, conformal_method=ev.conformal_method,
        target_sensitivity=ev.target_sensitivity, target_specificity=ev.target_specificity,
        subgroups=ev.subgroups, test_patients=test.patients, test_meta=test.meta,
        val_keys=keys["val"], test_keys=keys["test"],
    )  # fmt: skip
    run.write_json(run.metrics_file, out)
    run.write_json(run.trust_file, trust)
    record = calibration_record(trust, task)
    run.write_json(run.calibration_file, record)
    rows = []
    for split, (z, labels, _) in logits.items():
        rows.extend(prediction_rows(split, labels, z, recipe, record, keys[split]))
    write_predictions(run.predictions_file, rows, recipe)
    write_ood_guard(run, model, ds, device)
    return out


def write_ood_guard(run: Run, model, ds: ArrayDataset, device) -> None:
    """Fit the out-of-distribution guard on the run's own features (ood.json, ood.npz)."""
    from medlens.analyse.ood_guard import fit_guard, write_guard

    record, stats = fit_guard(model, run.plan, ds, device)
    write_guard(run, record, stats)


def calibration_record(trust: dict[str, Any], task: str) -> dict[str, Any]:
    """What predict needs to turn logits into calibrated probabilities and prediction sets."""
    record: dict[str, Any] = {"task": task, "temperature": trust["calibration"]["temperature"]}
    c = section(trust, "conformal")
    if c is not None:
        keys = ("method", "alpha", "qhat", "n_calibration", "lam", "k_reg", "seed")
        record["conformal"] = {k: c[k] for k in keys}
    return record


def prediction_rows(
    split: str,
    labels: np.ndarray,
    logits: np.ndarray,
    recipe: Plan,
    record: dict[str, Any],
    keys: np.ndarray | None = None,
) -> list:
    """One row per case: truth, prediction, raw probabilities, calibrated confidence, set."""
    task, names = recipe.data.task, recipe.data.label_names
    probs = probabilities(logits, task)
    calibrated, sets = calibrated_outputs(logits, record, keys)
    pred = predict_labels(probs, task)
    return [
        [
            split,
            i,
            label_text(names, labels[i], task),
            label_text(names, pred[i], task),
            *(f"{p:.6f}" for p in probs[i]),
            f"{confidence(calibrated[i], task):.6f}",
            "" if sets is None else set_text(names, sets[i]),
        ]
        for i in range(len(probs))
    ]


def write_predictions(path: Path, rows: list, recipe: Plan) -> None:
    """predictions.csv, written atomically."""
    header = ["split", "index", "label", "predicted"]
    header += [f"p_{n}" for n in recipe.data.label_names] + ["confidence", "prediction_set"]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)
