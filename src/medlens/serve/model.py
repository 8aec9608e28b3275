"""A trained run loaded once for serving: an uploaded image's bytes in, a prediction out.

>>> served = ServedModel("runs/breastmnist")  # doctest: +SKIP
>>> served.predict(Path("case.png").read_bytes())["prediction_set"]  # doctest: +SKIP
['malignant']
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlens.analyse.layers import choose_target_layer
from medlens.analyse.ood_guard import NO_GUARD, OodGuard, case_features, case_flags
from medlens.analyse.overlay import image_and_overlay, png_data_uri
from medlens.analyse.saliency import saliency_maps
from medlens.data.loader import unlabelled_arrays
from medlens.errors import DataError, ImageTooLargeError, UnsupportedImageError, UploadError
from medlens.evaluate.conformal import image_keys
from medlens.evaluate.metrics import predict_labels
from medlens.evaluate.outputs import calibrated_outputs, confidence, label_text
from medlens.run import Run

#: Pixels (voxels for a volume) an upload may decode to: 64 M, e.g. 8,000 x 8,000.
DEFAULT_MAX_PIXELS = 64_000_000
UPLOAD_NAME = "the upload"  # messages never quote the client's file name


class ServedModel:
    """One run, ready to answer: plan, weights (verified), calibration, and an ONNX Runtime
    session when the run has a current export.

    Logits come from ONNX Runtime when available (as ``medlens predict`` does), else from the
    PyTorch model; Grad-CAM (or attention rollout) always from the PyTorch model. Model calls
    are serialised by a lock: Grad-CAM hooks the shared model, and two cores gain nothing from
    running two forward passes at once.
    """

    def __init__(
        self, run_dir: str | Path, *, onnx: bool | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> None:
        from medlens.analyse.saliency import default_method
        from medlens.export.runtime import run_predictor

        self.run = Run.open(run_dir)
        self.recipe = self.run.plan
        self.task = self.recipe.data.task
        self.names = list(self.recipe.data.label_names)
        self.shape = self.run.input_shape()
        self.max_pixels = max_pixels
        self.record = self.run.calibration()
        self.device = torch.device("cpu")
        self.model, _ = self.run.load_model(self.device)  # refuses bad weights
        self.session = run_predictor(self.run.root, onnx)
        self.guard = OodGuard.load(self.run)
        self.method = default_method(self.model)
        self.layer = self._target_layer()
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return "onnxruntime" if self.session is not None else "pytorch"

    def _target_layer(self) -> str | None:
        if self.method == "rollout":
            return None
        blank = np.zeros((1, self.recipe.data.in_chans, *self.shape), dtype=np.uint8)
        return choose_target_layer(self.model, self._first(self._arrays(blank))).name

    @staticmethod
    def _first(arrays) -> torch.Tensor:
        """The first image of device arrays, as a normalised batch of one."""
        return next(arrays.batches(1))[0]

    def _arrays(self, images: np.ndarray):
        return unlabelled_arrays(self.recipe, images, self.device)

    def decode(self, data: bytes) -> tuple[np.ndarray, str]:
        """Upload bytes -> (the model's uint8 input, the kind read), or an :class:`UploadError`
        with the HTTP status to answer: 415 not an image, 413 too many pixels, 422 a volume
        for a 2D model (or the reverse), 400 a broken file."""
        image, kind, _ = self.decode_case(data)
        return image, kind

    def decode_case(self, data: bytes) -> tuple[np.ndarray, str, str | None]:
        """:meth:`decode`, and why the file's header contradicts the run's modality (or None)."""
        from medlens.data.images import check_dims, modality_conflict, model_input
        from medlens.data.readers import read_image_bytes

        try:
            img = read_image_bytes(data, UPLOAD_NAME, max_pixels=self.max_pixels)
        except UnsupportedImageError as exc:
            raise UploadError(exc.message, exc.hint, status=415) from None
        except ImageTooLargeError as exc:
            raise UploadError(exc.message, exc.hint, status=413) from None
        except DataError as exc:
            raise UploadError(exc.message, exc.hint, status=400) from None
        try:
            check_dims(img, self.recipe.data.spatial_dims, UPLOAD_NAME)
        except DataError as exc:
            raise UploadError(exc.message, exc.hint, status=422) from None
        conflict = modality_conflict(img, self.recipe.data.modality)
        try:
            return model_input(img, self.recipe, self.shape, UPLOAD_NAME), img.kind, conflict
        except DataError as exc:
            raise UploadError(exc.message, exc.hint, status=400) from None

    def predict(self, data: bytes, heatmap: bool = True) -> dict[str, Any]:
        """Calibrated probabilities, confidence, prediction set and (``heatmap``) the input
        and its saliency overlay as PNG data URIs, for one uploaded image."""
        start = time.perf_counter()
        image, kind, conflict = self.decode_case(data)
        arrays = self._arrays(image[None])
        with self._lock:
            logits = self._logits(arrays)
            result = self._result(logits, image[None])
            result.update(self._ood(image[None], logits, conflict))
            if heatmap:
                target = self.names.index(result["top_class"])
                result["heatmap"] = self._heatmap(arrays, image, target)
        result["input"] = {"kind": kind, "model_input_shape": list(image.shape)}
        result["seconds"] = round(time.perf_counter() - start, 4)
        return result

    def _logits(self, arrays) -> np.ndarray:
        from medlens.inference import predict_logits

        if self.session is not None:
            return self.session.predict_logits(arrays, 1)
        return predict_logits(self.model, arrays, 1, False)[0]

    def _result(self, logits: np.ndarray, images: np.ndarray) -> dict[str, Any]:
        probs, sets = calibrated_outputs(logits, self.record, image_keys(images))
        p = probs[0]
        pred = predict_labels(probs, self.task)[0]
        multi = self.task == "multi-label"
        out: dict[str, Any] = {
            "predicted": label_text(self.names, pred, self.task),
            "top_class": self.names[int(np.argmax(p))],
            "probabilities": {n: round(float(v), 6) for n, v in zip(self.names, p, strict=True)},
            "confidence": round(confidence(p, self.task), 6),
            "calibrated": float(self.record["temperature"]) != 1.0,
            "prediction_set": None,
        }
        if multi:
            out["predicted"] = [n for n in out["predicted"].split(";") if n]
        if sets is not None:
            conformal = self.record["conformal"]
            out["prediction_set"] = [n for n, on in zip(self.names, sets[0], strict=True) if on]
            out["set_coverage"] = round(1.0 - float(conformal["alpha"]), 4)
        return out

    def _ood(self, images: np.ndarray, logits: np.ndarray, conflict: str | None) -> dict:
        """``in_distribution`` and the guard's numbers for one case."""
        features = None
        if self.guard is not None:
            features, _ = case_features(self.model, self.recipe, images, self.device)
        flag = case_flags(self.guard, features, logits, [conflict])[0]
        ood: dict[str, Any] = {"score": flag["ood_score"], "reason": flag.get("ood_reason")}
        if self.guard is None:
            ood["note"] = NO_GUARD
        else:
            ood.update(method=self.guard.method, threshold=round(self.guard.threshold, 6))
        return {"in_distribution": flag["in_distribution"], "ood": ood}

    def _heatmap(self, arrays, image: np.ndarray, target: int) -> dict[str, Any]:
        x = self._first(arrays)
        cam = saliency_maps(self.model, x, [target], self.method, self.layer)[0].numpy()
        shown, overlay = image_and_overlay(image, cam)
        return {
            "method": self.method,
            "layer": self.layer,
            "target": self.names[target],
            "input_png": png_data_uri(shown, 256),
            "overlay_png": png_data_uri(overlay, 256),
        }

    def card(self) -> dict[str, Any]:
        """What GET /model answers: the model, its data, its test metrics and calibration, and
        the model card (``model_card.md``, written by ``medlens report``) when there is one."""
        recipe, run = self.recipe, self.run
        metrics = run.metrics() if run.metrics_file.is_file() else {}
        card_md = run.root / "model_card.md"
        return {
            "run": run.root.name,
            "model": recipe.model.name,
            "dataset": recipe.data.source,
            "task": self.task,
            "labels": self.names,
            "positive_class": recipe.evaluate.positive_class,
            "input": {"channels": recipe.data.in_chans, "shape": list(self.shape)},
            "backend": self.backend,
            "explanation": {"method": self.method, "layer": self.layer},
            "calibration": {
                "version": self.record.get("version", "v1"),
                **{
                    k: v
                    for k, v in self.record.items()
                    if k in ("temperature", "conformal", "operating_points", "source")
                },
            },
            "ood_guard": None
            if self.guard is None
            else {
                "method": self.guard.method,
                "threshold": self.guard.threshold,
                "false_alarm_on_val": self.guard.false_alarm,
            },
            "test_metrics": metrics.get("test"),
            "model_card": card_md.read_text() if card_md.is_file() else None,
        }
