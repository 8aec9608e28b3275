"""Corruptions on real MedMNIST images, and the robustness table of a real trained model."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import medlens.api as ml
from medlens.analyse.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from medlens.analyse.robustness import corruption_table
from medlens.config import Plan, load_plan
from medlens.data.sources import load_dataset
from medlens.errors import ConfigError
from medlens.models.build import build_model
from medlens.models.checkpoint import load_weights

# the corruptions that draw random numbers; the others ignore the generator
RANDOM = {"gaussian_noise", "bias_field"}


def trained_breast_run(root: Path, medmnist_dir: Path) -> Path:
    """A 12-epoch BreastMNIST run with dropout 0.2 (test AUC about 0.85), trained once per
    session under ``root`` and reused by every module that asks for it (about 5 s on 2 CPUs)."""
    run = root / "breast_dropout"
    if not (run / "metrics.json").is_file():
        with pytest.MonkeyPatch.context() as mp:  # module-scoped: no function monkeypatch
            mp.setenv("MEDLENS_CACHE", str(root / "cache"))
            mp.setenv("MEDLENS_DATA", str(root / "data_home"))
            ml.train(
                "breastmnist",
                data_dir=str(medmnist_dir),
                output=run,
                device="cpu",
                epochs=12,
                overrides={"model.drop_rate": 0.2},
            )
    return run


def load_run(run: Path) -> tuple[torch.nn.Module, Plan]:
    plan = load_plan(run / "plan.yaml")
    model = build_model(plan, torch.device("cpu"))
    load_weights(run / "checkpoints" / "best.safetensors", model)
    return model.eval(), plan


@pytest.fixture(scope="module")
def dropout_run(tmp_path_factory, medmnist_dir) -> Path:
    return trained_breast_run(tmp_path_factory.getbasetemp(), medmnist_dir)


@pytest.fixture(scope="module")
def breast_test(medmnist_dir):
    return load_dataset("breastmnist", data_dir=str(medmnist_dir)).splits["test"]


@pytest.fixture(scope="module")
def images2d(medmnist_dir) -> torch.Tensor:
    """32 real BreastMNIST test images, (32, 1, 28, 28) in [0, 1]."""
    x = np.load(medmnist_dir / "breastmnist.npz")["test_images"][:32]
    return torch.from_numpy(x).float().div(255)[:, None]


@pytest.fixture(scope="module")
def volumes3d(medmnist_dir) -> torch.Tensor:
    """4 real AdrenalMNIST3D test volumes, (4, 1, 28, 28, 28) in [0, 1]."""
    x = np.load(medmnist_dir / "adrenalmnist3d.npz")["test_images"][:4]
    return torch.from_numpy(x).float().div(255)[:, None]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_same_seed_same_output_other_seed_differs(images2d, name):
    a = corrupt(images2d, name, 3, _gen(0))
    b = corrupt(images2d, name, 3, _gen(0))
    c = corrupt(images2d, name, 3, _gen(1))
    assert torch.equal(a, b)
    if name in RANDOM:
        assert (a - c).abs().mean() > 1e-3
    else:  # deterministic corruptions ignore the generator
        assert torch.equal(a, c)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_psnr_falls_with_every_severity_on_real_images(images2d, name):
    psnr = [_psnr(corrupt(images2d, name, s, _gen(0)), images2d) for s in SEVERITIES]
    assert all(b < a for a, b in itertools.pairwise(psnr)), psnr
    assert psnr[-1] < 32.0, psnr  # severity 5 is a visible change, not rounding


@pytest.mark.parametrize("name", list(CORRUPTIONS))
@pytest.mark.parametrize("which", ["2d", "3d"])
def test_shape_range_and_input_kept(images2d, volumes3d, name, which):
    x = images2d if which == "2d" else volumes3d
    before = x.clone()
    out = corrupt(x, name, 5, _gen(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert (out - x).abs().mean() > 1e-4  # it did something
    assert torch.equal(x, before)  # and left the input alone


def test_jpeg_on_3d_works_slice_by_slice(volumes3d):
    out = corrupt(volumes3d, "jpeg", 5, _gen(0))
    one_slice = corrupt(volumes3d[:, :, 10], "jpeg", 5, _gen(0))  # (N, C, H, W)
    torch.testing.assert_close(out[:, :, 10], one_slice)


def test_contrast_keeps_the_mean_and_scales_the_deviation(images2d):
    out = corrupt(images2d, "contrast", 1, _gen(0))  # kept contrast 0.4, no clamping needed
    mean = images2d.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(out, (images2d - mean) * 0.4 + mean)


def test_bad_name_severity_and_input_are_config_errors(images2d):
    with pytest.raises(ConfigError, match="'fog'.*gaussian_noise, gaussian_blur"):
        corrupt(images2d, "fog", 1, _gen(0))
    for bad in (0, 6, 2.5, True):
        with pytest.raises(ConfigError, match="one of 1, 2, 3, 4, 5"):
            corrupt(images2d, "contrast", bad, _gen(0))
    with pytest.raises(ConfigError, match="float batch"):
        corrupt((images2d * 255).to(torch.uint8), "contrast", 1, _gen(0))
    with pytest.raises(ConfigError, match="float batch"):
        corrupt(images2d[0], "contrast", 1, _gen(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_corruptions_run_on_cuda_like_on_cpu(images2d):
    x = images2d.cuda()
    for name in CORRUPTIONS:
        gpu = corrupt(x, name, 4, torch.Generator(device="cuda").manual_seed(0))
        again = corrupt(x, name, 4, torch.Generator(device="cuda").manual_seed(0))
        cpu_gen = corrupt(x, name, 4, _gen(0))  # a CPU generator with a GPU batch
        assert gpu.device.type == "cuda" and torch.equal(gpu, again)
        torch.testing.assert_close(cpu_gen.cpu(), corrupt(images2d, name, 4, _gen(0)))


def test_table_of_a_trained_breastmnist_model(dropout_run, breast_test):
    model, plan = load_run(dropout_run)
    rows = corruption_table(
        model, breast_test.images, breast_test.labels, plan, torch.device("cpu")
    )
    assert len(rows) == 1 + len(CORRUPTIONS) * len(SEVERITIES)
    clean = rows[0]
    assert (clean["corruption"], clean["severity"]) == ("clean", 0)
    saved = json.loads((dropout_run / "metrics.json").read_text())["test"]
    assert clean["auc"] == pytest.approx(saved["auc"], abs=1e-6)
    assert clean["acc"] == pytest.approx(saved["acc"], abs=1e-6)
    assert saved["auc"] > 0.75  # a model worth testing robustness on
    by = {(r["corruption"], r["severity"]): r for r in rows}
    assert set(by) == {("clean", 0)} | {(c, s) for c in CORRUPTIONS for s in SEVERITIES}
    assert by["gaussian_noise", 5]["auc"] < by["gaussian_noise", 1]["auc"]
    assert by["contrast", 5]["auc"] < by["contrast", 1]["auc"]
    for r in rows:
        assert set(r) == {"corruption", "severity", "auc", "acc", "auc_drop", "acc_drop"}
        assert r["auc_drop"] == pytest.approx(clean["auc"] - r["auc"], abs=1e-12)
        assert r["acc_drop"] == pytest.approx(clean["acc"] - r["acc"], abs=1e-12)
    assert not model.training  # left in the mode it came in


def test_table_is_deterministic_for_a_seed_and_keeps_model_mode(dropout_run, breast_test):
    model, plan = load_run(dropout_run)
    model.train()

    def table(seed: int, batch_size: int | None = None) -> list[dict]:
        return corruption_table(
            model,
            breast_test.images,
            breast_test.labels,
            plan,
            torch.device("cpu"),
            corruptions=["gaussian_noise", "bias_field"],
            severities=[2],
            seed=seed,
            batch_size=batch_size,
        )

    a, b, c = table(0), table(0), table(1)
    assert a == b
    assert [r["auc"] for r in a[1:]] != [r["auc"] for r in c[1:]]
    clean_only = corruption_table(  # small batches: the clean row does not change
        model,
        breast_test.images,
        breast_test.labels,
        plan,
        torch.device("cpu"),
        corruptions=[],
        batch_size=40,
    )
    assert len(clean_only) == 1
    assert clean_only[0]["auc"] == pytest.approx(a[0]["auc"], abs=1e-6)
    assert all(m.training for m in model.modules())  # train mode restored


def test_table_rejects_unknown_corruptions_before_any_work(breast_test):
    plan_like = None  # never reached: names are checked first
    with pytest.raises(ConfigError, match="unknown corruption 'fog'"):
        corruption_table(
            torch.nn.Identity(),
            breast_test.images,
            breast_test.labels,
            plan_like,  # type: ignore[arg-type]
            torch.device("cpu"),
            corruptions=["fog"],
        )
    with pytest.raises(ConfigError, match="one of 1, 2, 3, 4, 5"):
        corruption_table(
            torch.nn.Identity(),
            breast_test.images,
            breast_test.labels,
            plan_like,  # type: ignore[arg-type]
            torch.device("cpu"),
            severities=[9],
        )
