"""``medlens distill``: train a small student on a teacher run's data with its soft targets.

The student's plan is the teacher's plan (same data, splits, preprocessing, normalisation,
augmentation, loss, optimiser and schedule) with another model and a ``distill`` section naming
the teacher. The student run is an ordinary run directory: ``evaluate``, ``report``,
``export`` and ``predict`` work on it unchanged, and ``medlens train --resume --output DIR``
(or ``distill --resume``) continues it, reloading the teacher from the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medlens.compress.measure import comparison, summarise
from medlens.compress.runs import (
    CompressionResult,
    compression_file,
    start_compressed_run,
    trained_run,
)
from medlens.config import Plan, apply_overrides, validate_plan
from medlens.data.dataset import ArrayDataset
from medlens.errors import ConfigError
from medlens.models.build import plan_image_size
from medlens.models.registry import model_spatial_dims
from medlens.progress import Reporter, SilentReporter
from medlens.run import Run, default_run_name, write_json
from medlens.stages.train import train_run
from medlens.train.loop import EpochCallback
from medlens.train.teacher import load_teacher

DEFAULT_STUDENT = "mobilenetv3_small_100"
# timm's MobileNetV3 downsamples 32x: a 28 px image is 1 px in its last stages. The MedMNIST
# variant keeps a stride-1 stem (4x4 at the end), as resnet*_medmnist do for ResNets.
SMALL_IMAGE_STUDENT, SMALL_IMAGE_SIDE = "mobilenetv3_small_medmnist", 64
# A student's val AUC on a small val split swings by several points from epoch to epoch, so a
# best-epoch pick is mostly noise; validating the moving average of its weights smooths the
# curve (BreastMNIST, 78 val images: after epoch 10, consecutive epochs differed by up to 0.094
# without it and by at most 0.028 with it).
STUDENT_EMA = 0.999
_CPU = torch.device("cpu")


def default_student(teacher: Plan) -> str:
    """The student ``medlens distill`` trains when none is named, by the teacher's image size.

    >>> default_student(plan_of_28_px_images)  # doctest: +SKIP
    'mobilenetv3_small_medmnist'
    """
    side = plan_image_size(teacher)
    if side is not None and side < SMALL_IMAGE_SIDE and teacher.data.spatial_dims == 2:
        return SMALL_IMAGE_STUDENT
    return DEFAULT_STUDENT


def student_plan(
    teacher: Plan,
    teacher_dir: Path,
    *,
    student: str | None = None,
    alpha: float | None = None,
    temperature: float | None = None,
    epochs: int | None = None,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Plan:
    """The teacher's plan with ``student`` (default: :func:`default_student`) as the model
    and a ``distill`` section."""
    student = student or default_student(teacher)
    model_spatial_dims(student)  # ModelError, with close names, for an unknown model
    data = teacher.model_dump(mode="json")
    distill: dict[str, Any] = {"teacher": str(teacher_dir.resolve())}
    if alpha is not None:
        distill["alpha"] = alpha
    if temperature is not None:
        distill["temperature"] = temperature
    data.update(
        model={"name": student, "pretrained": False, "drop_rate": teacher.model.drop_rate},
        distill=distill,
        prune=None,
    )
    notes = [*teacher.notes]
    if teacher.train.ema is None:
        data["train"]["ema"] = STUDENT_EMA
        notes.append(
            f"distill: the student's weights are averaged (train.ema {STUDENT_EMA}): on a "
            "small val split a best-epoch pick is mostly noise"
        )
    recipe = validate_plan(data, where="student plan")
    notes.append(
        f"distill: {student} learns from {teacher.model.name} ({teacher_dir.name}), "
        f"alpha {recipe.distill.alpha:g}, temperature {recipe.distill.temperature:g}"
    )
    recipe = recipe.model_copy(update={"notes": notes})
    flags = {"train.epochs": epochs, "train.device": device}
    return apply_overrides(recipe, {**flags, **(overrides or {})})


def _resumed_plan(run: Run, teacher_dir: Path, given: dict[str, Any]) -> Plan:
    """The student run's own plan, checked to be a distillation from ``teacher_dir``."""
    run.check_resumable()
    named = [k for k, v in given.items() if v]
    if named:
        raise ConfigError(
            f"a resumed run keeps its own plan.yaml; {', '.join(named)} cannot be combined "
            "with --resume",
            hint="drop those options, or start a new run with another --output",
        )
    recipe = run.plan
    if recipe.distill is None:
        raise ConfigError(
            f"{run.root} is not a distillation run (its plan has no distill section)",
            hint="continue it with `medlens train --resume --output DIR`",
        )
    if Path(recipe.distill.teacher).resolve() != teacher_dir.resolve():
        raise ConfigError(
            f"{run.root} was distilled from {recipe.distill.teacher}, not {teacher_dir}",
            hint="pass the teacher that the run's plan.yaml names",
        )
    return recipe


def distill_run(
    teacher: str | Path,
    *,
    student: str | None = None,
    epochs: int | None = None,
    alpha: float | None = None,
    temperature: float | None = None,
    output: str | Path | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    download: bool = True,
    reporter: Reporter | None = None,
    callbacks: Sequence[EpochCallback] = (),
    latency_seconds: float = 0.5,
) -> CompressionResult:
    """Distil the teacher run into a ``student`` model (default: :func:`default_student`).

    Trains on the teacher's data and splits, evaluates the student like ``medlens train``
    does, and writes ``compression.json``: teacher and student parameters, MACs, test AUC/ACC,
    CPU latency, and the student's AUC minus the teacher's. ``overrides`` are dotted plan
    fields (``{"train.batch_size": 64}``); ``latency_seconds=0`` skips the speed measurement.
    """
    reporter = reporter or SilentReporter()
    source = trained_run(teacher, "teacher")
    if resume:
        if output is None:
            raise ConfigError("--resume needs --output naming the student run to continue")
        run = Run.open(output, trained=False)
        given = {
            "--student": student,
            "--epochs": epochs,
            "--alpha": alpha is not None,
            "--temperature": temperature is not None,
            "--device": device,
            "--set": overrides,
        }
        recipe = _resumed_plan(run, source.root, given)
    else:
        recipe = student_plan(
            source.plan,
            source.root,
            student=student,
            alpha=alpha,
            temperature=temperature,
            epochs=epochs,
            device=device,
            overrides=overrides,
        )
    ds = source.data(data_dir, download, reporter)
    teacher_model = load_teacher(recipe, _CPU)  # fails here, before anything is written
    if not resume:
        name = default_run_name(ds.name, f"{recipe.model.name}-distilled")
        run = start_compressed_run(Path(output) if output else Path("runs") / name, recipe, source)
        d = recipe.distill
        reporter.message(
            f"distill: {recipe.model.name} from teacher {source.root} "
            f"(alpha {d.alpha:g}, temperature {d.temperature:g}), {recipe.train.epochs} epochs"
        )
    reporter.message(f"run directory: {run.root}")
    run.use_data(ds)
    _, metrics = train_run(run, ds, resume=resume, reporter=reporter, callbacks=callbacks)
    student_model, _ = run.load_model(_CPU)
    record = distillation_record(
        teacher_model, student_model, source.plan, recipe, ds, latency_seconds
    )
    record["teacher"]["run"] = str(source.root)
    record["student"]["run"] = str(run.root)
    write_json(compression_file(run), record)
    return CompressionResult(run.root, recipe, metrics, record)


def distillation_record(
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    teacher_plan: Plan,
    student_plan: Plan,
    ds: ArrayDataset,
    latency_seconds: float = 0.5,
) -> dict[str, Any]:
    """compression.json of a distillation: both models measured the same way."""
    from medlens.export.speed import hardware

    t = summarise(teacher, teacher_plan, ds, run="", latency_seconds=latency_seconds)
    s = summarise(student, student_plan, ds, run="", latency_seconds=latency_seconds)
    d = student_plan.distill
    return {
        "kind": "distillation",
        "dataset": ds.name,
        "distill": {
            "alpha": d.alpha,
            "temperature": d.temperature,
            "epochs": student_plan.train.epochs,
        },
        "teacher": t,
        "student": s,
        "comparison": comparison(t, s),
        "hardware": hardware(),
    }
