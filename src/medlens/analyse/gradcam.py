"""Grad-CAM and Grad-CAM++ for 2D and 3D models, computed by MONAI's ``GradCAM``/``GradCAMpp``.

MONAI's classes do the maths (channel weights from the gradients, upsampling to the input
size); what they are fed comes from :class:`_HookedModel`, a ``ModelWithHooks`` that fixes
four things MONAI 1.x's own wrapper cannot do here:

- its hooks are registered without handles and stay on the model forever (and it turns off
  ``inplace`` on the target module for good); ours are removed after every call;
- its class score ``logits[:, class_idx]`` mixes the classes of different images when a batch
  has several targets; ours takes each image's own target logit;
- it calls ``backward()``, filling every parameter's ``.grad``; ours takes
  ``torch.autograd.grad`` of the target layer only, so the model's gradients are untouched.

Grad-CAM++'s weights are computed by :class:`_GradCAMpp` as the paper writes them (MONAI 1.x's
``GradCAMpp.compute_map`` departs from eq. 19, see there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.visualize import GradCAM, GradCAMpp
from monai.visualize.class_activation_maps import ModelWithHooks
from monai.visualize.visualizer import default_upsampler
from torch import nn

from medlens.analyse.layers import TargetLayer
from medlens.analyse.maps import unit_scale
from medlens.errors import ModelError


class _HookedModel(ModelWithHooks):
    """A model that records the target layer's output and its gradient for one target class."""

    def __init__(self, model: nn.Module, layer: TargetLayer) -> None:
        super().__init__(model, layer.name, register_forward=False, register_backward=False)
        self.register_forward = self.register_backward = True
        self.layer = layer
        self._handle = layer.module.register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, _args, output) -> None:
        if not isinstance(output, torch.Tensor):
            raise ModelError(
                f"layer {self.layer.name!r} returns {type(output).__name__}, not a tensor",
                hint="name a convolutional layer for Grad-CAM",
            )
        self.activations[self.layer.name] = output

    def remove(self) -> None:
        """Take the forward hook off the model."""
        self._handle.remove()

    def __call__(self, x, class_idx=None, retain_graph=False, **kwargs):
        name = self.layer.name
        self.activations.clear()
        self.model.eval()
        logits = self.model(x, **kwargs)
        if name not in self.activations:
            raise ModelError(f"layer {name!r} did not run in the forward pass")
        acti = self.activations.pop(name)
        if class_idx is None:
            class_idx = logits.argmax(1)
        self.class_idx = class_idx
        score = logits.float().gather(1, class_idx.view(-1, 1)).squeeze(1)
        (grad,) = torch.autograd.grad(
            score.sum(), acti, retain_graph=retain_graph, allow_unused=True
        )
        if grad is None:
            raise ModelError(
                f"layer {name!r} does not affect the model's output",
                hint="name a layer on the path to the classifier",
            )
        acti, grad = acti.detach().float(), grad.float()
        if self.layer.channels_last:
            acti, grad = acti.movedim(-1, 1), grad.movedim(-1, 1)
        # MONAI views gradients as (N, C, -1): channels_last tensors need a contiguous copy
        return logits, (acti.contiguous(),), (grad.contiguous(),)


class _GradCAMpp(GradCAMpp):
    """Grad-CAM++ with eq. 19 of Chattopadhyay et al. (2018) as the paper writes it:
    ``alpha_ij = g_ij^2 / (2 g_ij^2 + sum_ab(A_ab) g_ij^3)`` per channel, ``g = dY/dA``.

    MONAI 1.x sums ``A_ab g_ab^3`` over the positions instead (the index mix-up of
    1Konny/gradcam_plus_plus-pytorch#2) and adds 1e-7 to the denominator, which outweighs
    ``g^2`` when gradients are ~1e-4, as they are in small networks. Dividing by ``g^2`` gives
    the paper's value without powers, ``1 / (2 + sum(A) g)`` where ``g != 0`` (0 elsewhere).
    The paper's ``exp(Y)`` multiplies all of an image's weights alike, so it is left out:
    the maps are scaled to [0, 1] afterwards.
    """

    def compute_map(self, x, class_idx=None, retain_graph=False, layer_idx=-1, **kwargs):
        _, acti, grad = self.nn_module(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
        acti, grad = acti[layer_idx], grad[layer_idx]
        spatial = tuple(range(2, grad.ndim))
        denom = 2 + acti.sum(spatial, keepdim=True) * grad
        usable = (grad != 0) & (denom != 0)
        alpha = torch.where(usable, 1 / torch.where(usable, denom, 1.0), 0.0)
        weights = (alpha * F.relu(grad)).sum(spatial, keepdim=True)
        return F.relu((weights * acti).sum(1, keepdim=True))


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    layer: TargetLayer,
    plus: bool = False,
) -> torch.Tensor:
    """Grad-CAM (or Grad-CAM++ with ``plus``) maps (N, *spatial) of ``x`` for ``targets``.

    Each map is upsampled (bi/trilinear) to the input size and scaled to [0, 1]. The model is
    left in eval mode, without hooks and without parameter gradients.
    """
    hooked = _HookedModel(model, layer)
    cam_class = _GradCAMpp if plus else GradCAM
    cam = cam_class(
        nn_module=hooked,
        target_layers=layer.name,
        upsampler=default_upsampler,
        postprocessing=unit_scale,
    )
    try:
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            maps = cam(x, class_idx=targets)
    finally:
        hooked.remove()
        model.eval()
    return maps[:, 0].detach()
