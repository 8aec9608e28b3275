"""Model names without torch: medlens' own (a static table), the literature's, and timm's.

timm's names come from a list kept in the medlens cache directory, one per timm version and
filled the first time by importing timm, so that a misspelt ``--model`` is refused in a
fraction of a second instead of after the 5-10 s it takes to import torch and timm.

>>> check_model_name("resnet18_medmnist")
>>> own_key(" Small_CNN ")
'small_cnn'
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from medlens.errors import ModelError


@dataclass(frozen=True)
class OwnModel:
    """What a medlens model takes (2D or 3D data) and what it is; the builder is in the
    registry, which imports torch."""

    spatial_dims: int
    description: str


#: medlens' own models; ``models.registry`` registers a builder for each of them.
OWN_MODELS: dict[str, OwnModel] = {
    "resnet18_medmnist": OwnModel(
        2, "ResNet-18 with a 3x3 stride-1 stem and no max-pool for 28 px images (MedMNIST)"
    ),
    "resnet50_medmnist": OwnModel(
        2, "ResNet-50 with a 3x3 stride-1 stem and no max-pool for 28 px images (MedMNIST)"
    ),
    "mobilenetv3_small_medmnist": OwnModel(
        2,
        "MobileNetV3-Small with a stride-1 stem and first block for 28 px images (8x downsampling)",
    ),
    "small_cnn": OwnModel(
        2, "small baseline CNN: 4 conv-BN-ReLU blocks (32-256 wide), 0.4 M parameters"
    ),
    "small_cnn_3d": OwnModel(
        3, "small baseline 3D CNN: 4 conv-BN-ReLU blocks (32-256 wide), 1.2 M parameters"
    ),
    "resnet18_3d": OwnModel(
        3, "MONAI 3D ResNet-18 with a 3^3 stride-1 stem and no max-pool for small volumes"
    ),
    "resnet50_3d": OwnModel(
        3, "MONAI 3D ResNet-50 with a 3^3 stride-1 stem and no max-pool for small volumes"
    ),
    "densenet121_3d": OwnModel(
        3, "MONAI 3D DenseNet-121 (growth 32, blocks 6-12-24-16) for volumes"
    ),
    "cnn_transformer": OwnModel(
        2, "medlens hybrid: ResNet-18 stages 1-3 as tokens for a 4-layer transformer encoder"
    ),
}

#: The architectures of the literature, by the names medlens (timm, MONAI) knows them.
LITERATURE: dict[str, str] = {
    "vgg16": "VGG-16",
    "resnet18": "ResNet-18",
    "resnet50": "ResNet-50",
    "densenet121": "DenseNet-121",
    "efficientnet_b0": "EfficientNet-B0",
    "efficientnet_b3": "EfficientNet-B3",
    "mobilenetv3_large_100": "MobileNetV3-Large",
    "mobilenetv3_small_100": "MobileNetV3-Small",
    "convnext_tiny": "ConvNeXt-T",
    "vit_small_patch16_224": "ViT-S/16",
    "vit_base_patch16_224": "ViT-B/16",
    "vit_small_r26_s32_224": "ResNet-26 + ViT-S hybrid (timm)",
    "vit_base_r50_s16_224": "ResNet-50 + ViT-B hybrid (timm)",
}

TIMM_NAMES_FILE = "timm_names.json"


def own_key(name: str) -> str:
    """Registry key for a user-typed name (case and surrounding spaces don't matter)."""
    return name.strip().lower()


def cache_dir() -> Path:
    """``$MEDLENS_CACHE``, else ``$XDG_CACHE_HOME/medlens`` or ``~/.cache/medlens``."""
    # the rule of data.labelled.default_cache_dir, which cannot be imported here: that
    # module loads pandas and the image readers (seconds), and this one must stay instant
    env = os.environ.get("MEDLENS_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "medlens"


def versioned_cache(filename: str, key: dict[str, str], fill: Callable[[], Any]) -> Any:
    """``fill()``'s JSON value, kept in the cache directory as ``filename`` and reused while
    ``key`` (the versions of what the value depends on) stays the same.

    A missing, unreadable or outdated file is filled again; a cache directory that cannot be
    written only costs the next call another ``fill()``.
    """
    path = cache_dir() / filename
    try:
        stored = json.loads(path.read_text())
        if stored["key"] == key:
            return stored["value"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = fill()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "value": value}))
        tmp.replace(path)
    except OSError:
        pass
    return value


def _timm_listing() -> dict[str, list[str]]:
    """timm's model names (as ``timm.list_models()`` gives them) and its deprecated aliases,
    which ``timm.is_model`` accepts too."""
    import timm

    return {
        "models": list(timm.list_models()),
        "deprecated": sorted(timm.models.get_deprecated_models()),
    }


def _timm_cached() -> dict[str, list[str]]:
    return versioned_cache(TIMM_NAMES_FILE, {"timm": metadata.version("timm")}, _timm_listing)


def timm_models(pattern: str = "*") -> list[str]:
    """timm model names matching a wildcard ``pattern`` (``"resnet*"``), in timm's order;
    the same list as ``timm.list_models(pattern)``, without importing timm."""
    return fnmatch.filter(_timm_cached()["models"], pattern)


def timm_name(name: str) -> str | None:
    """The timm name for ``name`` (exact, else lower-cased), or None if timm lacks it.

    A pretrained tag (``resnet18.a1_in1k``) is allowed, as ``timm.is_model`` allows it.
    """
    listing = _timm_cached()
    known = {*listing["models"], *listing["deprecated"]}
    for candidate in (name.strip(), name.strip().lower()):
        if candidate and candidate.split(".", 1)[0] in known:
            return candidate
    return None


def close_names(name: str, n: int = 5, own: Iterable[str] | None = None) -> list[str]:
    """The ``n`` model names most like ``name``; medlens' own and the literature's first on a
    tie (``efficientnet_bo`` -> ``efficientnet_b0`` before ``efficientnet_b8``)."""
    key = own_key(name)
    preferred = [*(OWN_MODELS if own is None else own), *LITERATURE]
    candidates = list(dict.fromkeys([*preferred, *_timm_cached()["models"]]))
    matcher = difflib.SequenceMatcher(b=key)
    scored = []
    for rank, candidate in enumerate(candidates):
        matcher.set_seq1(candidate)
        if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
            bonus = 0.02 if rank < len(preferred) else 0.0
            scored.append((matcher.ratio() + bonus, -rank, candidate))
    return [c for score, _, c in sorted(scored, reverse=True)[:n] if score >= 0.6]


def unknown_model(name: str, own: Iterable[str] | None = None) -> ModelError:
    """ModelError for an unknown name, suggesting close medlens and timm names."""
    close = close_names(name, own=own)
    suggestion = f"did you mean {', '.join(close)}? " if close else ""
    return ModelError(
        f"unknown model {name!r}: neither a medlens model nor a timm model",
        hint=f"{suggestion}`medlens models` lists the available models",
    )


def check_model_name(name: str, own: Iterable[str] | None = None) -> None:
    """Raise :class:`ModelError` with close names unless ``name`` is a medlens model (one of
    ``own``, default :data:`OWN_MODELS`) or a timm model."""
    known = list(OWN_MODELS if own is None else own)
    if own_key(name) in known or timm_name(name) is not None:
        return
    raise unknown_model(name, own=known)
