"""PyTorch module -> ONNX file with a dynamic batch axis.

The ``torch.export``-based exporter (``dynamo=True``, PyTorch's default since 2.9) is tried
first: it handles timm CNNs and ViTs, medlens' small CNNs, the MedMNIST ResNets and the 3D
networks with torch 2.14. When it fails for a model, the TorchScript exporter (deprecated, but
still shipped) is tried before giving up.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import torch

from medlens.errors import ModelError

INPUT_NAME, OUTPUT_NAME = "input", "logits"
LEGACY_OPSET = 17


def _quiet():
    """Silence the exporters' warnings and progress prints."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


def _dynamo_export(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int | None):
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=True,
        verbose=False,
        external_data=False,
        optimize=True,
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch},),
    )


def _torchscript_export(
    model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int | None
):
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        opset_version=opset or LEGACY_OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        do_constant_folding=True,
    )


def export_module(
    model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int | None = None
) -> dict[str, Any]:
    """Export ``model`` (eval mode, fp32, CPU) to ``path``; returns exporter name and opset.

    ``example`` is a normalised batch of at least two images (a batch of one could be
    specialised into the graph). Raises ModelError when neither exporter manages.
    """
    from medlens.export.packages import require_onnx

    onnx = require_onnx()
    model = model.eval().float().to(memory_format=torch.contiguous_format)
    example = example.float().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for name, fn in (("dynamo", _dynamo_export), ("torchscript", _torchscript_export)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        try:
            with _quiet(), torch.inference_mode(False), torch.no_grad():
                fn(model, example, path, opset)
            onnx.checker.check_model(str(path))
        except Exception as exc:  # the exporters raise many kinds; report them together
            errors.append(f"{name}: {type(exc).__name__}: {str(exc).strip().splitlines()[0:1]}")
            continue
        proto = onnx.load(str(path), load_external_data=False)
        version = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        return {"exporter": name, "opset": version}
    raise ModelError(
        f"{type(model).__name__} could not be exported to ONNX ({'; '.join(errors)})",
        hint="try another --opset, or a model without custom operations",
    )
