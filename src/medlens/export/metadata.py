"""What an exported model carries so it can be used on its own (ONNX ``metadata_props``).

Every value is stored as JSON text under a plain key:

==================  ===========================================================
key                 value
==================  ===========================================================
medlens_version     the medlens version that exported it
model, dataset      the run's model name and dataset
task                binary-class, multi-class or multi-label
label_names         one name per output
input_shape         ["batch", C, H, W] (or ["batch", C, D, H, W])
input               how to make the input: (uint8 / 255 - mean) / std
mean, std           per-channel normalisation (0-1 scale)
output              "logits"
temperature         the run's fitted temperature (1.0 when not calibrated)
calibration         calibration.json (temperature, conformal threshold), when present
precision           fp32 or int8
checkpoint_sha256   SHA-256 of the best.safetensors it was exported from
==================  ===========================================================
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medlens import __version__
from medlens.config import Plan
from medlens.export.packages import require_onnx


def run_metadata(
    recipe: Plan,
    image_shape: tuple[int, ...],
    calibration: dict[str, Any] | None,
    checkpoint_sha256: str | None,
    dataset: str,
) -> dict[str, Any]:
    """The metadata of a run's export (values not yet encoded)."""
    d = recipe.data
    meta: dict[str, Any] = {
        "medlens_version": __version__,
        "model": recipe.model.name,
        "dataset": dataset,
        "task": d.task,
        "label_names": list(d.label_names),
        "input_shape": ["batch", d.in_chans, *map(int, image_shape)],
        "input": "(uint8 / 255 - mean) / std, float32, channels first",
        "mean": list(d.mean),
        "std": list(d.std),
        "output": "logits",
        "temperature": float(calibration["temperature"]) if calibration else 1.0,
        "precision": "fp32",
        "checkpoint_sha256": checkpoint_sha256,
    }
    if calibration:
        meta["calibration"] = calibration
    return meta


def encode_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """JSON-encode every value (ONNX metadata values are strings)."""
    return {k: json.dumps(v) for k, v in meta.items()}


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    """Inverse of :func:`encode_metadata`; values that are not JSON stay strings."""
    out: dict[str, Any] = {}
    for k, v in props.items():
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            out[k] = v
    return out


def write_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Store ``meta`` in the ONNX file's ``metadata_props`` (replacing medlens' keys)."""
    onnx = require_onnx()
    model = onnx.load(str(path))
    keep = {p.key: p.value for p in model.metadata_props if p.key not in meta}
    onnx.helper.set_model_props(model, {**keep, **encode_metadata(meta)})
    model.doc_string = f"medlens {meta.get('model')} on {meta.get('dataset')}: logits"
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded medlens metadata of an exported ONNX file."""
    onnx = require_onnx()
    model = onnx.load(str(path), load_external_data=False)
    return decode_metadata({p.key: p.value for p in model.metadata_props})
