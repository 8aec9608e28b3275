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
from medlens.run import Run, write_rows

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
    keys = {split: image_keys(ds.splits[split].images) for split in logits}
    folds = None
    if run.is_cross_validation():
        # the ensemble has seen every train and val image: what stands for val (calibration,
        # the cross-validated estimate) are the out-of-fold predictions of train+val
        logits["val"], keys["val"], folds = out_of_fold(run, ds, device)
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
    (val_z, val_y, _), (test_z, test_y, _) = logits["val"], logits["test"]
    trust = trust_analysis(
        val_z, val_y, test_z, test_y, task=task, label_names=recipe.data.label_names,
        positive=positive_index(recipe), n_boot=ev.bootstrap, ci=ev.ci, seed=recipe.train.seed,
        conformal_alpha=ev.conformal_alpha, conformal_method=ev.conformal_method,
        target_sensitivity=ev.target_sensitivity, target_specificity=ev.target_specificity,
        subgroups=ev.subgroups, test_patients=test.patients, test_meta=test.meta,
        val_keys=keys["val"], test_keys=keys["test"],
    )  # fmt: skip
    # what calibration, operating points and conformal thresholds were fitted on
    trust["fitted_on"] = "val" if folds is None else f"{len(val_y)} out-of-fold predictions"
    if folds is not None:
        out["cross_validation"] = cross_validation_summary(run, logits["val"], folds, trust)
    run.write_json(run.metrics_file, out)
    run.write_json(run.trust_file, trust)
    record = calibration_record(trust, task)
    run.write_json(run.calibration_file, record)
    rows = []
    for split, (z, labels, _) in logits.items():
        split_rows = prediction_rows(split, labels, z, recipe, record, keys[split])
        if folds is not None and split == "val":
            write_oof_predictions(run, split_rows, folds, recipe)
        else:
            rows.extend(split_rows)
    write_predictions(run.predictions_file, rows, recipe)
    write_ood_guard(run, model, ds, device)
    return out


def write_ood_guard(run: Run, model, ds: ArrayDataset, device) -> None:
    """Fit the out-of-distribution guard on the run's own features (ood.json, ood.npz)."""
    from medlens.analyse.ood_guard import fit_guard, write_guard

    record, stats = fit_guard(model, run.plan, ds, device)
    write_guard(run, record, stats)


def out_of_fold(run: Run, ds: ArrayDataset, device) -> tuple[tuple, np.ndarray, np.ndarray]:
    """((logits, labels, images/s), keys, fold) of every train and val image (train first),
    each predicted by the fold model that did not train on it."""
    from medlens.data.folds import fold_dataset, fold_ids, pooled

    pool = pooled(ds)
    z = np.zeros((len(pool), run.plan.data.n_classes), dtype=np.float32)
    members = run.members()
    fold = members[0].plan.data.fold
    folds = fold_ids(ds, fold.k, fold.seed)
    speeds = []
    for i, member in enumerate(members):
        fold = member.plan.data.fold
        model, _ = member.load_model(device)
        data = fold_dataset(ds, fold.k, fold.index, fold.seed)
        zi, _, speed = split_logits(model, member.plan, data, device, splits=("val",))["val"]
        z[folds == i] = zi
        speeds.append(speed)
    return (z, pool.labels, float(np.mean(speeds))), image_keys(pool.images), folds


def cross_validation_summary(
    run: Run, oof: tuple, folds: np.ndarray, trust: dict[str, Any]
) -> dict[str, Any]:
    """Each fold's val (its held-out fold) and test metrics, their mean and spread over the
    folds, and the out-of-fold estimate with its bootstrap CI."""
    from medlens.evaluate.bootstrap import bootstrap_metrics

    recipe = run.plan
    per_fold = []
    for i, member in enumerate(run.members()):
        m = member.metrics()
        per_fold.append({"fold": i, "n_val": int((folds == i).sum()), **fold_scores(m)})
    keys = ("val_acc", "val_auc", "test_acc", "test_auc")
    spread = {
        k: {
            "mean": float(np.mean([f[k] for f in per_fold])),
            "sd": float(np.std([f[k] for f in per_fold], ddof=1)),
        }
        for k in keys
    }
    z, y, _ = oof
    ev = recipe.evaluate
    ci = bootstrap_metrics(
        y, probabilities(z, recipe.data.task), recipe.data.task, n_boot=ev.bootstrap,
        ci=ev.ci, seed=recipe.train.seed, positive=positive_index(recipe),
    )  # fmt: skip
    return {
        "k": len(per_fold),
        "val": "out-of-fold predictions of every train and val image",
        "folds": per_fold,
        "spread": spread,
        "oof_ci": {k: ci[k] for k in ("acc", "auc") if k in ci},
        "ci_level": ev.ci,
        "temperature_fitted_on": trust["fitted_on"],
        "temperature": trust["calibration"]["temperature"],
    }


def fold_scores(metrics: dict[str, Any]) -> dict[str, float]:
    """ACC and AUC of one member's metrics.json, on its val and test splits."""
    return {f"{s}_{k}": metrics[s][k] for s in ("val", "test") for k in ("acc", "auc")}


def write_oof_predictions(run: Run, rows: list, folds: np.ndarray, recipe: Plan) -> None:
    """oof_predictions.csv: predictions.csv's columns, split "oof", and each image's fold."""
    header = ["split", "index", "label", "predicted"]
    header += [f"p_{n}" for n in recipe.data.label_names] + ["confidence", "prediction_set"]
    dicts = []
    for row, fold in zip(rows, folds.tolist(), strict=True):
        entry = dict(zip(header, row, strict=True))
        dicts.append({**entry, "split": "oof", "fold": fold})
    write_rows(run.oof_predictions_file, dicts)


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
