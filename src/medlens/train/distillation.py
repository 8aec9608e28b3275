"""The knowledge-distillation loss (Hinton, Vinyals and Dean, 2015).

``loss = alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * task_loss(student, y)``

where ``p^T`` are the outputs softened by the temperature ``T``: a softmax over classes, or for
multi-label tasks one sigmoid per label (then the KL is the per-label binary KL, averaged over
labels). The ``T^2`` keeps the soft term's gradients on the scale of the hard term's as ``T``
changes. The KL is taken rather than the cross-entropy with the soft targets: the two differ
by the teacher's entropy, a constant, so they give the same gradients, but the KL is 0 exactly
when the student matches the teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def distillation_term(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, task: str
) -> torch.Tensor:
    """``T^2 * KL(teacher || student)`` of the tempered outputs, averaged over the batch."""
    t = float(temperature)
    s, z = student_logits.float() / t, teacher_logits.float() / t
    if task == "multi-label":
        p = torch.sigmoid(z)
        # binary KL per label = BCE(student, p) - BCE(teacher, p) (the teacher's entropy)
        cross = F.binary_cross_entropy_with_logits(s, p, reduction="none")
        entropy = F.binary_cross_entropy_with_logits(z, p, reduction="none")
        kl = (cross - entropy).mean()
    else:
        kl = F.kl_div(
            F.log_softmax(s, dim=1), F.log_softmax(z, dim=1), reduction="batchmean", log_target=True
        )
    return kl * (t * t)


class DistillationLoss(nn.Module):
    """``loss(student_logits, labels, images)``: the teacher runs on the same images.

    The teacher sees the very batch the student sees, augmentation included, rather than
    logits computed once on un-augmented images: under zoom, rotation or a brightness change
    the un-augmented image's soft targets describe a different input, which turns the soft
    term into label noise ("consistent teaching", Beyer et al., 2022). The teacher stays in
    eval mode (batch-norm running statistics, no dropout) and gets no gradients; this costs
    one teacher forward pass per step.
    """

    def __init__(
        self,
        teacher: nn.Module,
        task_loss: nn.Module,
        alpha: float,
        temperature: float,
        task: str,
    ) -> None:
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.task_loss = task_loss
        self.alpha, self.temperature, self.task = float(alpha), float(temperature), task

    def train(self, mode: bool = True) -> DistillationLoss:
        """The teacher stays in eval mode whatever the caller asks."""
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor
    ) -> torch.Tensor:
        hard = self.task_loss(logits, labels) if self.alpha < 1.0 else None
        if self.alpha == 0.0:  # plain training: no need to run the teacher
            return hard
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        soft = distillation_term(logits, teacher_logits, self.temperature, self.task)
        if hard is None:
            return soft
        return self.alpha * soft + (1.0 - self.alpha) * hard
