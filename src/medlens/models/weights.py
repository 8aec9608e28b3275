"""Starting weights from local files: pretrained backbones and earlier medlens runs.

Two uses, one loader:

- ``model.weights``: a pretrained file (safetensors, or a PyTorch/timm checkpoint such as
  ``resnet50_a1_0-14fe96d1.pth``) for the same architecture, the offline stand-in for the
  model hub. The classifier is left freshly initialised when its shape differs (another task),
  and an RGB stem is adapted to grey (or any channel count) the way timm does for hub weights.
- ``model.init``: multistage fine-tuning, ``--init runs/<earlier>/checkpoints/best.safetensors``
  (or just the run folder): everything the earlier medlens run learned that fits, e.g.
  ImageNet -> OrganAMNIST -> a CT task.

Any other layer whose shape does not fit is an error that names the layers: silently keeping
random weights there would train a different model than asked for.

>>> report = load_initial_weights(model, "runs/organamnist")  # doctest: +SKIP
>>> report.loaded, report.reinitialised  # doctest: +SKIP
(120, ['fc.weight', 'fc.bias'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from medlens.errors import CheckpointError

_HINT_FILE = "give a .safetensors file, a PyTorch/timm checkpoint (.pth, .pt, .bin) or a run folder"
# Keys that hold the weights inside common checkpoint dictionaries (timm, Lightning, DeiT, ...).
_NESTED = ("state_dict_ema", "model_ema", "state_dict", "model", "module", "net")
_PREFIXES = ("module.", "model.", "_orig_mod.", "backbone.", "encoder.")


@dataclass
class LoadReport:
    """What a load did: tensors copied, layers left at their fresh initialisation (the
    classifier for another task), and stem convs adapted to the input's channel count."""

    path: Path
    loaded: int = 0
    reinitialised: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)


def weights_file(path: str | Path) -> Path:
    """The weights file for ``path``: the file itself, or a medlens run's best checkpoint."""
    p = Path(path)
    if p.is_dir():
        best = p / "checkpoints" / "best.safetensors"
        if not best.is_file():
            raise CheckpointError(
                f"{p} is a folder without checkpoints/best.safetensors",
                hint="give a trained medlens run folder or a weights file",
            )
        return best
    if not p.is_file():
        raise CheckpointError(f"weights file {p} does not exist", hint=_HINT_FILE)
    return p


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a PyTorch checkpoint (never unpickles code)."""
    p = weights_file(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors, pickle and zip raise many unrelated types
        raise CheckpointError(
            f"{p} is not a readable weights file ({type(exc).__name__})",
            hint="the file is corrupt or truncated; download or copy it again. " + _HINT_FILE,
        ) from None
    return _unwrap(state, p)


def _unwrap(state: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensor dictionary inside a checkpoint (``{"state_dict": {...}}`` and the like)."""
    for _ in range(3):
        if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
            inner = next((state[k] for k in _NESTED if isinstance(state.get(k), dict)), None)
            if inner is None:
                break
            state = inner
    tensors = (
        {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        if isinstance(state, dict)
        else {}
    )
    if not tensors:
        raise CheckpointError(f"{path} holds no weight tensors", hint=_HINT_FILE)
    return tensors


def _match_keys(state: dict[str, torch.Tensor], target: set[str]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (DDP ``module.``, compiled ``_orig_mod.``, ...) when that makes
    the names the model's."""
    for _ in range(2):
        if len(target & set(state)) >= len(state) // 2:
            break
        for prefix in _PREFIXES:
            if sum(k.startswith(prefix) for k in state) >= len(state) // 2:
                state = {k.removeprefix(prefix): v for k, v in state.items()}
                break
    return state


def classifier_names(model: nn.Module) -> set[str]:
    """Parameter names of the model's classifier (timm's ``get_classifier``, else the last
    Linear layer)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module) or not list(head.parameters()):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    if head is None:
        return set()
    ids = {id(p) for p in head.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def _adapt_stem(name: str, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor | None:
    """An RGB (or other) first conv adapted to ``dst``'s input channels, as timm does."""
    if src.ndim != dst.ndim or src.ndim < 4 or src.shape[0] != dst.shape[0]:
        return None
    if src.shape[2:] != dst.shape[2:] or src.shape[1] == dst.shape[1]:
        return None
    from timm.models import adapt_input_conv

    return adapt_input_conv(dst.shape[1], src.float()).to(src.dtype)


def load_initial_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy the weights of ``path`` into ``model`` where they fit (see the module docstring).

    Raises :class:`CheckpointError` for an unreadable file, for weights that share almost no
    layer names with the model (another architecture), and for layers other than the
    classifier and the first conv whose shapes differ, naming them.
    """
    p = weights_file(path)
    own = model.state_dict()
    state = _match_keys(read_state_dict(p), set(own))
    common = [k for k in own if k in state]
    if len(common) < max(1, len(own) // 2):
        example = ", ".join(sorted(state)[:3])
        raise CheckpointError(
            f"{p} does not hold weights for this model: {len(common)} of its {len(own)} "
            f"tensors have a match (the file has e.g. {example})",
            hint="give weights saved from the same architecture (the same model name)",
        )
    report = LoadReport(p)
    head = classifier_names(model)
    first_conv = next((k for k, v in own.items() if v.ndim >= 4), None)
    wrong = []
    new_state = dict(own)
    for key in common:
        src, dst = state[key], own[key]
        if src.shape == dst.shape:
            new_state[key] = src.to(dst.dtype)
            report.loaded += 1
        elif key in head:
            report.reinitialised.append(key)
        elif key == first_conv and (adapted := _adapt_stem(key, src, dst)) is not None:
            new_state[key] = adapted.to(dst.dtype)
            report.adapted.append(key)
            report.loaded += 1
        else:
            wrong.append(f"{key} {tuple(src.shape)} vs {tuple(dst.shape)}")
    if wrong:
        shown = "; ".join(wrong[:5]) + (f"; and {len(wrong) - 5} more" if len(wrong) > 5 else "")
        raise CheckpointError(
            f"{p} does not fit the model: {len(wrong)} layer(s) have other shapes "
            f"(file vs model): {shown}",
            hint="use weights of the same architecture and width; only the classifier and "
            "the first conv's input channels may differ",
        )
    report.reinitialised += [k for k in head if k not in state]
    model.load_state_dict(new_state)
    return report


# --- ImageNet weights from the model hub: are they obtainable here? ---------------------------
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm asks the Hub for, in order


def hub_weights(name: str) -> tuple[str, str] | None:
    """(Hugging Face repo, file) of timm's default pretrained weights for ``name``, or None for a
    model timm has no hub weights for (medlens' own models, unknown names)."""
    import timm

    if not timm.is_model(name) or not timm.models.is_model_pretrained(name):
        return None
    cfg = timm.models.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    return repo, getattr(cfg, "hf_hub_filename", None) or HUB_FILES[0]


def pretrained_source(name: str) -> tuple[str | None, str]:
    """Where ImageNet weights for the timm model ``name`` would come from: ``("cache", why)``
    when the local Hugging Face cache holds them (the layout timm reads), ``("hub", why)``
    when the Hub is reachable to download them, ``(None, why)`` when neither, and
    ``("none", why)`` for a model that has no such weights (medlens' own models).

    >>> pretrained_source("resnet18")  # doctest: +SKIP
    ('cache', 'timm/resnet18.a1_in1k in the local Hugging Face cache')
    """
    from huggingface_hub import constants, try_to_load_from_cache

    from medlens.models.registry import hub_reachable

    found = hub_weights(name)
    if found is None:
        return "none", f"{name} has no ImageNet weights"
    repo, first = found
    for filename in dict.fromkeys((first, *HUB_FILES)):
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return "cache", f"{repo} in the local Hugging Face cache"
    if not constants.HF_HUB_OFFLINE and hub_reachable():
        return "hub", f"{repo} downloadable from the Hugging Face Hub"
    return None, f"{repo} is not in the local cache and the Hub cannot be reached"
