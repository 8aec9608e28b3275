"""``medlens predict``: calibrated probabilities and a conformal set for new image files.

>>> rows = predict("runs/breastmnist-small_cnn", ["scan1.png", "scans/"])  # doctest: +SKIP
>>> rows[0]["predicted"], rows[0]["confidence"], rows[0]["prediction_set"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medlens.evaluate.conformal import image_keys
from medlens.evaluate.metrics import predict_labels
from medlens.evaluate.outputs import calibrated_outputs, confidence, label_text, set_text
from medlens.run import Run, write_rows
from medlens.stages.evaluate import as_run


def predict(
    run_dir: str | Path | Run,
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
    conformal prediction set, when the run has been evaluated (calibration.json). Each row has
    ``ood_score`` and ``in_distribution`` from the run's out-of-distribution guard (ood.json;
    None for a run evaluated before there was one) and, for a flagged case, ``ood_reason``;
    a DICOM whose Modality contradicts the run's is flagged whatever its score.
    ``onnx``: logits from ``<run>/export/model.onnx`` on ONNX Runtime (None: when that export
    exists, onnxruntime is installed and it matches best.safetensors; False: PyTorch).
    """
    from medlens.analyse.ood_guard import OodGuard, case_features, case_flags
    from medlens.data.images import expand_inputs, read_cases
    from medlens.data.loader import unlabelled_arrays
    from medlens.device import resolve_device
    from medlens.export.runtime import run_predictor
    from medlens.inference import predict_logits

    run = as_run(run_dir)
    recipe = run.plan
    task = recipe.data.task
    files = expand_inputs(list(inputs))
    images, conflicts = read_cases(files, recipe, run.input_shape())
    session = run_predictor(run.root, onnx)
    device = resolve_device("cpu" if session is not None else recipe.train.device)
    data = unlabelled_arrays(recipe, images, device)
    if session is not None:  # the run's ONNX export on ONNX Runtime
        logits = session.predict_logits(data, recipe.train.eval_batch_size)
    else:
        model, _ = run.load_model(device)
        logits, _, _ = predict_logits(model, data, recipe.train.eval_batch_size, recipe.train.amp)
    guard, features = OodGuard.load(run), None
    if guard is not None:  # features come from the PyTorch model, whichever gave the logits
        guard_model = model if session is None else run.load_model(device)[0]
        features, _ = case_features(guard_model, recipe, images, device)
    flags = case_flags(guard, features, logits, conflicts)
    probs, sets = calibrated_outputs(logits, run.calibration(), image_keys(images))
    pred = predict_labels(probs, task)
    names = recipe.data.label_names
    results = []
    for i, f in enumerate(files):
        row = {
            "path": str(f),
            "predicted": label_text(names, pred[i], task),
            "confidence": confidence(probs[i], task),
            **{f"p_{n}": float(v) for n, v in zip(names, probs[i], strict=True)},
        }
        if sets is not None:
            row["prediction_set"] = set_text(names, sets[i])
        row.update(flags[i])
        results.append(row)
    if heatmaps is not None:
        from medlens.stages.explain import explain

        for row, explained in zip(results, explain(run, files, heatmaps), strict=True):
            row["heatmap"] = explained["png"]
    if output is not None:
        write_rows(Path(output), results)
    return results
