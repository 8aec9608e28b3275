"""Issue 5: every architecture of the literature trains a step; local weights load exactly;
--init starts from an earlier run; freezing, gradual unfreezing and layer-wise lr decay do what
they say; 2.5D reuses 2D weights; bad weights files are refused with the layers named."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from medlens.cli import main
from medlens.config import load_plan
from medlens.errors import CheckpointError, ModelError
from medlens.models.registry import LITERATURE, create_model, list_models, parameter_count
from medlens.models.slices import SliceStack
from medlens.models.weights import load_initial_weights
from medlens.train.finetune import Freezer, layer_groups
from medlens.train.optim import build_optimizer, build_scheduler

# (name, spatial dims, input side, extra create_model arguments): the smallest sensible input
# for each; ViTs and the timm hybrids are built for that size (img_size).
ARCHITECTURES = [
    *[(name, 2, 32, {}) for name in LITERATURE if "vit" not in name],
    ("vit_small_patch16_224", 2, 32, {"img_size": 32}),
    ("vit_base_patch16_224", 2, 32, {"img_size": 32}),
    ("vit_small_r26_s32_224", 2, 64, {"img_size": 64}),
    ("vit_base_r50_s16_224", 2, 32, {"img_size": 32}),
    *[(m["name"], 2, 28, {"img_size": 28}) for m in list_models(2)],
    *[(m["name"], 3, 32 if "densenet" in m["name"] else 16, {}) for m in list_models(3)],
    ("resnet18", 3, 16, {"slices": 3}),  # 2.5D
    ("efficientnet_b0", 3, 32, {"slices": 1}),
]


@pytest.mark.parametrize(
    ("name", "dims", "side", "extra"), ARCHITECTURES, ids=[a[0] + str(a[3]) for a in ARCHITECTURES]
)
def test_every_architecture_trains_one_step(name, dims, side, extra):
    torch.manual_seed(0)
    model = create_model(name, in_chans=1, num_classes=3, spatial_dims=dims, **extra)
    x = torch.randn((2, 1) + (side,) * dims)
    y = torch.tensor([0, 2])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    groups = layer_groups(model)
    first = next(n for n, p in model.named_parameters() if p.ndim > 1)
    assert first in changed and set(groups[-1]) <= set(changed)  # stem to classifier
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 3)


def test_parameter_counts_match_built_models():
    for name in ("resnet18", "vit_small_patch16_224", "cnn_transformer", "densenet121_3d"):
        dims = 3 if name.endswith("_3d") else 2
        built = create_model(name, in_chans=1, num_classes=2, spatial_dims=dims)
        assert parameter_count(name, dims) == sum(p.numel() for p in built.parameters())
    assert parameter_count("vgg16") == 134_267_586


def _timm(name="resnet18", in_chans=3, num_classes=1000, seed=0):
    torch.manual_seed(seed)
    return timm.create_model(name, in_chans=in_chans, num_classes=num_classes)


def test_local_weights_round_trip_exactly(tmp_path):
    source = _timm(num_classes=5, in_chans=1)
    state = source.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    # a DDP-style timm/Lightning checkpoint: nested, "module." prefixes
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(wrapped, tmp_path / "w.pth")
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pth"):
        target = _timm(num_classes=5, in_chans=1, seed=1)
        report = load_initial_weights(target, path)
        assert report.loaded == len(state) and not report.reinitialised and not report.adapted
        for k, v in target.state_dict().items():
            assert torch.equal(v, state[k]), k


def test_rgb_stem_adapts_to_grey_and_new_classes_get_a_fresh_head(tmp_path):
    rgb = _timm()  # ImageNet-shaped: 3 channels, 1000 classes
    save_file(
        {k: v.contiguous() for k, v in rgb.state_dict().items()}, tmp_path / "in1k.safetensors"
    )
    grey = create_model("resnet18", in_chans=1, num_classes=2)
    fresh_fc = grey.fc.weight.detach().clone()
    report = load_initial_weights(grey, tmp_path / "in1k.safetensors")
    assert report.adapted == ["conv1.weight"]
    assert set(report.reinitialised) == {"fc.weight", "fc.bias"}
    # timm's rule for one channel: the sum of the RGB kernels
    expected = rgb.conv1.weight.sum(dim=1, keepdim=True)
    assert torch.allclose(grey.conv1.weight, expected, atol=1e-6)
    assert torch.equal(grey.layer4[1].conv2.weight, rgb.layer4[1].conv2.weight)
    assert torch.equal(grey.fc.weight, fresh_fc)


def test_2d_weights_load_into_a_25d_model(tmp_path):
    rgb = _timm(num_classes=10)
    save_file(
        {k: v.contiguous() for k, v in rgb.state_dict().items()}, tmp_path / "r18.safetensors"
    )
    model = create_model("resnet18", in_chans=1, num_classes=2, spatial_dims=3, slices=3)
    assert isinstance(model, SliceStack)
    from medlens.train.finetune import unwrap_backbone

    target = unwrap_backbone(model, str(tmp_path / "r18.safetensors"))
    assert target is model.backbone
    report = load_initial_weights(target, tmp_path / "r18.safetensors")
    assert not report.adapted  # 3 neighbouring slices = 3 channels: the RGB stem fits as it is
    assert torch.equal(model.backbone.conv1.weight, rgb.conv1.weight)
    # each slice is seen with its two neighbours
    vol = torch.arange(5, dtype=torch.float32).reshape(1, 1, 5, 1, 1).expand(1, 1, 5, 2, 2)
    windows = model.windows(vol)[:, :, 0, 0]
    assert windows.tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 4]]


def test_bad_weights_files_are_refused(tmp_path):
    state = _timm(in_chans=1, num_classes=2).state_dict()
    narrow = dict(state)
    narrow["layer1.0.conv1.weight"] = torch.zeros(32, 64, 3, 3)
    narrow["layer2.0.bn1.weight"] = torch.zeros(7)
    save_file({k: v.contiguous() for k, v in narrow.items()}, tmp_path / "narrow.safetensors")
    model = create_model("resnet18", in_chans=1, num_classes=2)
    with pytest.raises(CheckpointError) as err:
        load_initial_weights(model, tmp_path / "narrow.safetensors")
    assert "2 layer(s) have other shapes" in str(err.value)
    assert "layer1.0.conv1.weight (32, 64, 3, 3) vs (64, 64, 3, 3)" in str(err.value)
    assert "layer2.0.bn1.weight" in str(err.value)

    other = _timm("densenet121", in_chans=1, num_classes=2).state_dict()
    save_file({k: v.contiguous() for k, v in other.items()}, tmp_path / "dense.safetensors")
    with pytest.raises(CheckpointError, match="does not hold weights for this model"):
        load_initial_weights(model, tmp_path / "dense.safetensors")

    good = (tmp_path / "narrow.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(good[: len(good) // 3])
    with pytest.raises(CheckpointError, match="cut.safetensors is not a readable weights file"):
        load_initial_weights(model, tmp_path / "cut.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_initial_weights(model, tmp_path / "missing.pth")


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelError) as err:
        create_model("efficientnet_bo", in_chans=1, num_classes=2)
    assert "efficientnet_b0" in str(err.value)
    with pytest.raises(ModelError, match="for volumes; this data is 2D"):
        create_model("resnet18", in_chans=1, num_classes=2, slices=3)


def test_freezing_trains_the_head_only_and_keeps_bn_statistics():
    model = create_model("resnet18", in_chans=1, num_classes=2)
    freezer = Freezer(layer_groups(model), "backbone")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    model.train()
    trainable = freezer.apply(model, 0)
    assert trainable == 512 * 2 + 2
    for _ in range(2):
        loss = model(torch.randn(4, 1, 32, 32)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # no backbone weight, no BN running statistic


def test_gradual_unfreezing_opens_one_group_per_period():
    model = create_model("resnet18", in_chans=1, num_classes=2)
    groups = layer_groups(model)
    assert len(groups) == 6 and groups[-1] == ["fc.bias", "fc.weight"]
    freezer = Freezer(groups, "gradual", every=2)
    counts = [freezer.trainable_groups(e) for e in range(12)]
    assert counts == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    model.train()
    freezer.apply(model, 2)  # head + layer4
    grads = {n for n, p in model.named_parameters() if p.requires_grad}
    assert grads == set(groups[-1]) | set(groups[-2])
    assert all(n.startswith("layer4") for n in groups[-2])


def test_layer_decay_scales_each_group(breast_run):
    plan = load_plan(breast_run / "plan.yaml")
    optim = plan.optim.model_copy(update={"layer_decay": 0.5, "lr": 0.01})
    model = create_model("resnet18", in_chans=1, num_classes=2)
    opt = build_optimizer(model, optim)
    sched = build_scheduler(opt, plan.schedule, epochs=10, steps_per_epoch=10)
    sched.step_update(10)  # the end of warm-up: the peak lr
    by_scale = {}
    for g in opt.param_groups:
        by_scale.setdefault(g["lr_scale"], set()).add(round(g["lr"], 12))
    scales = sorted(by_scale)
    assert scales == [0.5**k for k in range(5, -1, -1)]
    for s in scales:
        assert by_scale[s] == {round(0.01 * s, 12)}
    no_decay = [g for g in opt.param_groups if g["weight_decay"] == 0.0]
    assert all(p.ndim <= 1 for g in no_decay for p in g["params"])


def test_init_starts_from_an_earlier_run(breast_run, tmp_path, medmnist_dir, capsys):
    """A run started with --init and a learning rate too small to move anything ends where the
    earlier run ended: same weights, same val AUC; without --init it is a different model."""
    import json

    from safetensors.torch import load_file

    args = ["train", "breastmnist", "--data-dir", str(medmnist_dir), "--epochs", "1"]
    args += ["--device", "cpu", "--lr", "1e-12", "--set", "evaluate.bootstrap=0"]
    assert main([*args, "--init", str(breast_run), "-o", str(tmp_path / "init")]) == 0
    assert main([*args, "-o", str(tmp_path / "scratch")]) == 0
    out = capsys.readouterr().out
    assert "model.init:" in out
    earlier = load_file(breast_run / "checkpoints" / "best.safetensors")
    started = load_file(tmp_path / "init" / "checkpoints" / "best.safetensors")
    scratch = load_file(tmp_path / "scratch" / "checkpoints" / "best.safetensors")
    weights = [k for k in earlier if k.endswith("weight") and earlier[k].ndim > 1]
    for k in weights:
        assert torch.allclose(started[k], earlier[k], atol=1e-6), k
    assert not torch.allclose(scratch[weights[0]], earlier[weights[0]], atol=1e-3)
    auc = lambda run: json.loads((run / "metrics.json").read_text())["val"]["auc"]  # noqa: E731
    assert auc(tmp_path / "init") == pytest.approx(auc(breast_run), abs=0.02)
    assert auc(tmp_path / "scratch") < auc(breast_run) - 0.1
    assert load_plan(tmp_path / "init" / "plan.yaml").model.init == str(breast_run)


def test_bad_init_fails_before_training(tmp_path, medmnist_dir, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    run = tmp_path / "run"
    args = ["train", "breastmnist", "--data-dir", str(medmnist_dir), "--epochs", "1"]
    code = main([*args, "--device", "cpu", "--init", str(tmp_path / "nope"), "-o", str(run)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "nope does not exist" in err and not run.exists()
    code = main([*args, "--device", "cpu", "--set", f"model.weights={bad}", "-o", str(run)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "bad.safetensors is not a readable weights file" in err
    code = main([*args, "--set", "model.pretrained=true", "--set", f"model.weights={bad}"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "exclude each other" in err


def test_models_command_lists_parameter_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for needle in ("vgg16", "134.3 M", "vit_base_r50_s16_224", "cnn_transformer", "densenet121_3d"):
        assert needle in out
