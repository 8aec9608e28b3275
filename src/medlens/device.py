"""Pick the device and the precision to train on."""

from __future__ import annotations

import contextlib

import torch

from medlens.errors import ConfigError
from medlens.plan.scaling import DeviceFacts


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for but no CUDA GPU is visible",
            hint="use --device cpu or --device auto",
        )
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"unknown device {name!r}", hint="use auto, cpu or cuda")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs that support it; fp32 elsewhere (CPU bf16 is slow without AMX)."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def device_facts(device: torch.device, count: int = 1) -> DeviceFacts:
    """What the planner needs to know about ``device``: kind, name, memory per GPU.

    ``count``: processes sharing the plan's global batch (torchrun's world size).
    """
    if device.type != "cuda":
        return DeviceFacts(kind="cpu", name="cpu", count=count)
    props = torch.cuda.get_device_properties(device)
    return DeviceFacts(kind="cuda", name=props.name, total_memory=props.total_memory, count=count)
