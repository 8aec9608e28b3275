"""Attention rollout (Abnar & Zuidema, 2020) for timm Vision Transformers and hybrid ViTs.

timm computes attention with ``scaled_dot_product_attention`` (fused), which never exposes
the attention probabilities; a forward hook on each block's ``attn`` recomputes them from the
block's input, as timm's non-fused path does: ``softmax(q_norm(q) * scale @ k_norm(k)^T)``.
Per layer the heads are fused (mean or max), the identity is added for the residual path and
rows are renormalised; the layers are multiplied together, first layer rightmost. The map is
the class token's row over the patch tokens (or, for models that pool patch tokens instead of
using a class token, the mean of the patch rows), reshaped to the patch grid and upsampled.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from medlens.analyse.maps import unit_scale
from medlens.errors import ModelError

HEAD_FUSIONS = ("mean", "max")


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The timm ``Attention`` modules of ``model.blocks``, or [] for any other model."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Module) or not all(hasattr(b, "attn") for b in blocks):
        return []
    from timm.layers import Attention  # lazy: timm is slow to import

    attns = [b.attn for b in blocks]
    return attns if attns and all(isinstance(a, Attention) for a in attns) else []


def attention_probs(
    attn: nn.Module,
    x: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
) -> torch.Tensor:
    """Attention probabilities (B, heads, N, N) of a timm ``Attention`` for its input ``x``."""
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    logits = (q.float() * attn.scale) @ k.float().transpose(-2, -1)
    if is_causal:
        keep = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:  # scaled_dot_product_attention's meaning: True takes part
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask.float()
    return logits.softmax(dim=-1)


def _patch_grid(model: nn.Module, x: torch.Tensor, n_patches: int) -> tuple[int, int]:
    """(rows, cols) of the patch tokens for an input of ``x``'s size."""
    embed = getattr(model, "patch_embed", None)
    grids = []
    if hasattr(embed, "dynamic_feat_size"):
        with contextlib.suppress(TypeError, AttributeError):
            grids.append(tuple(embed.dynamic_feat_size(tuple(x.shape[-2:]))))
    if getattr(embed, "grid_size", None) is not None:
        grids.append(tuple(embed.grid_size))
    for grid in grids:
        if len(grid) == 2 and grid[0] * grid[1] == n_patches:
            return int(grid[0]), int(grid[1])
    raise ModelError(
        f"cannot lay {n_patches} patch tokens out on a grid for a "
        f"{x.shape[-2]}x{x.shape[-1]} input",
        hint="use method gradcam",
    )


def attention_rollout(model: nn.Module, x: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """Rollout maps (N, H, W) in [0, 1] for a batch ``x`` (N, C, H, W); class-agnostic."""
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    attns = attention_modules(model)
    if not attns:
        raise ModelError(
            f"attention rollout needs a Vision Transformer (blocks of timm Attention modules); "
            f"{type(model).__name__} has none",
            hint="use method gradcam (or gradcam++) for this model",
        )
    if x.ndim != 4:
        raise ModelError(f"attention rollout takes 2D images (N, C, H, W), got {tuple(x.shape)}")
    state: dict[str, torch.Tensor] = {}
    seen: list[int] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict, _output) -> None:
        inp = args[0] if args else kwargs["x"]
        mask = args[1] if len(args) > 1 else kwargs.get("attn_mask")
        probs = attention_probs(module, inp, mask, bool(kwargs.get("is_causal", False)))
        fused = probs.mean(1) if head_fusion == "mean" else probs.amax(1)
        eye = torch.eye(fused.shape[-1], device=fused.device)
        fused = fused + eye
        fused = fused / fused.sum(dim=-1, keepdim=True)
        state["rollout"] = fused if "rollout" not in state else fused @ state["rollout"]
        seen.append(1)

    handles = [a.register_forward_hook(hook, with_kwargs=True) for a in attns]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    if len(seen) != len(attns):
        raise ModelError(
            f"{len(seen)} of the model's {len(attns)} attention layers ran",
            hint="use method gradcam",
        )
    rollout = state["rollout"]
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    n_patches = rollout.shape[-1] - prefix
    if getattr(model, "global_pool", "token") == "token":
        weights = rollout[:, 0, prefix:]
    else:  # the head pools the patch tokens: average their rows
        weights = rollout[:, prefix:, prefix:].mean(dim=1)
    rows, cols = _patch_grid(model, x, n_patches)
    grid = weights.reshape(-1, 1, rows, cols)
    maps = F.interpolate(grid, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return unit_scale(maps[:, 0])
