"""Transfer learning by default, a recipe that fits the time the user has, and long epochs that
show life.

ImageNet weights are never downloaded here: a local file in the Hugging Face cache layout that
timm reads (``models--timm--resnet18.a1_in1k/snapshots/<commit>/model.safetensors``) stands in
for them, with the Hub offline.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import medlens.api as ml
from medlens.errors import ConfigError
from medlens.models.build import build_model
from medlens.plan.budget import MIN_EPOCHS_SCRATCH, StepCosts, estimate_run
from medlens.plan.planner import FINETUNE_LR_FACTOR
from medlens.progress import RichReporter
from medlens.train import loop

from .conftest import write_blob_npz

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache in tmp_path and the Hub offline."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def cached_resnet18(offline_hub) -> dict[str, torch.Tensor]:
    """ImageNet-shaped resnet18 weights (random, seeded) where timm looks for its weights."""
    repo = timm.models.get_pretrained_cfg("resnet18").hf_hub_id  # timm/resnet18.a1_in1k
    folder = offline_hub / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    torch.manual_seed(7)
    state = {k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}
    save_file(state, str(snapshot / "model.safetensors"))
    return state


@pytest.fixture(scope="module")
def blobs64(tmp_path_factory):
    """A 64 px grey dataset: the planner gives it timm's ResNet-18."""
    path = tmp_path_factory.mktemp("blobs") / "blobs64.npz"
    return write_blob_npz(path, "multi-class", size=64, n=(96, 32, 32), k=3)


def _plan(source, **kwargs):
    kwargs.setdefault("device", "cpu")
    return ml.plan(str(source), **kwargs)[0]


def test_cached_imagenet_weights_are_used_and_fine_tuned(cached_resnet18, blobs64):
    plan = _plan(blobs64)
    scratch = _plan(blobs64, overrides={"model.pretrained": "false"}, estimate=False)
    assert plan.model.name == "resnet18" and plan.model.pretrained is True
    assert any(
        "in the local Hugging Face cache" in n and "sums the RGB stem" in n for n in plan.notes
    )
    assert scratch.model.pretrained is False
    assert plan.optim.lr == pytest.approx(scratch.optim.lr * FINETUNE_LR_FACTOR)
    assert plan.train.epochs < scratch.train.epochs
    model = build_model(plan, torch.device("cpu"))
    # the grey stem is timm's adaptation of the cached RGB weights: their sum over channels
    expected = cached_resnet18["conv1.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(model.conv1.weight, expected, atol=1e-6)
    assert torch.equal(model.layer4[1].conv2.weight, cached_resnet18["layer4.1.conv2.weight"])
    assert model.fc.out_features == 3  # a new classifier for this task


def test_offline_without_weights_trains_from_scratch_and_says_how_to_give_them(
    offline_hub, blobs64
):
    plan = _plan(blobs64, estimate=False)
    assert plan.model.pretrained is False
    [note] = [n for n in plan.notes if n.startswith("weights:")]
    assert "trained from scratch" in note and "not in the local cache" in note
    assert "model.weights=FILE" in note
    # a plan that says auto resolves it when the model is built: no weights here, none loaded
    auto = plan.model_copy(update={"model": plan.model.model_copy(update={"pretrained": "auto"})})
    torch.manual_seed(0)
    a = build_model(auto, torch.device("cpu"))
    torch.manual_seed(0)
    b = build_model(plan, torch.device("cpu"))
    assert torch.equal(a.conv1.weight, b.conv1.weight)


def test_every_plan_carries_a_measured_estimate(breastmnist_plan_source):
    plan = _plan(breastmnist_plan_source[0], data_dir=breastmnist_plan_source[1])
    assert plan.train.estimated_seconds is not None and plan.train.estimated_seconds > 0
    [note] = [n for n in plan.notes if n.startswith("estimate on this machine (cpu)")]
    assert f"{plan.train.epochs} epochs of" in note


@pytest.fixture(scope="module")
def breastmnist_plan_source(medmnist_dir):
    return "breastmnist", str(medmnist_dir)


@pytest.fixture(scope="module")
def folder96(tmp_path_factory):
    """A folder of 96 px grey PNGs, one sub-folder per class (bright blob = class)."""
    from PIL import Image

    from .conftest import blob_images

    root = tmp_path_factory.mktemp("folder96") / "blobs"
    labels = np.arange(120) % 3
    images = blob_images(labels, 96, 2, np.random.default_rng(0))
    for i, (k, img) in enumerate(zip(labels, images, strict=True)):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / f"class{k}" / f"{i}.png")
    return root


def test_a_cpu_plan_does_not_upsample_small_images(folder96, offline_hub):
    plan = _plan(folder96, estimate=False)
    assert plan.data.preprocess.size == [96, 96]  # the folder default is 224: capped at 96
    assert any("does not upsample them to 224" in n for n in plan.notes)


# small batches keep the probes (three training steps of ResNet-18 at 96 px) cheap
SMALL_BATCH = {"train.batch_size": 16}


def test_a_budget_lowers_the_resolution_and_the_estimate_fits_it(folder96, offline_hub):
    free = _plan(folder96, overrides=SMALL_BATCH)
    # half the time of the minimum epochs: they no longer fit at 96 px
    budget = free.train.estimated_seconds * MIN_EPOCHS_SCRATCH / free.train.epochs / 2
    plan = _plan(folder96, overrides={**SMALL_BATCH, "train.budget": f"{budget:.2f}s"})
    assert plan.train.budget == pytest.approx(round(budget, 2))
    assert plan.train.estimated_seconds <= plan.train.budget * 1.01
    assert plan.data.preprocess.size[0] < 96 or plan.train.epochs < MIN_EPOCHS_SCRATCH
    [note] = [n for n in plan.notes if n.startswith("budget ")]
    assert f"{plan.train.epochs} epochs" in note and "fit it on this machine" in note
    assert plan.train.estimated_seconds < free.train.estimated_seconds


FAKE_PER_IMAGE_S = {"resnet18": 1e-2, "resnet10t": 6e-3, "small_cnn": 1e-3}  # at 96 px


class _FakeProbe:
    """Unit costs as a CPU has them: per-image work grows with the pixels plus a fixed part
    that scaling by pixels misses (so small sides cost more than their pixels say)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def costs(self, model: str, side: int) -> StepCosts:
        t = FAKE_PER_IMAGE_S[model] * (side / 96) ** 2 + 2e-3
        return StepCosts(
            train_s_per_image=t, eval_s_per_image=t / 5, save_s=0.1, trust_s=0.5, setup_s=0.5
        )

    def __call__(self, plan, ds, device, *, shape=None, batch_loss=None, trust=True):
        side = (shape or ds.splits["train"].images.shape[2:])[-1]
        self.calls.append((plan.model.name, side))
        return self.costs(plan.model.name, side)


def _counts(plan, ds) -> dict[str, int]:
    n = {split: len(ds.splits[split]) for split in ("train", "val", "test")}
    return {f"n_{k}": v for k, v in n.items()} | {"batch_size": plan.train.batch_size}


@pytest.mark.parametrize("named_model", [False, True])
def test_a_budget_trains_the_model_it_measured(folder96, offline_hub, monkeypatch, named_model):
    """Below 48 px the planner trains a small CNN on a CPU: a budget that ends at 32 px must
    have measured that CNN (not ResNet-18) and give it the epochs that fit; a model the user
    named is kept at every side."""
    from medlens.train import probe

    fake = _FakeProbe()
    monkeypatch.setattr(probe, "measure_costs", fake)
    free, _, ds = ml.plan(str(folder96), device="cpu", estimate=False)
    counts = _counts(free, ds)
    # ResNet-10-T at 48 px would need 6 epochs: a little more than the budget
    budget = 0.95 * estimate_run(fake.costs("resnet10t", 48), epochs=6, **counts).seconds
    overrides = {"train.budget": f"{budget:.3f}s"}
    if named_model:
        overrides["model.name"] = "resnet18"
    plan, _, ds = ml.plan(str(folder96), device="cpu", overrides=overrides)
    side = plan.data.preprocess.size[-1]
    assert (plan.model.name, side) in fake.calls  # the estimate is of what trains, measured
    assert max(s for _, s in fake.calls) <= 96  # no probe at 224 px for a budget this small
    expected = estimate_run(fake.costs(plan.model.name, side), epochs=plan.train.epochs, **counts)
    assert plan.train.estimated_seconds == pytest.approx(expected.seconds, abs=0.06)
    assert plan.train.estimated_seconds <= budget
    if named_model:
        assert {model for model, _ in fake.calls} == {"resnet18"}
    else:
        assert (plan.model.name, side) == ("small_cnn", 32)
        assert plan.train.epochs >= MIN_EPOCHS_SCRATCH
        assert plan.train.estimated_seconds > 0.5 * budget  # the budget is used, not wasted


def test_budgets_that_cannot_work_are_refused(folder96, offline_hub, monkeypatch):
    from medlens.train import probe

    with pytest.raises(ConfigError, match="train.budget"):
        _plan(folder96, overrides={"train.budget": "0"}, estimate=False)
    with pytest.raises(ConfigError, match="not a duration"):
        _plan(folder96, overrides={"train.budget": "soon"}, estimate=False)
    monkeypatch.setattr(probe, "measure_costs", _FakeProbe())  # one epoch: over 1 s
    with pytest.raises(ConfigError, match=r"too small .* small_cnn at 32 px .* --budget 1m"):
        _plan(folder96, overrides={"train.budget": "0.5s"})


def test_long_epochs_write_progress_lines(monkeypatch, tmp_path, blobs64, offline_hub):
    monkeypatch.setattr(loop, "HEARTBEAT_SECONDS", 0.0)
    printed = []

    class Pipe(RichReporter):  # a console that is not a terminal: no bar, lines instead
        def heartbeat(self, text):
            assert not self.console.is_terminal
            printed.append(text)
            super().heartbeat(text)

    from rich.console import Console

    out = tmp_path / "run"
    ml.train(
        str(blobs64),
        output=out,
        device="cpu",
        epochs=1,
        model="small_cnn",
        reporter=Pipe(Console(file=open(tmp_path / "stdout.txt", "w"))),  # noqa: SIM115
    )
    log = (out / "log.txt").read_text()
    lines = [line for line in log.splitlines() if "images/s, epoch ETA" in line]
    assert lines and printed and printed[0] in log
    assert "epoch 1/1:" in lines[0] and "/96 images" in lines[0]
    assert "time: " in log and "predicted" in log
    logging.getLogger(f"medlens.run.{out.resolve()}").handlers.clear()
    assert np.isfinite(ml.Run.open(out).metrics()["test"]["auc"])
