"""What a model costs: parameters, GFLOPs of one forward pass, CPU latency and throughput.

Every model is measured the same way: built from its plan in fp32 eval mode on the CPU (with the
plan's memory layout), fed real normalised test images; latency is the median time of a batch
of 1, throughput the images/s of a batch of 64 (:func:`medlens.export.speed.throughput`), with
the same number of CPU threads for every model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medlens.config import Plan
from medlens.errors import ModelError
from medlens.models.registry import count_parameters

LATENCY_BATCH = 1
THROUGHPUT_BATCH = 64
EDGE = 4  # pixels at the end of each axis that every model must respond to


def model_inputs(plan: Plan, images: np.ndarray) -> torch.Tensor:
    """uint8 images as the model's float32 CPU inputs, normalised as the plan says."""
    from medlens.data.loader import device_arrays

    data = device_arrays(plan, images, np.zeros(len(images), np.int64), torch.device("cpu"))
    return data.prepare(data.images)


def cpu_model(plan: Plan) -> nn.Module:
    """The plan's model (random weights) on the CPU in eval mode."""
    from medlens.models.build import build_model

    cpu_plan = plan.model_copy(
        update={"model": plan.model.model_copy(update={"pretrained": False})}
    )
    return build_model(cpu_plan, torch.device("cpu")).eval()


def gflops(model: nn.Module, example: torch.Tensor) -> float:
    """GFLOPs of one forward pass of one input (a multiply-add counts 2), by PyTorch's
    :class:`~torch.utils.flop_counter.FlopCounterMode`."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(example[:1])
    return counter.get_total_flops() / 1e9


def check_model_takes(plan: Plan, example: torch.Tensor) -> dict[str, Any]:
    """Build the plan's model and run one input through it; parameters and GFLOPs.

    Raises ModelError naming the model and the input shape when it cannot take the data
    (a ViT with a fixed image size, a CNN that shrinks 28 px to nothing).
    """
    name = plan.model.name
    shape = "x".join(map(str, example.shape[1:]))
    hint = (
        "drop it from --models, or use larger images (e.g. --size 64 or 224; a Vision "
        "Transformer needs a size its patch size divides)"
    )
    try:
        model = cpu_model(plan)
        flops = gflops(model, example)
        blind = ignores_the_edge(model, example)
    except ModelError:
        raise
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ModelError(
            f"model {name} cannot take this data's {shape} inputs ({reason})", hint=hint
        ) from exc
    if blind:
        raise ModelError(
            f"model {name} ignores part of this data's {shape} inputs: its output does not "
            f"change with the last {EDGE} pixels of each axis (a patch-16 ViT at 28 px sees "
            "one 16 px patch)",
            hint=hint,
        )
    return {"parameters": count_parameters(model), "gflops": round(flops, 6)}


def ignores_the_edge(model: nn.Module, example: torch.Tensor) -> bool:
    """Whether changing the last ``EDGE`` pixels along every spatial axis leaves the output
    unchanged: a model that crops its input (patches that do not tile the image) never sees
    them. The weights get a little noise first, since zero-initialised layers (the last norm
    of timm's residual blocks) hide pixels that the trained model would see."""
    import copy

    noisy = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in noisy.parameters():
            if p.is_floating_point():
                p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    x = example[:1].clone()
    edge = (slice(None), slice(None)) + (slice(-EDGE, None),) * (x.ndim - 2)
    y = x.clone()
    y[edge] = x[edge] + 3.0
    with torch.inference_mode():
        return bool(torch.equal(noisy(x), noisy(y)))


def cpu_speed(
    plan: Plan, inputs: torch.Tensor, seconds: float = 1.0, threads: int | None = None
) -> dict[str, Any]:
    """ms per image at batch 1 and images/s at batch 64, eager fp32 on the CPU, with
    ``threads`` intra-op threads (None: torch's current setting)."""
    from medlens.export.speed import batch_of, throughput, torch_runner

    model = cpu_model(plan)
    channels_last = plan.train.channels_last and inputs.ndim == 4
    run = torch_runner(model, channels_last=channels_last)
    array = inputs.contiguous().numpy()
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        b1 = throughput(run, batch_of(array, LATENCY_BATCH), seconds=seconds, min_runs=5, warmup=3)
        b64 = throughput(
            run, batch_of(array, THROUGHPUT_BATCH), seconds=seconds, min_runs=3, warmup=1
        )
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    return {"latency_ms": b1["latency_ms"], "images_per_s": b64["images_per_s"], "threads": used}
