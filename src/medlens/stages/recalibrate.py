"""``medlens recalibrate RUN --on DATA --fraction 0.3``: local recalibration for a new site.

A patient-level part (``fraction``) of the site's labelled images refits the temperature, the
operating-point thresholds (the same targets as the run's) and the conformal threshold; the
rest of the site's images judge the old and the new calibration side by side. The new record
becomes ``calibration.json`` (what ``predict``, ``export`` and ``serve`` apply), with a version
name; every version, the first included, is kept in ``calibrations/``. Everything is checked
before anything is written: a failed command leaves the run as it was.

>>> result = recalibrate("runs/pneumonia", "site_b/", fraction=0.3)  # doctest: +SKIP
>>> result["held_out"]["new"]["calibration"]["after"]["ece"]  # doctest: +SKIP
0.031
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import GroupShuffleSplit

from medlens.errors import ConfigError
from medlens.evaluate.calibration import fit_temperature, probabilities
from medlens.evaluate.conformal import ConformalPredictor, image_keys
from medlens.evaluate.operating import threshold_for
from medlens.run import Run
from medlens.stages.evaluate import as_run
from medlens.stages.external import external_set, judged_site, operating_points_in_use

MIN_CASES = 20  # on each side of the split: fewer give no usable threshold or estimate


def site_split(
    n: int, fraction: float, patients: np.ndarray | None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) indices: ``fraction`` of the patients (of the images when there are no
    ids) to fit on, whole patients on one side only.

    >>> fit, rest = site_split(100, 0.3, None)
    >>> len(fit), len(rest)
    (30, 70)
    """
    if not 0 < fraction < 1:
        raise ConfigError(
            f"--fraction must be between 0 and 1 (exclusive), got {fraction}",
            hint="e.g. --fraction 0.3 fits on 30% of the site's patients",
        )
    groups = patients if patients is not None else np.arange(n)
    splitter = GroupShuffleSplit(n_splits=1, train_size=fraction, random_state=seed)
    fit, rest = next(splitter.split(np.zeros(n), groups=groups))
    if min(len(fit), len(rest)) < MIN_CASES:
        raise ConfigError(
            f"--fraction {fraction} leaves {len(fit)} images to fit on and {len(rest)} to "
            f"judge on; each side needs at least {MIN_CASES}",
            hint="use a fraction nearer 0.5, or a larger labelled set from the site",
        )
    return np.sort(fit), np.sort(rest)


def refit_record(
    record: dict[str, Any],
    points: list[dict[str, Any]],
    logits: np.ndarray,
    y: np.ndarray,
    keys: np.ndarray,
    task: str,
    names: list[str],
) -> dict[str, Any]:
    """A calibration record refitted on a site's cases: temperature, thresholds, sets."""
    t = fit_temperature(logits, y, task)
    new: dict[str, Any] = {"task": task, "temperature": t}
    p = probabilities(logits, task, t)
    refit = []
    for point in points:
        j = names.index(point["positive_class"])
        threshold = threshold_for((y == j).astype(int), p[:, j], point["target"], point["value"])
        refit.append({**point, "threshold": threshold})
    if refit:
        new["operating_points"] = refit
    if "conformal" in record:
        c = record["conformal"]
        cp = ConformalPredictor.fit(
            p, y, alpha=c["alpha"], method=c["method"], lam=c["lam"], k_reg=c["k_reg"],
            seed=c["seed"], keys=keys,
        )  # fmt: skip
        new["conformal"] = cp.to_dict()
    return new


def versions(run: Run) -> list[Path]:
    """The kept calibration versions, oldest first."""
    d = run.calibrations_dir
    return (
        sorted(d.glob("v*.json"), key=lambda p: int(p.stem[1:].split("-")[0])) if d.is_dir() else []
    )


def recalibrate(
    run_dir: str | Path | Run,
    source: str,
    *,
    fraction: float = 0.3,
    label_map: dict[str, str] | None = None,
    name: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Refit the run's calibration on part of a site's data; returns recalibration.json."""
    from medlens.device import resolve_device
    from medlens.inference import predict_logits

    run = as_run(run_dir)
    recipe = run.plan
    task, names = recipe.data.task, recipe.data.label_names
    if task == "multi-label":
        raise ConfigError(
            "recalibrate refits softmax temperature, thresholds and sets: not for multi-label runs",
            hint="evaluate the site with `medlens evaluate RUN --on DATA` instead",
        )
    if not 0 < fraction < 1:  # before the site's images are read
        site_split(MIN_CASES * 4, fraction, None)
    ext = external_set(
        run, source, label_map=label_map, name=name, data_dir=data_dir, download=download
    )
    fit, rest = site_split(len(ext.labels), fraction, ext.patients, seed)
    if len(np.unique(ext.labels[fit])) < 2:
        raise ConfigError(
            f"the {len(fit)} images to fit on hold one class only",
            hint="recalibration needs both classes on each side: use a larger fraction",
        )
    from medlens.data.loader import unlabelled_arrays

    device = resolve_device(recipe.train.device)
    model, _ = run.load_model(device)
    data = unlabelled_arrays(recipe, ext.images, device)
    logits, _, _ = predict_logits(model, data, recipe.train.eval_batch_size, recipe.train.amp)
    keys = image_keys(ext.images)
    old = run.calibration()
    points = [
        {k: p[k] for k in ("positive_class", "target", "value", "threshold")}
        for p in operating_points_in_use(run, old)
    ]
    y = ext.labels
    new = refit_record(old, points, logits[fit], y[fit], keys[fit], task, names)
    previous = versions(run)
    number = len(previous) + (1 if previous else 2)
    new.update(
        version=f"v{number}",
        source=f"medlens recalibrate on {ext.name} ({len(fit)} images, fraction {fraction})",
        previous=old.get("version", "v1"),
        time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    groups = None if ext.patients is None else ext.patients[rest]

    def judged(record: dict[str, Any]) -> dict[str, Any]:
        return judged_site(
            run, logits[rest], y[rest], keys[rest], record, patients=groups, seed=seed
        )

    result = {
        "site": ext.name,
        "source": ext.source,
        "fraction": fraction,
        "n_fit": len(fit),
        "n_held_out": len(rest),
        "split": "patients" if ext.patients is not None else "images",
        "version": new["version"],
        "held_out": {"previous": judged(old), "new": judged(new)},
    }
    # every check has passed: keep the old version, then put the new one in use
    run.calibrations_dir.mkdir(exist_ok=True)
    if not previous:
        run.write_json(run.calibrations_dir / "v1.json", {"version": "v1", **old})
    stem = f"v{number}-{ext.name}"
    run.write_json(run.calibrations_dir / f"{stem}.json", new)
    out_dir = run.external_dir / ext.name
    out_dir.mkdir(parents=True, exist_ok=True)
    run.write_json(out_dir / f"recalibration-{new['version']}.json", result)
    run.write_json(run.calibration_file, new)
    return result
