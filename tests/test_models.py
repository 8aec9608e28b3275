"""Model registry: own models, timm names, error messages and offline pretrained weights."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from medlens.errors import ModelError
from medlens.models import registry
from medlens.models.registry import (
    count_parameters,
    create_model,
    list_models,
    list_timm_models,
    model_spatial_dims,
)

OWN_2D = ["resnet18_medmnist", "resnet50_medmnist", "small_cnn"]
OWN_3D = ["small_cnn_3d", "resnet18_3d", "resnet50_3d"]
# 3D ResNets keep full resolution through layer1: 64^3 costs ~10-30 s of CPU per forward, so
# at 64 px their shapes are checked on the meta device (shape propagation, no arithmetic).
HEAVY_3D = {"resnet18_3d", "resnet50_3d"}


def _input(spatial_dims: int, in_chans: int, size: int, batch: int = 2) -> torch.Tensor:
    """A fixed random batch of images (B, C, H, W) or volumes (B, C, D, H, W)."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, in_chans, *([size] * spatial_dims), generator=gen)


@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", OWN_2D + OWN_3D)
def test_own_model_output_shape(name: str, in_chans: int, size: int) -> None:
    dims = model_spatial_dims(name)
    model = create_model(name, in_chans=in_chans, num_classes=3, spatial_dims=dims).eval()
    x = _input(dims, in_chans, size)
    if name in HEAVY_3D and size > 28:
        model, x = model.to("meta"), x.to("meta")
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3)


@pytest.mark.parametrize("name", OWN_2D + OWN_3D)
def test_own_model_trains(name: str) -> None:
    torch.manual_seed(0)
    dims = model_spatial_dims(name)
    model = create_model(name, in_chans=1, num_classes=2, spatial_dims=dims).train()
    x = _input(dims, 1, 28 if dims == 2 else 8, batch=4)
    y = torch.tensor([0, 1, 0, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    with torch.no_grad():
        before = loss_fn(model(x), y).item()
    for _ in range(3):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = loss_fn(model(x), y).item()
    assert after < before, f"{name}: loss {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("name", OWN_2D + OWN_3D)
def test_own_model_drop_rate(name: str) -> None:
    dims = model_spatial_dims(name)
    model = create_model(name, in_chans=1, num_classes=2, spatial_dims=dims, drop_rate=0.5)
    x = _input(dims, 1, 28 if dims == 2 else 8, batch=4)
    with torch.no_grad():
        torch.manual_seed(0)
        first = model.train()(x)
        assert not torch.allclose(first, model(x))  # dropout active while training
        assert torch.allclose(model.eval()(x), model(x))  # and off in eval mode


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_timm_model_one_channel(name: str) -> None:
    model = create_model(name, in_chans=1, num_classes=4).eval()
    with torch.no_grad():
        y = model(_input(2, 1, 64))
    assert y.shape == (2, 4)
    assert model_spatial_dims(name) == 2


def test_timm_model_refuses_3d() -> None:
    with pytest.raises(ModelError, match="3D") as info:
        create_model("resnet18", in_chans=1, num_classes=2, spatial_dims=3)
    assert "resnet18_3d" in str(info.value)  # names the 3D models that fit


def test_own_model_refuses_other_dims() -> None:
    with pytest.raises(ModelError, match="small_cnn_3d"):
        create_model("small_cnn", in_chans=1, num_classes=2, spatial_dims=3)
    with pytest.raises(ModelError, match="is 3D but the data is 2D"):
        create_model("resnet18_3d", in_chans=1, num_classes=2)


@pytest.mark.parametrize(("name", "last_bn"), [("resnet18_3d", "bn2"), ("resnet50_3d", "bn3")])
def test_resnet3d_small_volume_stem(name: str, last_bn: str) -> None:
    model = create_model(name, in_chans=1, num_classes=2, spatial_dims=3)
    assert model.conv1.kernel_size == (3, 3, 3) and model.conv1.stride == (1, 1, 1)
    assert model.no_max_pool
    assert torch.all(getattr(model.layer1[0], last_bn).weight == 0)  # zero-init residuals


def test_resnet18_medmnist_keeps_resolution() -> None:
    model = create_model("resnet18_medmnist", in_chans=1, num_classes=2).eval()
    assert isinstance(model.maxpool, nn.Identity)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    with torch.no_grad():
        feats = model.forward_features(_input(2, 1, 28))
    assert feats.shape == (2, 512, 4, 4)


def _resnet18_body_params() -> int:
    """Parameters of torchvision/timm ResNet-18 between stem conv and fc, counted by hand."""

    def conv(k: int, cin: int, cout: int) -> int:
        return k * k * cin * cout

    def bn(c: int) -> int:
        return 2 * c

    def block(cin: int, cout: int, downsample: bool) -> int:
        n = conv(3, cin, cout) + bn(cout) + conv(3, cout, cout) + bn(cout)
        return n + (conv(1, cin, cout) + bn(cout) if downsample else 0)

    stages = 0
    cin = 64
    for cout in (64, 128, 256, 512):
        stages += block(cin, cout, downsample=cin != cout) + block(cout, cout, downsample=False)
        cin = cout
    return bn(64) + stages  # bn1 + layer1..layer4


def test_parameter_counts() -> None:
    model = create_model("resnet18_medmnist", in_chans=1, num_classes=2)
    stem, head = 3 * 3 * 1 * 64, 512 * 2 + 2
    expected = stem + _resnet18_body_params() + head
    assert expected == 11_168_706
    assert count_parameters(model) == expected
    small = create_model("small_cnn", in_chans=1, num_classes=2)
    assert 0.3e6 < count_parameters(small) < 0.5e6
    for p in small.blocks.parameters():
        p.requires_grad_(False)
    assert count_parameters(small, trainable_only=True) < count_parameters(small)


def test_small_cnn_timm_interface() -> None:
    model = create_model("small_cnn_3d", in_chans=2, num_classes=3, spatial_dims=3).eval()
    x = _input(3, 2, 28)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 256, 3, 3, 3)
        assert torch.allclose(model.forward_head(feats), model(x))
    assert model.get_classifier() is model.fc
    assert isinstance(model.features[0], nn.Conv3d)  # last conv block: Grad-CAM target


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(ModelError, match="resnet18") as info:
        create_model("resnet81", in_chans=1, num_classes=2)
    assert "medlens models" in str(info.value)
    with pytest.raises(ModelError, match="small_cnn"):
        model_spatial_dims("smal_cnn")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_chans": 0}, "in_chans"),
        ({"num_classes": 0}, "num_classes"),
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"drop_rate": 1.0}, "drop_rate"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"in_chans": 1, "num_classes": 2} | kwargs
    with pytest.raises(ModelError, match=match):
        create_model("small_cnn", **args)


def test_list_models() -> None:
    dims = {m["name"]: m["spatial_dims"] for m in list_models()}
    assert dims == {
        "resnet18_medmnist": 2,
        "resnet50_medmnist": 2,
        "mobilenetv3_small_medmnist": 2,
        "small_cnn": 2,
        "small_cnn_3d": 3,
        "resnet18_3d": 3,
        "densenet121_3d": 3,
        "cnn_transformer": 2,
        "resnet50_3d": 3,
    }
    assert all(m["description"] for m in list_models())
    # densenet121_3d and cnn_transformer are exercised in test_architectures.py
    assert {m["name"] for m in list_models(3)} == {*OWN_3D, "densenet121_3d"}
    assert {m["name"] for m in list_models(2)} == {
        *OWN_2D,
        "cnn_transformer",
        "mobilenetv3_small_medmnist",
    }
    assert "resnet18" in list_timm_models("resnet1*")
    assert all(n.startswith("efficientnet_b") for n in list_timm_models("efficientnet_b*"))


def test_2d_models_do_not_import_monai() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from medlens.models.registry import create_model; "
        "create_model('small_cnn', in_chans=1, num_classes=2); "
        "create_model('resnet18_medmnist', in_chans=1, num_classes=2); "
        "create_model('resnet18', in_chans=1, num_classes=2); "
        "assert 'monai' not in sys.modules, 'monai imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- pretrained weights: never touch the network ----------------------------------------------


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """huggingface_hub in offline mode with an empty cache; fail if anything probes the Hub."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import, so patch it too
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))

    def no_probe(timeout: float = 3.0) -> bool:
        raise AssertionError("the Hub must not be probed in offline mode")

    monkeypatch.setattr(registry, "hub_reachable", no_probe)


@pytest.mark.parametrize("name", ["resnet18", "resnet18_medmnist"])
def test_pretrained_offline_raises_model_error(name: str, offline_hub: None) -> None:
    start = time.monotonic()
    with pytest.raises(ModelError, match="pretrained") as info:
        create_model(name, in_chans=1, num_classes=2, pretrained=True)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "could not be downloaded" in message and "offline" in message
    assert "from scratch" in message


def test_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No HF_HUB_OFFLINE set but no network: offline mode for the call, restored after."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(registry, "hub_reachable", lambda timeout=3.0: False)
    start = time.monotonic()
    with pytest.raises(ModelError, match="pretrained weights for resnet18"):
        create_model("resnet18", in_chans=3, num_classes=2, pretrained=True)
    assert time.monotonic() - start < 10
    assert constants.HF_HUB_OFFLINE is False


def test_failed_download_from_any_source(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm.models._builder as builder

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr(registry, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(builder, "load_pretrained", fail)
    with pytest.raises(ModelError, match="offline"):
        create_model("efficientnet_b0", in_chans=3, num_classes=2, pretrained=True)


def test_medmnist_pretrained_keeps_stages_fresh_stem(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm.models._builder as builder

    def fake_weights(model: nn.Module, *args: object, **kwargs: object) -> None:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.5)

    monkeypatch.setattr(registry, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(builder, "load_pretrained", fake_weights)
    model = create_model("resnet18_medmnist", in_chans=1, num_classes=2, pretrained=True)
    assert torch.all(model.layer1[0].conv1.weight == 0.5)
    assert torch.all(model.layer4[1].conv2.weight == 0.5)
    assert torch.all(model.bn1.weight == 0.5)  # timm's bn1 kept
    assert not torch.all(model.conv1.weight == 0.5)  # new stem: kaiming init
    assert model.conv1.weight.shape == (64, 1, 3, 3)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18_3d"])
def test_pretrained_unavailable_for_own_models(name: str) -> None:
    dims = model_spatial_dims(name)
    with pytest.raises(ModelError, match="pretrained"):
        create_model(name, in_chans=1, num_classes=2, spatial_dims=dims, pretrained=True)


def test_timm_model_without_pretrained_weights() -> None:
    untrained = next(n for n in list_timm_models() if not _has_weights(n))
    with pytest.raises(ModelError, match="no pretrained weights"):
        create_model(untrained, in_chans=3, num_classes=2, pretrained=True)


def _has_weights(name: str) -> bool:
    import timm

    return timm.models.is_model_pretrained(name)
