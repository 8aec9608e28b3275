"""Grad-CAM and Grad-CAM++ for 2D and 3D models, computed by MONAI's ``GradCAM``/``GradCAMpp``.

MONAI's classes do the maths (channel weights from the gradients, upsampling to the input
size); what they are fed comes from :class:`_HookedModel`, a ``ModelWithHooks`` that fixes
four things MONAI 1.x's own wrapper cannot do here:

- its hooks are registered without handles and stay on the model forever (and it turns off
  ``inplace`` on the target module for good); ours are removed after every call;
- its class score ``logits[:, class_idx]`` mixes the classes of different images when a batch
  has several targets; ours takes each image's own target logit;
- Grad-CAM++ multiplies ``exp(score)`` into gradients of shape (N, C, ...), which for a batch
  broadcasts against the last spatial axis; ours gives the score shape (N, 1, ...);
- it calls ``backward()``, filling every parameter's ``.grad``; ours takes
  ``torch.autograd.grad`` of the target layer only, so the model's gradients are untouched.
"""

from __future__ import annotations

import torch
from monai.visualize import GradCAM, GradCAMpp
from monai.visualize.class_activation_maps import ModelWithHooks
from monai.visualize.visualizer import default_upsampler
from torch import nn

from medlens.analyse.layers import TargetLayer
from medlens.analyse.maps import unit_scale
from medlens.errors import ModelError

# exp(score) only scales each Grad-CAM++ map by a positive factor (undone by unit_scale), so
# the score is clamped below exp's float32 overflow.
_MAX_SCORE = 80.0


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
        self.score = score.detach().clamp(max=_MAX_SCORE).view(-1, *[1] * (acti.ndim - 1))
        # MONAI views gradients as (N, C, -1): channels_last tensors need a contiguous copy
        return logits, (acti.contiguous(),), (grad.contiguous(),)


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
    cam_class = GradCAMpp if plus else GradCAM
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
