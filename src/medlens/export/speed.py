"""CPU latency and throughput of a model at a few batch sizes, and the hardware it ran on."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    """CPU model, cores, threads used, and the versions of the packages that matter."""
    import torch

    versions = {}
    for pkg in ("torch", "onnx", "onnxruntime", "timm"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "isa": isa,
        "platform": platform.platform(),
        **versions,
    }


def throughput(
    run: Callable[[np.ndarray], Any],
    batch: np.ndarray,
    *,
    seconds: float = 0.5,
    min_runs: int = 2,
    warmup: int = 1,
) -> dict[str, float]:
    """Median latency (ms per batch) and images/s of ``run(batch)``, timed for ~``seconds``."""
    for _ in range(warmup):
        run(batch)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    return {
        "batch": len(batch),
        "latency_ms": round(median * 1000, 3),
        "images_per_s": round(len(batch) / median, 1),
        "runs": len(times),
    }


def torch_runner(model: Any, channels_last: bool = False) -> Callable[[np.ndarray], Any]:
    """``run(batch)`` for a PyTorch model in eager fp32 on the CPU."""
    import torch

    def run(batch: np.ndarray) -> Any:
        x = torch.from_numpy(batch)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return model(x)

    return run


def onnx_runner(session: Any) -> Callable[[np.ndarray], Any]:
    """``run(batch)`` for an ONNX Runtime session."""
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})


def batch_of(images: np.ndarray, size: int) -> np.ndarray:
    """``size`` inputs cycled from ``images`` (float32, contiguous)."""
    idx = np.arange(size) % len(images)
    return np.ascontiguousarray(images[idx], dtype=np.float32)
