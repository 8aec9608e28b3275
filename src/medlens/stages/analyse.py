"""``medlens analyse``: what needs the model, measured once and kept in the run directory.

Writes ``robustness.json`` (test AUC under five corruptions at five severities),
``uncertainty.json`` (test-time augmentation and MC dropout: selective prediction) and
``gallery/`` (saliency overlays of the most confident right and wrong test cases, with
``gallery.json``). Each file records the SHA-256 of the checkpoint it measured, so a later call
(and ``medlens report``) redoes only what is missing or stale.

>>> analyse("runs/breastmnist-small_cnn", gallery=4)  # doctest: +SKIP
['robustness', 'uncertainty', 'gallery']
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from medlens.errors import MedlensError
from medlens.progress import Reporter, SilentReporter
from medlens.run import Run
from medlens.stages.evaluate import as_run

ANALYSES = ("robustness", "uncertainty", "gallery")
ROBUSTNESS_CASES = 2000  # test cases sampled for the corruption table
GALLERY_MIN_SIDE = 160  # gallery PNGs are enlarged to at least this many pixels


def analysis_file(run: Run, name: str) -> Path:
    """Where the analysis ``name`` (one of :data:`ANALYSES`) is kept."""
    return {
        "robustness": run.robustness_file,
        "uncertainty": run.uncertainty_file,
        "gallery": run.gallery_file,
    }[name]


def stale_analyses(run: Run, wanted: dict[str, Any]) -> list[str]:
    """The analyses of ``wanted`` (name -> setting; a false setting is not wanted) whose file is
    missing, measured another checkpoint, or (gallery) holds another number of cases."""
    digest = run.checkpoint_digest()
    stale = []
    for name, setting in wanted.items():
        if not setting:
            continue
        path = analysis_file(run, name)
        saved = run.read_json(path) if path.is_file() else None
        if (
            saved is None
            or saved.get("checkpoint_sha256") != digest
            or (name == "gallery" and saved.get("per_group") != setting)
        ):
            stale.append(name)
    return stale


def analyse(
    run_dir: str | Path | Run,
    *,
    robustness: bool = True,
    uncertainty: bool = True,
    gallery: int = 6,
    refresh: bool = False,
    data_dir: str | None = None,
    download: bool = True,
    reporter: Reporter | None = None,
) -> list[str]:
    """Measure the wanted analyses that are missing or stale (all of them with ``refresh``);
    returns the names of those measured. ``gallery``: cases per group (right, wrong); 0: none."""
    from medlens.analyse.gallery import gallery_cases
    from medlens.analyse.overlay import enlarged
    from medlens.analyse.summaries import robustness_summary, uncertainty_summary
    from medlens.device import resolve_device

    reporter = reporter or SilentReporter()
    run = as_run(run_dir)
    wanted = {"robustness": robustness, "uncertainty": uncertainty, "gallery": gallery}
    todo = [n for n, on in wanted.items() if on] if refresh else stale_analyses(run, wanted)
    if not todo:
        return []
    plan = run.plan
    test = run.data(data_dir, download, reporter).splits["test"]
    device = resolve_device(plan.train.device)
    model, _ = run.load_model(device)
    digest = {"checkpoint_sha256": run.checkpoint_digest()}
    if "robustness" in todo:
        reporter.message("analyse: test AUC under corruptions")
        summary = robustness_summary(model, plan, test, device, ROBUSTNESS_CASES, seed=0)
        run.write_json(run.robustness_file, {**summary, **digest})
    if "uncertainty" in todo:
        reporter.message("analyse: test-time augmentation and MC dropout")
        summary = uncertainty_summary(model, plan, test, device, seed=plan.train.seed)
        run.write_json(run.uncertainty_file, {**summary, **digest})
    if "gallery" in todo:
        reporter.message("analyse: explanation gallery")
        shutil.rmtree(run.gallery_dir, ignore_errors=True)
        run.gallery_dir.mkdir(parents=True)
        record: dict[str, Any] = {"per_group": gallery, **digest, "method": None, "groups": []}
        try:
            method, groups = gallery_cases(model, plan, test, device, gallery)
        except MedlensError as exc:  # e.g. a model no explanation method fits
            record["error"] = exc.message
        else:
            record["method"] = method
            for g, group in enumerate(groups):
                cases = []
                for j, case in enumerate(group["cases"]):
                    png = f"group{g}-{j}.png"
                    Image.fromarray(enlarged(case["rgb"], GALLERY_MIN_SIDE)).save(
                        run.gallery_dir / png
                    )
                    cases.append({"png": png, "caption": case["caption"], "index": case["index"]})
                record["groups"].append({"title": group["title"], "cases": cases})
        run.write_json(run.gallery_file, record)
    return todo
