"""The teacher of a distillation: a trained run whose data and preprocessing the student
shares, and the batch loss that teaches with it.

The training loop knows nothing of teachers: the stage that trains a student passes
:func:`distillation_loss` to :func:`medlens.train.loop.fit` as its ``batch_loss``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medlens.config import Plan
from medlens.errors import ConfigError
from medlens.run import Run
from medlens.train.distillation import DistillationLoss
from medlens.train.losses import BatchLoss, task_loss

if TYPE_CHECKING:
    from medlens.data.dataset import ArrayDataset

# Machine-local data fields: where the files are, not what they are.
_LOCAL_FIELDS = ("data_dir", "cache_dir")


def _data_fields(plan: Plan) -> dict[str, Any]:
    data = plan.data.model_dump(mode="json")
    for key in _LOCAL_FIELDS:
        data.pop(key, None)
    data["source"] = Path(data["source"]).stem
    return data


def check_same_data(student: Plan, teacher: Plan, where: str) -> None:
    """The student must train on the teacher's data, splits and preprocessing."""
    s, t = _data_fields(student), _data_fields(teacher)
    wrong = [f"data.{k} is {s[k]!r} but the teacher's is {t[k]!r}" for k in t if s.get(k) != t[k]]
    # folders and manifests without a split column are split at random from train.seed: a
    # different seed would put the teacher's training images into the student's val/test
    drawn = student.data.preprocess is not None and student.data.split_column is None
    if drawn and student.train.seed != teacher.train.seed:
        wrong.append(
            f"train.seed is {student.train.seed} but the teacher's is {teacher.train.seed} "
            "(the seed draws this data's splits)"
        )
    if wrong:
        raise ConfigError(
            f"the student cannot learn from teacher {where}: " + "; ".join(wrong),
            hint="distill on the teacher's own data: `medlens distill TEACHER_RUN` builds such "
            "a plan",
        )


def load_teacher(plan: Plan, device: torch.device) -> nn.Module:
    """The teacher named in ``plan.distill`` in eval mode on ``device``, without gradients."""
    if plan.distill is None:
        raise ConfigError("the plan has no distill section", hint="set distill.teacher")
    teacher = Run.open(Path(plan.distill.teacher).expanduser().resolve(), role="teacher")
    check_same_data(plan, teacher.plan, str(teacher.root))
    model, _ = teacher.load_model(device)
    return model.requires_grad_(False)


def distillation_loss(plan: Plan, ds: ArrayDataset, device: torch.device) -> BatchLoss:
    """The student's batch loss: its plan's loss mixed with the teacher's soft targets, the
    teacher seeing the very augmented batch the student sees."""
    d = plan.distill
    if d is None:
        raise ConfigError("the plan has no distill section", hint="set distill.teacher")
    teacher = load_teacher(plan, device)
    return DistillationLoss(
        teacher, task_loss(plan, ds).to(device), d.alpha, d.temperature, plan.data.task
    )


def batch_loss_for(plan: Plan, ds: ArrayDataset) -> Callable[[torch.device], BatchLoss] | None:
    """What makes the training loss for ``fit``: the distillation loss (with the teacher the
    plan names) for a student, None (the plan's own loss) otherwise."""
    if plan.distill is None:
        return None
    return lambda device: distillation_loss(plan, ds, device)
