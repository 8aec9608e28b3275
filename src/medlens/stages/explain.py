"""``medlens explain``: saliency maps, overlays and faithfulness scores for a trained run.

>>> rows = explain("runs/blobs", ["scan1.png", "scans/"], "out")  # doctest: +SKIP
>>> rows[0]["predicted"], rows[0]["peak_row"], rows[0]["peak_col"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlens.analyse.faithfulness import faithfulness_scores
from medlens.analyse.layers import choose_target_layer
from medlens.analyse.maps import peak_location
from medlens.analyse.overlay import save_side_by_side
from medlens.analyse.saliency import check_method, default_method, saliency_maps
from medlens.data.loader import unlabelled_arrays
from medlens.errors import ConfigError
from medlens.evaluate.conformal import image_keys
from medlens.evaluate.outputs import calibrated_outputs
from medlens.run import Run, write_rows
from medlens.stages.evaluate import as_run

FAITHFULNESS_KEYS = ("deletion", "insertion", "random_deletion", "random_insertion")


def _png_names(files: list[Path], method: str) -> list[str]:
    """``<stem>_<method>.png`` per file; a stem seen before gets ``-2``, ``-3``, ..."""
    seen: dict[str, int] = {}
    names = []
    for f in files:
        seen[f.stem] = seen.get(f.stem, 0) + 1
        suffix = f"-{seen[f.stem]}" if seen[f.stem] > 1 else ""
        names.append(f"{f.stem}{suffix}_{method}.png")
    return names


def explain(
    run_dir: str | Path | Run,
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    method: str | None = None,
    target_layer: str | None = None,
    faithfulness: bool = False,
) -> list[dict[str, Any]]:
    """Saliency maps for image files (or folders of them) with a trained run's best weights.

    Files are read and preprocessed as ``medlens predict`` reads them. Each map explains the
    predicted class (for multi-label runs: the most probable label). Writes
    ``<stem>_<method>.png`` (image | overlay) per file and ``explanations.csv`` into
    ``output_dir``, and returns the CSV's rows: path, predicted, probability, method, layer,
    the peak (``peak_row``/``peak_col``, plus ``peak_slice`` for volumes, in the model's input
    grid), the PNG and, with ``faithfulness``, deletion/insertion areas of the map and of a
    random map.
    """
    from medlens.data.images import expand_inputs, read_inputs
    from medlens.device import resolve_device
    from medlens.inference import predict_logits

    if method is not None:
        check_method(method)
    run = as_run(run_dir)
    recipe = run.plan
    files = expand_inputs(list(inputs))
    images = read_inputs(files, recipe, run.input_shape())
    device = resolve_device(recipe.train.device)
    model, _ = run.load_model(device)
    method = method or default_method(model)
    if method == "rollout" and target_layer is not None:
        raise ConfigError(
            "--layer applies to gradcam and gradcam++ only",
            hint="drop --layer, or use --method gradcam",
        )
    task = recipe.data.task
    data = unlabelled_arrays(recipe, images, device)
    logits, _, _ = predict_logits(model, data, recipe.train.eval_batch_size, recipe.train.amp)
    probs, _ = calibrated_outputs(logits, run.calibration(), image_keys(images))  # as predict
    targets = probs.argmax(axis=1)
    layer = None
    if method != "rollout":
        first = next(data.batches(1))[0]
        layer = choose_target_layer(model, first, target_layer).name
    maps, scores = [], []
    batch = 32 if recipe.data.spatial_dims == 2 else 4
    for start, (x, _) in zip(range(0, len(files), batch), data.batches(batch), strict=True):
        t = torch.as_tensor(targets[start : start + len(x)], device=device)
        m = saliency_maps(model, x, t, method=method, target_layer=layer)
        maps.append(m)
        if faithfulness:
            scores.append(faithfulness_scores(model, x, m, t, task=task))
    all_maps = torch.cat(maps).numpy()
    faith = {k: np.concatenate([s[k] for s in scores]) for k in FAITHFULNESS_KEYS} if scores else {}
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = recipe.data.label_names
    rows: list[dict[str, Any]] = []
    for i, (f, png) in enumerate(zip(files, _png_names(files, method), strict=True)):
        peak = peak_location(all_maps[i])
        k = int(targets[i])
        row: dict[str, Any] = {
            "path": str(f),
            "predicted": names[k],
            "probability": round(float(probs[i, k]), 6),
            "method": method,
            "layer": layer or "",
        }
        if len(peak) == 3:
            row["peak_slice"] = peak[0]
        row["peak_row"], row["peak_col"] = peak[-2], peak[-1]
        for key, values in faith.items():
            row[key] = round(float(values[i]), 6)
        row["png"] = str(save_side_by_side(out / png, images[i], all_maps[i]))
        rows.append(row)
    write_rows(out / "explanations.csv", rows)
    return rows
