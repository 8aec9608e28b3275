"""Common image corruptions at five severities, as batched torch ops (2D images and 3D volumes).

After Hendrycks & Dietterich (2019), "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations" (ImageNet-C / CIFAR-10-C), plus the smooth intensity
inhomogeneity of MR scanners (a bias field, as in MONAI's ``RandBiasField``).

Every op takes a float batch in [0, 1] of shape (N, C, H, W) or (N, C, D, H, W) on any device
and returns one of the same shape, dtype and device. Random draws come from the ``generator``
passed in (on its own device; the draws are then moved to the batch's device), so the same
generator state gives the same corruption. Each corruption draws its random numbers the same
way at every severity, so severities of one seed differ only in strength.

Severity parameters (:data:`SEVERITY_PARAMS`):

================  =============================  ==============================================
corruption        parameter, severity 1 .. 5     source
================  =============================  ==============================================
gaussian_noise    noise std 0.08 .. 0.38         ImageNet-C
gaussian_blur     sigma 0.4 .. 1.0 px per 32 px  CIFAR-10-C's sigmas (32 px), scaled to the size
contrast          kept contrast 0.4 .. 0.05      ImageNet-C
jpeg              quality 25 .. 7                ImageNet-C (Pillow); 3D slice by slice
bias_field        max coefficient 0.1 .. 0.6     exp(degree-3 Legendre polynomial), MONAI-like
================  =============================  ==============================================

>>> g = torch.Generator().manual_seed(0)
>>> corrupt(torch.rand(2, 1, 28, 28), "gaussian_noise", 3, g).shape
torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from medlens.errors import ConfigError

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

SEVERITY_PARAMS: dict[str, tuple[float, ...]] = {
    # standard deviation of additive Gaussian noise on the [0, 1] scale (ImageNet-C)
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    # Gaussian sigma in pixels for a 32 px side (CIFAR-10-C); scaled by side / 32 per axis, so
    # a 28 px image gets 0.35 .. 0.875 px and a 224 px one 2.8 .. 7 px (ImageNet-C: 1 .. 6)
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    # fraction of the deviation from the per-image, per-channel mean that is kept (ImageNet-C)
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    # JPEG quality (ImageNet-C)
    "jpeg": (25, 18, 15, 10, 7),
    # coefficients of the log bias field are uniform in [-a, a] (MONAI: degree 3, [0, 0.1])
    "bias_field": (0.1, 0.2, 0.3, 0.45, 0.6),
}

BIAS_FIELD_DEGREE = 3


def _param(name: str, severity: int) -> float:
    return SEVERITY_PARAMS[name][severity - 1]


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim not in (4, 5):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(
            f"corruptions take a float batch (N, C, H, W) or (N, C, D, H, W), got {shape}",
            hint="convert uint8 images with x.float() / 255 and add batch and channel axes",
        )


def _draw(
    kind: str, shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor
) -> torch.Tensor:
    """``randn`` or ``rand`` from ``generator`` on its own device, moved to ``like``'s."""
    fn = torch.randn if kind == "normal" else torch.rand
    out = fn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return out.to(device=like.device, dtype=like.dtype)


def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise, independent per pixel and channel."""
    # MONAI's RandGaussianNoise draws per image with numpy; one torch draw covers the batch.
    return x + _param("gaussian_noise", severity) * _draw("normal", tuple(x.shape), generator, x)


def gaussian_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian blur over every spatial axis (edges replicated); ``generator`` is not used."""
    from monai.networks.layers import separable_filtering
    from monai.networks.layers.convutils import gaussian_1d

    c = _param("gaussian_blur", severity)
    kernels = [
        gaussian_1d(torch.tensor(c * size / 32.0), truncated=4.0, normalize=True).to(x)
        for size in x.shape[2:]
    ]
    # MONAI's separable filter is batched over (N, C) and works for 2D and 3D alike
    return separable_filtering(x, kernels, mode="replicate")


def contrast(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Contrast reduced towards each image's per-channel mean; ``generator`` is not used."""
    # one line of batched tensor maths; MONAI's AdjustContrast is a gamma curve, not this
    mean = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)
    return (x - mean) * _param("contrast", severity) + mean


def _jpeg_roundtrip(plane: np.ndarray, quality: int) -> np.ndarray:
    """One (H, W) grey or (H, W, 3) colour uint8 image through a JPEG file in memory."""
    buffer = io.BytesIO()
    Image.fromarray(plane).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded)


def jpeg(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """JPEG compression at a low quality; 3D volumes are compressed slice by slice (axis D).

    1- and 3-channel images are encoded as grey or colour JPEGs, other channel counts one
    channel at a time. ``generator`` is not used.
    """
    # JPEG is a per-image codec: neither MONAI nor torchvision has it in batched form
    # (torchvision.io.encode_jpeg takes a list but loops in C++, and is deprecated since 0.29).
    # Pillow's libjpeg on the CPU, image by image, gives the same bytes on every machine; it
    # takes about 0.2 ms per 28 px image (3 ms at 224 px RGB), less than a model's forward.
    quality = int(_param("jpeg", severity))
    shape = x.shape
    planes = x if x.ndim == 4 else x.transpose(1, 2).reshape(-1, shape[1], *shape[3:])
    if planes.shape[1] not in (1, 3):
        planes = planes.reshape(-1, 1, *planes.shape[2:])
    u8 = planes.detach().clamp(0, 1).mul(255).round().to(device="cpu", dtype=torch.uint8)
    hwc = u8.permute(0, 2, 3, 1).numpy()
    done = np.stack([_jpeg_roundtrip(p[..., 0] if p.shape[-1] == 1 else p, quality) for p in hwc])
    out = torch.from_numpy(done.reshape(hwc.shape)).permute(0, 3, 1, 2)
    out = out.to(device=x.device, dtype=x.dtype).div_(255)
    if x.ndim == 4:
        return out.reshape(shape)
    return out.reshape(shape[0], shape[2], shape[1], *shape[3:]).transpose(1, 2).contiguous()


def _legendre(t: torch.Tensor, degree: int) -> list[torch.Tensor]:
    """Legendre polynomials P_0 .. P_degree at ``t`` (Bonnet's recursion)."""
    polys = [torch.ones_like(t), t]
    for k in range(1, degree):
        polys.append(((2 * k + 1) * t * polys[k] - k * polys[k - 1]) / (k + 1))
    return polys[: degree + 1]


def _bias_basis(spatial: tuple[int, ...], degree: int, like: torch.Tensor) -> torch.Tensor:
    """(T, *spatial): products of per-axis Legendre polynomials of total degree <= ``degree``."""
    axes = [
        _legendre(torch.linspace(-1, 1, n, device=like.device, dtype=like.dtype), degree)
        for n in spatial
    ]
    terms = []
    for powers in itertools.product(range(degree + 1), repeat=len(spatial)):
        if sum(powers) > degree:
            continue
        term = torch.ones(spatial, device=like.device, dtype=like.dtype)
        for axis, p in enumerate(powers):
            view = [1] * len(spatial)
            view[axis] = spatial[axis]
            term = term * axes[axis][p].view(view)
        terms.append(term)
    return torch.stack(terms)


def bias_field(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """A smooth multiplicative field ``exp(sum_k c_k P_k)``, one per image, shared by channels.

    MONAI's ``RandBiasField`` builds one image's field at a time with numpy (a Python loop over
    the batch); here the Legendre basis is built once and every image's coefficients (uniform
    in [-a, a], including the constant term as MONAI does) are combined in one einsum.
    """
    basis = _bias_basis(tuple(x.shape[2:]), BIAS_FIELD_DEGREE, x)
    a = _param("bias_field", severity)
    coeffs = (_draw("uniform", (x.shape[0], basis.shape[0]), generator, x) * 2 - 1) * a
    log_field = torch.einsum("nt,t...->n...", coeffs, basis).unsqueeze(1)
    return x * torch.exp(log_field)


CORRUPTIONS: dict[str, Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "jpeg": jpeg,
    "bias_field": bias_field,
}


def check_corruption(name: str, severity: int) -> None:
    """Raise :class:`ConfigError` for an unknown corruption name or severity."""
    if name not in CORRUPTIONS:
        raise ConfigError(
            f"unknown corruption {name!r}", hint=f"use one of {', '.join(CORRUPTIONS)}"
        )
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ConfigError(
            f"corruption severity must be one of {', '.join(map(str, SEVERITIES))}, "
            f"got {severity!r}",
            hint="1 is the mildest, 5 the strongest",
        )


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Corrupt a float batch in [0, 1] with corruption ``name`` at ``severity`` (1-5).

    Returns a new tensor of the same shape, clamped to [0, 1].
    """
    check_corruption(name, severity)
    _check_batch(x)
    return CORRUPTIONS[name](x, int(severity), generator).clamp_(0.0, 1.0)
