"""One registry for every model: medlens' own models first, then any timm model name.

>>> model = create_model("small_cnn", in_chans=1, num_classes=2)
>>> count_parameters(model)
388834

timm and MONAI are imported inside functions only: both are slow to import, and training a
2D model must never import MONAI.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

from torch import nn

from medlens.errors import ModelError
from medlens.models import (
    densenet3d,
    hybrid,
    mobilenet_medmnist,
    names,
    resnet3d,
    resnet_medmnist,
    small_cnn,
)
from medlens.models import slices as slices_module
from medlens.models.names import LITERATURE as LITERATURE  # re-exported: `medlens models`
from medlens.models.names import OWN_MODELS, own_key, timm_name

Builder = Callable[..., nn.Module]
"""``builder(*, in_chans, num_classes, pretrained, drop_rate) -> nn.Module``."""


@dataclass(frozen=True)
class ModelSpec:
    """One of medlens' own models: how to build it and what data it takes."""

    name: str
    builder: Builder
    spatial_dims: int
    description: str


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, builder: Builder, spatial_dims: int, description: str) -> None:
    """Add one of medlens' own models to the registry (names are lower case and unique)."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    _MODELS[name] = ModelSpec(name, builder, spatial_dims, description)


_BUILDERS: dict[str, Builder] = {
    "resnet18_medmnist": partial(resnet_medmnist.build, "resnet18_medmnist"),
    "resnet50_medmnist": partial(resnet_medmnist.build, "resnet50_medmnist"),
    "mobilenetv3_small_medmnist": partial(mobilenet_medmnist.build, "mobilenetv3_small_medmnist"),
    "small_cnn": small_cnn.small_cnn,
    "small_cnn_3d": small_cnn.small_cnn_3d,
    "resnet18_3d": partial(resnet3d.build, "resnet18_3d"),
    "resnet50_3d": partial(resnet3d.build, "resnet50_3d"),
    "densenet121_3d": densenet3d.build,
    "cnn_transformer": hybrid.build,
}
# names, kinds and descriptions live in the torch-free models.names, which the CLI checks
for _name, _own in OWN_MODELS.items():
    register_model(_name, _BUILDERS[_name], _own.spatial_dims, _own.description)


def list_models(spatial_dims: int | None = None) -> list[dict]:
    """medlens' own models as dicts with ``name``, ``spatial_dims`` and ``description``.

    ``spatial_dims`` (2 or 3) keeps only the models for that kind of data.
    """
    return [
        {"name": s.name, "spatial_dims": s.spatial_dims, "description": s.description}
        for s in _MODELS.values()
        if spatial_dims is None or s.spatial_dims == spatial_dims
    ]


def list_timm_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """timm model names matching a wildcard ``pattern`` (e.g. ``"resnet*"``), all 2D.

    ``pretrained=True`` lists only names with pretrained weights (with their ``.tag``).
    """
    if not pretrained:
        return names.timm_models(pattern)  # the cached list: no timm import
    import timm

    return list(timm.list_models(pattern, pretrained=pretrained))


def model_spatial_dims(name: str) -> int:
    """2 or 3: the kind of data a model takes (2 for every timm model)."""
    spec = _MODELS.get(own_key(name))
    if spec is not None:
        return spec.spatial_dims
    if timm_name(name) is not None:
        return 2
    raise _unknown_model(name)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def create_model(
    name: str,
    *,
    in_chans: int,
    num_classes: int,
    spatial_dims: int = 2,
    pretrained: bool = False,
    drop_rate: float = 0.0,
    img_size: int | None = None,
    slices: int | None = None,
) -> nn.Module:
    """Build a model by name for ``in_chans``-channel, ``spatial_dims``-D data.

    medlens' own models (see :func:`list_models`) are looked up first, then timm's
    (``timm.is_model``; 2D only). ``img_size`` reaches the models that are built for one input
    size (ViTs and other ``fixed_input_size`` timm models, the medlens hybrid). ``slices``
    builds the 2D model in 2.5D mode for volumes (see :mod:`medlens.models.slices`). Raises
    ModelError for an unknown name, a model that cannot take this data (2D model, 3D data or
    the reverse), or pretrained weights that cannot be downloaded.
    """
    _check_args(in_chans, num_classes, spatial_dims, drop_rate)
    if slices is not None:
        if spatial_dims != 3:
            raise ModelError(
                f"model.slices ({slices}) is 2.5D mode, for volumes; this data is 2D",
                hint="leave model.slices unset for 2D images",
            )
        if model_spatial_dims(name) != 2:
            raise ModelError(
                f"2.5D mode runs a 2D model over slice stacks; {name} is 3D",
                hint="name a 2D model (e.g. resnet18), or leave model.slices unset",
            )
        return slices_module.build(
            name,
            slices=slices,
            in_chans=in_chans,
            num_classes=num_classes,
            pretrained=pretrained,
            drop_rate=drop_rate,
            make_2d=partial(_create, img_size=img_size, spatial_dims=2),
        )
    return _create(
        name,
        in_chans=in_chans,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        pretrained=pretrained,
        drop_rate=drop_rate,
        img_size=img_size,
    )


def _create(
    name: str,
    *,
    in_chans: int,
    num_classes: int,
    spatial_dims: int,
    pretrained: bool,
    drop_rate: float,
    img_size: int | None,
) -> nn.Module:
    """:func:`create_model` without the 2.5D wrapper or argument checks (``num_classes=0``
    gives a timm backbone's pooled features)."""
    kwargs = {
        "in_chans": in_chans,
        "num_classes": num_classes,
        "pretrained": pretrained,
        "drop_rate": drop_rate,
    }
    spec = _MODELS.get(own_key(name))
    if spec is not None:
        if spec.spatial_dims != spatial_dims:
            raise _wrong_dims(spec.name, spec.spatial_dims, spatial_dims)
        if img_size is not None and "img_size" in inspect.signature(spec.builder).parameters:
            kwargs["img_size"] = img_size
        with _pretrained_download(spec.name, pretrained):
            return spec.builder(**kwargs)

    timm_id = timm_name(name)
    if timm_id is None:
        raise _unknown_model(name)
    if spatial_dims != 2:
        raise _wrong_dims(timm_id, 2, spatial_dims, source="timm")
    import timm

    if pretrained and not timm.models.is_model_pretrained(timm_id):
        raise ModelError(
            f"timm has no pretrained weights for {timm_id}",
            hint="set pretrained to false, or pick a model listed by "
            "`timm.list_models(pretrained=True)`",
        )
    cfg = timm.models.get_pretrained_cfg(timm_id)
    if img_size is not None and cfg is not None and getattr(cfg, "fixed_input_size", False):
        kwargs["img_size"] = img_size  # ViTs: position embeddings for this size
    with _pretrained_download(timm_id, pretrained):
        model = timm.create_model(timm_id, **kwargs)
    _check_patches(timm_id, model, img_size)
    return model


def _check_patches(name: str, model: nn.Module, img_size: int | None) -> None:
    """Refuse a patch size that does not tile the image: timm would silently drop the rest."""
    # timm's ResNet-ViT hybrids embed the CNN's feature map with 1x1 "patches": always tiled
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if img_size is None or patch is None:
        return
    p = patch[0] if isinstance(patch, (tuple, list)) else int(patch)
    if img_size % p or img_size < 2 * p:
        raise ModelError(
            f"{name} cuts images into {p} px patches, but the images are {img_size} px: "
            + (
                "the last " + str(img_size % p) + " px of each row and column would be ignored"
                if img_size % p
                else "that leaves a single patch"
            ),
            hint="use images of a multiple of the patch size (e.g. --size 64 or 224, or "
            "--set model.img_size=...), a model with smaller patches, or cnn_transformer",
        )


def parameter_count(name: str, spatial_dims: int | None = None) -> int:
    """Parameters of ``name`` for one grey channel and two classes, built on the meta device
    (no memory, no time: VGG-16's 134 M parameters count in milliseconds)."""
    import torch

    dims = spatial_dims or model_spatial_dims(name)
    with torch.device("meta"):
        model = _create(
            name,
            in_chans=1,
            num_classes=2,
            spatial_dims=dims,
            pretrained=False,
            drop_rate=0.0,
            img_size=None,
        )
    return count_parameters(model)


# --- name resolution and error messages ---------------------------------------------------


def _names_for(spatial_dims: int) -> str:
    """Comma-separated names of medlens' own models for ``spatial_dims``-D data."""
    return ", ".join(m["name"] for m in list_models(spatial_dims))


def _wrong_dims(name: str, model_dims: int, data_dims: int, source: str = "medlens") -> ModelError:
    """ModelError for a 2D model on 3D data or the reverse, naming models that fit."""
    fits = _names_for(data_dims)
    where = " (timm models are 2D only)" if source == "timm" else ""
    return ModelError(
        f"model {name} is {model_dims}D{where} but the data is {data_dims}D",
        hint=f"pick a {data_dims}D model: {fits}" if fits else "pick a model for this data",
    )


def close_names(name: str, n: int = 5) -> list[str]:
    """The ``n`` model names most like ``name`` (see :func:`medlens.models.names.close_names`),
    counting the models registered here."""
    return names.close_names(name, n, own=_MODELS)


def _unknown_model(name: str) -> ModelError:
    """ModelError for an unknown name, suggesting close medlens and timm names."""
    return names.unknown_model(name, own=_MODELS)


def _check_args(in_chans: int, num_classes: int, spatial_dims: int, drop_rate: float) -> None:
    """ModelError for arguments no model can take."""
    if spatial_dims not in (2, 3):
        raise ModelError(
            f"spatial_dims must be 2 (images) or 3 (volumes), got {spatial_dims}",
            hint="set spatial_dims to 2 or 3",
        )
    if in_chans < 1:
        raise ModelError(f"in_chans must be at least 1, got {in_chans}", hint="set in_chans >= 1")
    if num_classes < 1:
        raise ModelError(
            f"num_classes must be at least 1, got {num_classes}", hint="set num_classes >= 1"
        )
    if not 0.0 <= drop_rate < 1.0:
        raise ModelError(
            f"drop_rate must lie in [0, 1), got {drop_rate}", hint="use a drop_rate like 0.2"
        )


# --- pretrained weight downloads -------------------------------------------------------------

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face Hub opens within ``timeout`` seconds.

    Behind a proxy a direct connection says nothing, so the Hub is then assumed reachable.
    """
    if any(os.environ.get(var) for var in _PROXY_VARS):
        return True
    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def _hub_offline_if_unreachable() -> Iterator[None]:
    """Put huggingface_hub in offline mode while the Hub cannot be reached.

    Offline, huggingface_hub retries a missing file for about a minute before giving up;
    in offline mode it uses its local cache at once (and fails at once without a cached file).
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or hub_reachable():
        yield
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


@contextmanager
def _quiet_hub_logs() -> Iterator[None]:
    """Silence huggingface_hub's per-retry warnings; the ModelError says what went wrong."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _pretrained_download(name: str, pretrained: bool) -> Iterator[None]:
    """Turn a failed pretrained-weights download inside the block into a one-line ModelError."""
    if not pretrained:
        yield
        return
    try:
        with _hub_offline_if_unreachable(), _quiet_hub_logs():
            yield
    except ModelError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if len(reason) > 120:
            reason = reason[:117] + "..."
        offline = isinstance(exc, OSError)
        what = "downloaded" if offline else "loaded"
        may_be = "; this machine may be offline" if offline else ""
        raise ModelError(
            f"the pretrained weights for {name} could not be {what}{may_be} "
            f"({type(exc).__name__}: {reason})",
            hint="train from scratch (--set model.pretrained=false), or give a local weights "
            "file: --set model.pretrained=false model.weights=PATH (.safetensors or .pth)",
        ) from exc
