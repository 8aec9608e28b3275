"""The teacher of a distillation: a trained run whose data and preprocessing the student shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medlens.compress.runs import trained_run
from medlens.config import Plan, load_plan
from medlens.errors import ConfigError

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
    from medlens.train.checkpoint import load_weights
    from medlens.train.loop import build_model_for

    if plan.distill is None:
        raise ConfigError("the plan has no distill section", hint="set distill.teacher")
    run = trained_run(plan.distill.teacher, "teacher")
    recipe = load_plan(run.plan)
    check_same_data(plan, recipe, str(run.root))
    recipe = recipe.model_copy(
        update={"model": recipe.model.model_copy(update={"pretrained": False})}
    )
    model = build_model_for(recipe, device)
    load_weights(run.best, model)
    return model.eval().requires_grad_(False)
