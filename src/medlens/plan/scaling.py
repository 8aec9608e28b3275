"""The planner's device-aware rules: batch size from GPU memory, learning-rate scaling, compile.

Pure functions of the dataset's numbers and a :class:`DeviceFacts`, so that they are testable
without a GPU (``medlens.device.device_facts`` reads the facts of the GPU at hand).

Memory rule: a training step holds the activations saved for the backward pass, per image
``bytes_per_pixel(model) * pixels``. The constants below were measured on the CPU in fp32 with
``torch.autograd.graph.saved_tensors_hooks`` (bytes of saved tensors per input pixel, rounded
up). The batch is the largest power of two for which ``2 * batch * per_image`` (the factor 2
covers activation gradients, cuDNN workspaces and allocator slack; bf16 autocast roughly halves
the real figure, which is kept as margin) plus the weights, gradients and AdamW moments
(``4 * params``) fit in :data:`MEMORY_FRACTION` of the GPU's memory. The rest stays free for the
training images kept on the device and the evaluation batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MEMORY_FRACTION = 0.4
ACTIVATION_SLACK = 2.0
MAX_BATCH = 1024
MIN_STEPS_PER_EPOCH = 20
# image-passes x pixels above which torch.compile's ~1 minute of compiling pays for itself
COMPILE_MIN_PIXEL_PASSES = 5e8

# Saved activations per input pixel (bytes, fp32) and parameter bytes, measured on the CPU.
_BYTES_PER_PIXEL = {
    "resnet18_medmnist": 4700,  # stride-1 stem: 3.5 MiB per 28 px image
    "resnet18": 500,  # timm ResNet-18, stride-2 stem + max-pool: 21 MiB per 224 px image
    "resnet18_3d": 3400,  # MONAI 3D ResNet-18, stride-1 stem: 70 MiB per 28^3 volume
    "small_cnn": 650,
    "small_cnn_3d": 420,
}
_PARAM_BYTES = {
    "resnet18_medmnist": 45e6,
    "resnet18": 45e6,
    "resnet18_3d": 133e6,
    "small_cnn": 1.6e6,
    "small_cnn_3d": 4.7e6,
}
_UNKNOWN_BYTES_PER_PIXEL = 4700  # models the planner does not pick: assume the heaviest 2D one
_UNKNOWN_PARAM_BYTES = 133e6


@dataclass(frozen=True)
class DeviceFacts:
    """What the planner knows about the device: its kind, name and memory (bytes, per GPU).

    ``count`` is the number of processes that share the plan's (global) batch under torchrun.
    ``total_memory`` None means unknown: the planner then keeps its reference batch.
    """

    kind: str = "cpu"
    name: str = "cpu"
    total_memory: int | None = None
    count: int = 1


def image_memory(model: str, pixels: int) -> float:
    """Bytes one training image needs on the GPU (activations with slack)."""
    per_pixel = _BYTES_PER_PIXEL.get(model, _UNKNOWN_BYTES_PER_PIXEL)
    return ACTIVATION_SLACK * per_pixel * pixels


def fixed_memory(model: str) -> float:
    """Bytes of weights, gradients and the two AdamW moments."""
    return 4 * _PARAM_BYTES.get(model, _UNKNOWN_PARAM_BYTES)


def fits_memory(batch: int, model: str, pixels: int, facts: DeviceFacts) -> bool:
    """The memory budget rule: does ``batch`` (global, split over ``facts.count``) fit?"""
    if facts.total_memory is None:
        return True
    per_gpu = math.ceil(batch / max(1, facts.count))
    need = per_gpu * image_memory(model, pixels) + fixed_memory(model)
    return need <= MEMORY_FRACTION * facts.total_memory


def _pow2_floor(n: float) -> int:
    return 1 << max(0, math.floor(math.log2(max(1.0, n))))


def memory_batch(model: str, pixels: int, facts: DeviceFacts) -> int:
    """The largest power-of-two global batch that fits the memory rule (at least 1 per GPU)."""
    budget = MEMORY_FRACTION * facts.total_memory - fixed_memory(model)
    per_gpu = max(1.0, budget / image_memory(model, pixels))
    return _pow2_floor(per_gpu) * max(1, facts.count)


def choose_gpu_batch(
    ref_batch: int, n_train: int, model: str, pixels: int, facts: DeviceFacts
) -> tuple[int, str]:
    """(batch, reason) for a GPU: as large as memory allows, capped at :data:`MAX_BATCH` and at
    ``n_train / MIN_STEPS_PER_EPOCH``, but never below ``ref_batch`` unless memory forces it."""
    if facts.total_memory is None:
        return ref_batch, f"GPU memory unknown: the reference batch {ref_batch}"
    gib = facts.total_memory / 2**30
    by_memory = memory_batch(model, pixels, facts)
    by_data = _pow2_floor(n_train / MIN_STEPS_PER_EPOCH)
    batch = min(by_memory, max(ref_batch, min(by_data, MAX_BATCH)))
    why = (
        f"{facts.name} ({gib:.0f} GiB): memory allows {by_memory} "
        f"({image_memory(model, pixels) / 2**20:.1f} MiB per image for {model}, "
        f"{MEMORY_FRACTION:.0%} of the memory), {n_train} training images allow "
        f"{by_data} (>= {MIN_STEPS_PER_EPOCH} steps per epoch), cap {MAX_BATCH}, "
        f"reference {ref_batch}"
    )
    return batch, why


def scale_lr(lr: float, batch: int, ref_batch: int, optimizer: str) -> float:
    """``lr`` tuned at ``ref_batch`` moved to ``batch``: linear for SGD, square root for
    Adam(W) (Goyal et al. 2017; Malladi et al. 2022)."""
    ratio = batch / ref_batch
    return lr * (ratio if optimizer == "sgd" else math.sqrt(ratio))


def choose_compile(epochs: int, n_train: int, pixels: int, facts: DeviceFacts) -> tuple[bool, str]:
    """(compile, reason): torch.compile on CUDA when the run is long enough to repay it."""
    if facts.kind != "cuda":
        return False, "compile off: not a CUDA device"
    passes = epochs * n_train * pixels
    if passes < COMPILE_MIN_PIXEL_PASSES:
        return False, (
            f"compile off: {epochs} epochs x {n_train} images is too short to repay "
            "about a minute of compiling"
        )
    return True, (
        f"compile on: {epochs} epochs x {n_train} images repay about a minute of compiling "
        "(--set train.compile=false to skip)"
    )
