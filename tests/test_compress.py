"""Model compression: the distillation loss, distilled and pruned runs, and bad input."""

from __future__ import annotations

import json
import math
import shutil
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import medlens.api as ml
from medlens.cli import main
from medlens.compress.distill import student_plan
from medlens.compress.prune import prune_model, require_torch_pruning
from medlens.config import apply_overrides, dump_plan, load_plan
from medlens.errors import CheckpointError, ConfigError, ModelError
from medlens.models.registry import count_parameters, create_model
from medlens.models.structure import apply_shapes, changed_shapes
from medlens.run import Run
from medlens.train.distillation import DistillationLoss, distillation_term
from medlens.train.teacher import check_same_data

FAST = {"evaluate.bootstrap": 50}  # confidence intervals are tested elsewhere
# batch 32: 17 steps per BreastMNIST epoch (the CPU plan's batch 128 gives 4)
STEPS = {"train.batch_size": 32}


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# --- the loss ---------------------------------------------------------------------------------


def test_distillation_term_matches_hand_computed_values():
    s = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])
    t = torch.tensor([[0.5, 0.5, 2.0], [1.0, 0.0, 0.0]])
    # T^2 * mean over the batch of sum_k p_t log(p_t / p_s), softmax(z / 2), by hand in numpy
    assert distillation_term(s, t, 2.0, "multi-class").item() == pytest.approx(1.5006013901737152)
    # multi-label: per-label binary KL of sigmoid(z / 2), averaged over labels, times T^2
    s2, t2 = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.0, 1.0]])
    assert distillation_term(s2, t2, 2.0, "multi-label").item() == pytest.approx(0.4851476763202643)


@pytest.mark.parametrize("task", ["multi-class", "binary", "multi-label"])
def test_distillation_term_is_zero_when_student_equals_teacher(task):
    z = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)) * 3
    assert distillation_term(z, z.clone(), 4.0, task).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_term(z, z.flip(0), 4.0, task).item() > 0.01


class _Fixed(torch.nn.Module):
    """A 'teacher' returning fixed logits, counting its calls."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits, self.calls = logits, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.logits


def test_alpha_mixes_task_and_distillation_losses():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    labels = torch.tensor([0, 2])
    teacher_logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    ce = torch.nn.CrossEntropyLoss()
    task = ce(logits, labels).item()
    soft = distillation_term(logits, teacher_logits, 3.0, "multi-class").item()

    teacher = _Fixed(teacher_logits)
    plain = DistillationLoss(teacher, ce, alpha=0.0, temperature=3.0, task="multi-class")
    assert plain(logits, labels, torch.zeros(2, 1, 4, 4)).item() == pytest.approx(task)
    assert teacher.calls == 0  # alpha 0: the teacher is not even run
    mixed = DistillationLoss(teacher, ce, alpha=0.25, temperature=3.0, task="multi-class")
    value = mixed(logits, labels, torch.zeros(2, 1, 4, 4)).item()
    assert value == pytest.approx(0.25 * soft + 0.75 * task)
    only_soft = DistillationLoss(teacher, ce, alpha=1.0, temperature=3.0, task="multi-class")
    assert only_soft(logits, labels, torch.zeros(2, 1, 4, 4)).item() == pytest.approx(soft)
    assert not mixed.train().teacher.training  # the teacher stays in eval mode


# --- the pruned structure ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small_100", "small_cnn"])
def test_pruned_structure_rebuilds_from_layer_shapes(name):
    """Residual additions (ResNet), depthwise convs and squeeze-excite (MobileNetV3)."""
    torch.manual_seed(0)
    model = create_model(name, in_chans=1, num_classes=3).eval()
    x = torch.randn(2, 1, 32, 32)
    pruned = prune_model(model, x[:1], 0.5, n_classes=3)
    shapes = changed_shapes(pruned, model)
    assert count_parameters(pruned) < 0.45 * count_parameters(model)
    rebuilt = apply_shapes(create_model(name, in_chans=1, num_classes=3), shapes).eval()
    rebuilt.load_state_dict(pruned.state_dict())  # strict: every tensor fits
    with torch.inference_mode():
        assert torch.allclose(rebuilt(x), pruned(x), atol=1e-5)


def test_mobilenet_for_28px_keeps_a_4x4_map():
    x = torch.randn(2, 1, 28, 28)
    timm_net = create_model("mobilenetv3_small_100", in_chans=1, num_classes=2).eval()
    ours = create_model("mobilenetv3_small_medmnist", in_chans=1, num_classes=2).eval()
    with torch.inference_mode():
        assert timm_net.forward_features(x).shape == (2, 576, 1, 1)  # 32x: 28 px -> 1 px
        assert ours.forward_features(x).shape == (2, 576, 4, 4)  # 8x, as resnet*_medmnist
        assert ours(x).shape == (2, 2)
    assert count_parameters(ours) == count_parameters(timm_net) == 1_519_618


def test_bad_layer_shapes_are_refused():
    model = create_model("small_cnn", in_chans=1, num_classes=2)
    with pytest.raises(ModelError, match="has not got"):
        apply_shapes(model, {"nope.conv": [4, 4]})
    with pytest.raises(ModelError, match="larger than the unpruned layer"):
        apply_shapes(model, {"fc": [2, 999]})


def test_plan_keeps_the_pruned_shapes_on_one_line_each(breast_run, tmp_path):
    plan = apply_overrides(
        load_plan(breast_run / "plan.yaml"),
        {"prune": "{source: x, amount: 0.5, shapes: {blocks.0.0: [16, 1], blocks.0.1: [16]}}"},
    )
    text = dump_plan(plan)
    assert "    blocks.0.0: [16, 1]\n" in text and "    blocks.0.1: [16]\n" in text
    assert "distill:" not in text  # unset sections stay out of plan.yaml
    (tmp_path / "p.yaml").write_text(text)
    assert load_plan(tmp_path / "p.yaml") == plan
    with pytest.raises(ConfigError, match=r"prune\.amount"):
        apply_overrides(plan, {"prune.amount": "1.5"})


# --- distillation on real data ----------------------------------------------------------------

# the breast_run teacher is the default CPU plan (small_cnn: 0.39 M parameters, 10 M MACs, 40
# epochs at batch 128); the student is another, smaller network: timm's test_byobnet (0.20 M
# parameters, 1.0 M MACs), which 8 epochs on two cores take to a meaningful AUC
STUDENT = {"student": "test_byobnet", "epochs": 8, "alpha": 0.5, "temperature": 4.0}


def _distill(teacher, out, medmnist_dir, latency_seconds=0.05, **kwargs):
    return ml.distill(
        teacher,
        output=out,
        data_dir=str(medmnist_dir),
        device="cpu",
        overrides={**FAST, **STEPS},
        latency_seconds=latency_seconds,
        **{**STUDENT, **kwargs},
    )


@pytest.fixture(scope="module")
def distilled(breast_run, medmnist_dir, tmp_path_factory):
    return _distill(breast_run, tmp_path_factory.mktemp("distill") / "student", medmnist_dir)


@pytest.fixture(scope="module")
def undistilled(breast_run, medmnist_dir, tmp_path_factory):
    """The control: the same student, recipe and seed without the teacher (alpha 0)."""
    out = tmp_path_factory.mktemp("distill") / "control"
    return _distill(breast_run, out, medmnist_dir, alpha=0.0)


def _test_logits(run_dir, medmnist_dir) -> torch.Tensor:
    """The run's best weights on BreastMNIST's test split: logits (N, 2)."""
    from medlens.data.loader import device_arrays
    from medlens.data.sources import load_dataset
    from medlens.inference import predict_logits

    cpu = torch.device("cpu")
    run = Run.open(run_dir)
    model, _ = run.load_model(cpu)
    test = load_dataset("breastmnist", data_dir=str(medmnist_dir)).splits["test"]
    data = device_arrays(run.plan, test.images, test.labels, cpu)
    logits, _, _ = predict_logits(model, data, run.plan.train.eval_batch_size, amp=False)
    return torch.from_numpy(logits)


def _kl(teacher: torch.Tensor, student: torch.Tensor, temperature: float) -> float:
    """Mean KL(teacher || student) of the softmax outputs at ``temperature``, written out."""
    p = torch.softmax(teacher / temperature, 1)
    return float((p * (p.log() - torch.log_softmax(student / temperature, 1))).sum(1).mean())


def test_distilled_student_is_an_ordinary_run_close_to_its_teacher(
    distilled, breast_run, medmnist_dir
):
    run = distilled.run_dir
    for name in ("plan.yaml", "metrics.json", "checkpoints/best.safetensors", "compression.json"):
        assert (run / name).is_file(), name
    plan = load_plan(run / "plan.yaml")
    assert plan.distill.teacher == str(breast_run.resolve()) and plan.distill.alpha == 0.5
    assert plan.data == load_plan(breast_run / "plan.yaml").data  # the teacher's data, exactly

    c = json.loads((run / "compression.json").read_text())
    teacher_metrics = json.loads((breast_run / "metrics.json").read_text())
    student_metrics = json.loads((run / "metrics.json").read_text())
    # the same weights on the same test split give the same numbers as the runs' own metrics
    assert c["teacher"]["test"]["auc"] == pytest.approx(teacher_metrics["test"]["auc"], abs=1e-9)
    assert c["student"]["test"]["auc"] == pytest.approx(student_metrics["test"]["auc"], abs=1e-9)
    diff = c["comparison"]["test_auc_difference"]
    assert diff == pytest.approx(c["student"]["test"]["auc"] - c["teacher"]["test"]["auc"])
    assert c["student"]["model"] == "test_byobnet" and c["teacher"]["model"] == "small_cnn"
    assert c["teacher"]["parameters"] == 388_834 and c["student"]["parameters"] == 199_938
    assert c["teacher"]["macs"] == 10_105_856 and c["student"]["macs"] == 1_038_048
    assert c["student"]["cpu"]["64"]["images_per_s"] > 0
    # stated margin: 8 epochs of the distilled student land within 0.1 test AUC of the teacher
    # (measured: teacher 0.901, student 0.843)
    assert c["teacher"]["test"]["auc"] > 0.8
    assert diff > -0.1, c
    # evaluate on the student run reproduces its metrics
    again = ml.evaluate_run(run, data_dir=str(medmnist_dir))
    assert again["test"]["auc"] == pytest.approx(student_metrics["test"]["auc"], abs=1e-12)


def test_distillation_brings_the_student_closer_to_its_teacher(
    distilled, undistilled, breast_run, medmnist_dir
):
    """What only the teacher's soft targets give: against a control with the same student,
    recipe and seed but alpha 0, the distilled student's softened outputs (the distillation
    temperature, 4) match the teacher's more closely on the held-out test images."""
    control = load_plan(undistilled.run_dir / "plan.yaml")
    assert control.distill.alpha == 0.0 and control.model.name == "test_byobnet"
    assert control.train.seed == load_plan(distilled.run_dir / "plan.yaml").train.seed
    teacher = _test_logits(breast_run, medmnist_dir)
    kl_distilled = _kl(teacher, _test_logits(distilled.run_dir, medmnist_dir), 4.0)
    kl_control = _kl(teacher, _test_logits(undistilled.run_dir, medmnist_dir), 4.0)
    # stated margin: at least 8% closer (measured, train.seed 0 / 1 / 2: 0.0264 against
    # 0.0328, 0.0311 against 0.0365, 0.0291 against 0.0395: 20%, 15% and 26% closer)
    assert kl_distilled < 0.92 * kl_control, (kl_distilled, kl_control)


def test_distilled_run_resumes_to_the_same_weights(distilled, breast_run, medmnist_dir, tmp_path):
    def interrupt(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        _distill(breast_run, cut, medmnist_dir, callbacks=[interrupt], latency_seconds=0)
    # an ordinary run: `medlens train --resume` continues it, teacher and all
    resumed = ml.train(output=cut, resume=True, data_dir=str(medmnist_dir))
    assert [r["epoch"] for r in resumed.fit.history] == list(range(1, 9))
    full = load_file(distilled.run_dir / "checkpoints" / "last.safetensors")
    part = load_file(cut / "checkpoints" / "last.safetensors")
    for key in full:
        assert np.array_equal(full[key].numpy(), part[key].numpy()), key
    other = tmp_path / "other_teacher"
    shutil.copytree(breast_run, other)
    with pytest.raises(ConfigError, match="was distilled from"):
        ml.distill(other, resume=True, output=cut)
    with pytest.raises(ConfigError, match="cannot be combined with --resume"):
        ml.distill(breast_run, resume=True, output=cut, epochs=9)


def test_student_plan_needs_the_teachers_data(breast_run):
    teacher = load_plan(breast_run / "plan.yaml")
    student = student_plan(teacher, breast_run, student="small_cnn")
    check_same_data(student, teacher, "t")  # fine
    assert teacher.train.ema is None and student.train.ema == 0.999  # the student is averaged
    assert any("train.ema" in note for note in student.notes)
    assert student_plan(teacher, breast_run, overrides={"train.ema": "null"}).train.ema is None
    # 28 px: the MobileNetV3 with a MedMNIST stem, not timm's (which ends at 1x1 maps)
    assert student_plan(teacher, breast_run).model.name == "mobilenetv3_small_medmnist"
    at_224 = apply_overrides(teacher, {"data.size": 224})
    assert student_plan(at_224, breast_run).model.name == "mobilenetv3_small_100"
    moved = apply_overrides(student, {"data.mean": "[0.1]"})
    with pytest.raises(ConfigError, match=r"data\.mean is \[0\.1\] but the teacher's"):
        check_same_data(moved, teacher, "t")


# --- structured pruning on real data ----------------------------------------------------------


def test_prune_halves_channels_and_the_run_round_trips(breast_run, medmnist_dir, tmp_path):
    result = ml.prune(
        breast_run,
        amount=0.5,
        finetune_epochs=1,
        output=tmp_path / "pruned",
        data_dir=str(medmnist_dir),
        device="cpu",
        overrides=FAST,
        latency_seconds=0.05,
    )
    c = result.compression
    original, pruned = c["original"], c["pruned"]
    assert original["parameters"] == 388834
    # half the channels of every conv: about a quarter of the weights and MACs are left
    assert pruned["parameters"] == 97650
    assert 0.74 < c["comparison"]["parameter_reduction"] < 0.76
    assert c["comparison"]["macs_ratio"] == pytest.approx(0.2556, abs=0.001)
    assert math.isfinite(pruned["test_before_finetune"]["auc"])
    assert original["test"]["auc"] > 0.75 and pruned["test"]["auc"] > 0.6

    # the weights on disk really are the slim model, and rebuild from the plan alone
    run = result.run_dir
    weights = load_file(run / "checkpoints" / "best.safetensors")
    assert sum(v.numel() for k, v in weights.items() if "num_batches" not in k) < 100_000
    assert weights["features.0.weight"].shape == (128, 64, 3, 3)
    metrics = json.loads((run / "metrics.json").read_text())
    again = ml.evaluate_run(run, data_dir=str(medmnist_dir))
    assert again["test"]["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-12)
    assert again["test"]["auc"] == pytest.approx(pruned["test"]["auc"], abs=1e-9)
    # predict and export rebuild it too
    from PIL import Image

    image = np.load(medmnist_dir / "breastmnist.npz")["test_images"][0]
    Image.fromarray(image).save(tmp_path / "case.png")
    rows = ml.predict(run, [tmp_path / "case.png"], onnx=False)
    assert abs(sum(v for k, v in rows[0].items() if k.startswith("p_")) - 1) < 1e-6
    pytest.importorskip("onnxruntime")
    from medlens.export import export_run

    info = export_run(run, benchmark=False, data_dir=str(medmnist_dir))
    assert info["variants"]["onnx_fp32"]["max_abs_prob_diff"] < 1e-4


# --- bad input --------------------------------------------------------------------------------


def test_teacher_that_is_not_a_run(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="is not a medlens run"):
        ml.distill(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        ml.distill(tmp_path / "missing")
    code, _, err = run_cli(capsys, "distill", tmp_path)
    assert code == 2 and "not a medlens run" in err and "fix:" in err and "Traceback" not in err


def test_unknown_student_model(breast_run, tmp_path, capsys):
    with pytest.raises(ModelError, match="unknown model 'mobilenetv9_tiny'"):
        ml.distill(breast_run, student="mobilenetv9_tiny", output=tmp_path / "s")
    assert not (tmp_path / "s").exists()  # nothing written
    code, _, err = run_cli(capsys, "distill", breast_run, "--student", "nope_net")
    assert code == 2 and "unknown model" in err


@pytest.mark.parametrize("amount", [0.0, 1.0, 1.5, -0.2])
def test_prune_amount_outside_0_1(breast_run, tmp_path, amount):
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        ml.prune(breast_run, amount=amount, output=tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_prune_cli_errors(breast_run, tmp_path, capsys):
    code, _, err = run_cli(capsys, "prune", breast_run, "--amount", "1.5")
    assert code == 2 and "strictly between 0 and 1" in err
    code, _, err = run_cli(capsys, "prune", tmp_path)
    assert code == 2 and "not a medlens run" in err


def test_missing_torch_pruning_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    with pytest.raises(ModelError, match=r'pip install "medlens\[compress\]"'):
        require_torch_pruning()


def test_commands_have_help(capsys):
    for command, options in (
        ("distill", ("--student", "--epochs", "--alpha", "--temperature", "--resume")),
        ("prune", ("--amount", "--finetune-epochs", "--importance", "--output")),
    ):
        code, out, _ = run_cli(capsys, command, "--help")
        assert code == 0 and all(o in out for o in options)
