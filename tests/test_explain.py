"""Explanations: Grad-CAM/Grad-CAM++ find what a trained model uses, rollout matches a reference,
faithfulness beats chance, and ``medlens explain`` writes its files or fails on one line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import medlens.api as ml
from medlens.analyse.faithfulness import faithfulness_scores
from medlens.analyse.layers import choose_target_layer
from medlens.analyse.overlay import overlay_image, save_side_by_side
from medlens.analyse.saliency import default_method, saliency_maps
from medlens.cli import main
from medlens.errors import ConfigError, ModelError
from medlens.models.registry import create_model

SIZE = 32
CLASSES = ("left", "right", "none")


def _blob_images(n: int, seed: int) -> list[tuple[np.ndarray, int, tuple[float, float]]]:
    """32 px noise images, left half darker than the right (like two organs); class 0/1: a
    bright Gaussian blob at a random place in the left/right half, class 2: no blob.

    The halves give the blob's position a local meaning. On plain noise a network with global
    average pooling can only tell left from right through the image border, and it then
    (faithfully) looks between the blob and the border rather than at the blob.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    background = np.where(xx < SIZE // 2, 50.0, 100.0)
    out = []
    for i in range(n):
        k = i % 3
        r, c = rng.uniform(5, SIZE - 5), rng.uniform(4, SIZE // 2 - 4) + (k == 1) * SIZE // 2
        blob = 0.0 if k == 2 else 150 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 2.0**2))
        img = np.clip(rng.normal(background, 15) + blob, 0, 255).astype(np.uint8)
        out.append((img, k, (r, c)))
    return out


def _save(root: Path, items) -> dict[str, tuple[int, tuple[float, float]]]:
    """PNG class folders; returns {path: (class, blob centre)}."""
    truth = {}
    for i, (img, k, centre) in enumerate(items):
        folder = root / CLASSES[k]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{i:03d}.png"
        Image.fromarray(img).save(path)
        truth[str(path)] = (k, centre)
    return truth


@pytest.fixture(scope="module")
def blob_run(tmp_path_factory) -> dict:
    """A small_cnn run trained on the CPU on blob images, and held-out images with their truth."""
    root = tmp_path_factory.mktemp("explain")
    with pytest.MonkeyPatch.context() as mp:  # the conftest's own isolation is per test
        mp.setenv("MEDLENS_CACHE", str(root / "cache"))
        mp.setenv("MEDLENS_DATA", str(root / "data"))
        _save(root / "train", _blob_images(600, seed=0))
        # one epoch of 60 steps: val AUC reaches 1.0 within any first epoch, so with more
        # epochs the best checkpoint would be that first, barely trained one
        result = ml.train(
            str(root / "train"),
            output=root / "run",
            size=SIZE,
            model="small_cnn",
            device="cpu",
            epochs=1,
            batch_size=8,
            lr=3e-3,
            seed=0,
            overrides={"schedule.warmup_epochs": 0, "data.preprocess.normalize": "none"},
        )
    truth = _save(root / "held", _blob_images(45, seed=1))
    assert result.plan.model.name == "small_cnn"
    return {"root": root, "run": result.run_dir, "held": root / "held", "truth": truth}


def _held_out_accuracy(rows, truth) -> float:
    return float(np.mean([r["predicted"] == CLASSES[truth[r["path"]][0]] for r in rows]))


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_gradcam_peaks_on_the_blob_that_decides_the_class(blob_run, tmp_path, method):
    from medlens.api import explain

    rows = explain(
        blob_run["run"],
        [blob_run["held"]],
        tmp_path / "out",
        method=method,
        # the second conv block: a 16x16 map (2 px per cell). The last block ("features") is
        # 4x4 here, 8 px per cell, too coarse to place a peak within a few pixels
        target_layer="blocks.2",
    )
    truth = blob_run["truth"]
    assert len(rows) == 45
    accuracy = _held_out_accuracy(rows, truth)
    assert accuracy >= 0.95, accuracy  # otherwise the model has not learnt the blobs
    distances = np.array(
        [
            np.hypot(r["peak_row"] - truth[r["path"]][1][0], r["peak_col"] - truth[r["path"]][1][1])
            for r in rows
            if truth[r["path"]][0] != 2
        ]
    )
    hit_rate = float((distances <= 4).mean())
    # a peak drawn at random lands within 4 px of the centre about 5% of the time
    assert hit_rate >= 0.8, (hit_rate, np.round(distances, 1))
    assert all(Path(r["png"]).is_file() for r in rows)
    assert Path(rows[0]["png"]).name.endswith(f"_{method}.png")


def test_gradcam_deletes_faster_and_inserts_faster_than_a_random_map(blob_run):
    """RISE deletion/insertion on the trained blob model, with the default target layer."""
    from medlens.data.images import read_inputs
    from medlens.data.loader import device_arrays
    from medlens.run import Run

    run = Run.open(blob_run["run"])
    recipe = run.plan
    files = [Path(p) for p, (k, _) in blob_run["truth"].items() if k != 2]
    images = read_inputs(files, recipe, run.input_shape())
    model, _ = run.load_model(torch.device("cpu"))
    x = device_arrays(recipe, images, np.zeros(len(files)), torch.device("cpu")).prepare(
        torch.from_numpy(images)
    )
    with torch.no_grad():
        targets = model(x).argmax(1)
    assert choose_target_layer(model, x).name == "features"
    maps = saliency_maps(model, x, targets)
    scores = faithfulness_scores(model, x, maps, targets, steps=20)
    deletion, chance = scores["deletion"].mean(), scores["random_deletion"].mean()
    assert deletion < chance - 0.2, scores
    assert (scores["deletion"] < scores["random_deletion"]).mean() >= 0.9, scores
    assert scores["insertion"].mean() > scores["random_insertion"].mean(), scores
    again = faithfulness_scores(model, x, maps, targets, steps=20)
    assert np.array_equal(again["random_deletion"], scores["random_deletion"])  # repeatable


def test_gradcam_of_a_pooled_linear_head_is_its_class_activation_map():
    """For global average pooling + linear (small_cnn), Grad-CAM equals ReLU(CAM) exactly: an
    independent formula. Mixed targets in one batch and channels_last catch per-image mix-ups."""
    torch.manual_seed(0)
    model = create_model("small_cnn", in_chans=1, num_classes=3).to(
        memory_format=torch.channels_last
    )
    x = torch.randn(4, 1, 24, 24).contiguous(memory_format=torch.channels_last)
    targets = torch.tensor([0, 2, 1, 2])
    maps = saliency_maps(model, x, targets)
    with torch.no_grad():
        feats = model.forward_features(x)
        cam = torch.einsum("nchw,nc->nhw", feats, model.fc.weight[targets]).relu()
        cam = F.interpolate(cam[:, None], size=(24, 24), mode="bilinear", align_corners=False)[:, 0]
    span = cam.amax((1, 2), keepdim=True) - cam.amin((1, 2), keepdim=True)
    assert int((span > 0).sum()) >= 3  # at most one map is all zeros
    cam = torch.where(span > 0, (cam - cam.amin((1, 2), keepdim=True)) / span, 0.0)
    assert maps.shape == (4, 24, 24) and maps.dtype == torch.float32
    assert torch.allclose(maps, cam, atol=1e-4)
    # Grad-CAM++ of a batch equals Grad-CAM++ image by image
    plus = saliency_maps(model, x, targets, method="gradcam++")
    one_by_one = torch.cat(
        [saliency_maps(model, x[i : i + 1], targets[i : i + 1], "gradcam++") for i in range(4)]
    )
    assert torch.allclose(plus, one_by_one, atol=1e-5)


class _TinyConvNet(torch.nn.Module):
    """conv -> conv (the Grad-CAM layer) -> conv -> average pool -> linear: the layer after the
    target makes its gradients differ from pixel to pixel, as they do in real networks."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.target = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.head = torch.nn.Conv2d(6, 5, 3, padding=1)
        self.fc = torch.nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.target(F.relu(self.stem(x))))
        return self.fc(F.relu(self.head(a)).mean((2, 3)))


def _gradcam_pp_reference(model, x, targets, layer, spatial_sum_after_cube=False):
    """Grad-CAM++ written out from Chattopadhyay et al. (2018), eq. 19 and the exponential
    score S = exp(Y) (eq. 16-18): for a piecewise-linear network the 1st/2nd/3rd derivatives
    of S by the activations A are exp(Y) g, exp(Y) g^2, exp(Y) g^3 (g = dY/dA), so

        alpha_ij = g_ij^2 / (2 g_ij^2 + sum_ab(A_ab) g_ij^3)
        w_k = sum_ij alpha_ij relu(exp(Y) g_ij),  map = relu(sum_k w_k A_k),

    upsampled bilinearly and scaled to [0, 1].

    ``spatial_sum_after_cube``: the variant that sums A_ab g_ab^3 over positions instead."""
    kept = {}
    handle = layer.register_forward_hook(lambda m, i, out: kept.__setitem__("a", out))
    with torch.enable_grad():
        logits = model(x)
        handle.remove()
        a = kept["a"]
        y = logits.gather(1, targets[:, None])[:, 0]
        (g,) = torch.autograd.grad(y.sum(), a)
    a, g = a.detach().double(), g.double()
    s = y.detach().double().exp().view(-1, 1, 1, 1)
    d1, d2, d3 = s * g, s * g**2, s * g**3
    if spatial_sum_after_cube:
        third = (a * d3).sum((2, 3), keepdim=True)
    else:
        third = a.sum((2, 3), keepdim=True) * d3
    denom = 2 * d2 + third
    alpha = torch.where(denom != 0, d2 / torch.where(denom != 0, denom, 1.0), 0.0)
    w = (alpha * F.relu(d1)).sum((2, 3), keepdim=True)
    cam = F.relu((w * a).sum(1, keepdim=True)).float()
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    lo = cam.amin((1, 2), keepdim=True)
    span = cam.amax((1, 2), keepdim=True) - lo
    return torch.where(span > 0, (cam - lo) / span.clamp_min(1e-12), 0.0)


def test_gradcam_plus_plus_follows_the_papers_formula():
    """Against eq. 19 written out in plain torch, on a model whose gradients vary in space
    (where the formula's sum over A and the cube of g at each position matter)."""
    torch.manual_seed(0)
    model = _TinyConvNet().eval()
    x = torch.randn(4, 1, 16, 16)
    targets = torch.tensor([0, 2, 1, 2])
    ours = saliency_maps(model, x, targets, method="gradcam++", target_layer="target")
    paper = _gradcam_pp_reference(model, x, targets, model.target)
    variant = _gradcam_pp_reference(model, x, targets, model.target, spatial_sum_after_cube=True)
    assert ours.shape == (4, 16, 16)
    assert (paper.amax((1, 2)) == 1).all()  # no map is empty
    assert (paper - variant).abs().max() > 0.05  # the two readings of eq. 19 differ here
    assert torch.allclose(ours, paper, atol=1e-4)


def test_gradcam_on_a_3d_model_is_deterministic_and_leaves_the_model_clean():
    torch.manual_seed(0)
    model = create_model("small_cnn_3d", in_chans=1, num_classes=2, spatial_dims=3)
    model.train()
    x = torch.randn(2, 1, 16, 20, 24)
    for method in ("gradcam", "gradcam++"):
        maps = saliency_maps(model, x, method=method)
        assert maps.shape == (2, 16, 20, 24) and maps.dtype == torch.float32
        assert maps.device.type == "cpu"
        assert float(maps.min()) == 0.0 and float(maps.max()) == 1.0
        assert torch.equal(maps, saliency_maps(model, x, method=method))
    assert not model.training
    hooks = sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )
    assert hooks == 0
    assert all(p.grad is None for p in model.parameters())
    assert all(m.inplace for m in model.modules() if isinstance(m, torch.nn.ReLU))
    with torch.inference_mode():  # callers inside inference mode still get maps
        assert saliency_maps(model, x).shape == (2, 16, 20, 24)


def test_target_layer_by_name_and_unknown_names():
    model = create_model("small_cnn", in_chans=1, num_classes=2)
    x = torch.randn(2, 1, 32, 32)
    assert choose_target_layer(model, x).name == "features"
    assert saliency_maps(model, x, target_layer="blocks.2").shape == (2, 32, 32)
    with pytest.raises(ModelError, match=r"no layer named 'featurs'.*e\.g\. features"):
        saliency_maps(model, x, target_layer="featurs")
    with pytest.raises(ModelError, match="not a spatial feature map"):
        saliency_maps(model, x, target_layer="fc")
    with pytest.raises(ConfigError, match="unknown explanation method 'lime'"):
        saliency_maps(model, x, method="lime")
    with pytest.raises(ModelError, match="use method gradcam"):
        saliency_maps(model, x, method="rollout")
    assert default_method(model) == "gradcam"


def _tiny_vit():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(
        img_size=32,
        patch_size=8,
        in_chans=1,
        num_classes=2,
        embed_dim=32,
        depth=3,
        num_heads=4,
        reg_tokens=2,  # two register tokens besides the class token
        qk_norm=True,
    ).eval()


def _reference_rollout(model, x: torch.Tensor) -> np.ndarray:
    """Rollout from timm's own non-fused attention probabilities, written out plainly."""
    captured = []
    handles = []
    for block in model.blocks:
        block.attn.fused_attn = False
        handles.append(
            block.attn.attn_drop.register_forward_hook(lambda m, i, o: captured.append(o))
        )
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    for block in model.blocks:
        block.attn.fused_attn = True
    prefix = model.num_prefix_tokens
    maps = []
    for i in range(x.shape[0]):
        joint = np.eye(captured[0].shape[-1])
        for attn in captured:
            a = attn[i].numpy().mean(axis=0) + np.eye(attn.shape[-1])
            joint = (a / a.sum(axis=1, keepdims=True)) @ joint
        grid = torch.tensor(joint[0, prefix:].reshape(4, 4), dtype=torch.float32)
        up = F.interpolate(grid[None, None], size=(32, 32), mode="bilinear")[0, 0].numpy()
        maps.append((up - up.min()) / (up.max() - up.min()))
    return np.stack(maps)


def test_rollout_matches_a_reference_from_unfused_attention():
    model = _tiny_vit()
    x = torch.randn(3, 1, 32, 32)
    assert default_method(model) == "rollout"
    maps = saliency_maps(model, x, method="rollout")
    assert maps.shape == (3, 32, 32) and maps.dtype == torch.float32
    assert float(maps.min()) == 0.0 and float(maps.max()) == 1.0
    np.testing.assert_allclose(maps.numpy(), _reference_rollout(model, x), atol=1e-4)
    assert all(len(b.attn._forward_hooks) == 0 for b in model.blocks)


def test_rollout_follows_attention_forced_onto_one_patch():
    """One layer whose queries match only one patch's key: the map must peak on that patch
    (row 2, col 1 of the 4x4 grid; a transposed grid would put it at row 1, col 2)."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(
        img_size=32, patch_size=8, in_chans=1, num_classes=2, embed_dim=32, depth=1, num_heads=4
    ).eval()
    attn, dim = model.blocks[0].attn, 32
    patch = 2 * 4 + 1
    with torch.no_grad():
        attn.qkv.weight.zero_()
        attn.qkv.bias.zero_()
        attn.qkv.bias[:dim] = 1.0  # every query is all ones
        attn.qkv.weight[dim : 2 * dim, 0] = 1.0  # a key is channel 0 of its token

    def only_that_patch(_module, args):
        x = torch.zeros_like(args[0])
        x[:, model.num_prefix_tokens + patch, 0] = 100.0
        return (x,)

    hook = attn.register_forward_pre_hook(only_that_patch)
    try:
        maps = saliency_maps(model, torch.randn(1, 1, 32, 32), method="rollout")
    finally:
        hook.remove()
    row, col = np.unravel_index(int(maps[0].argmax()), (32, 32))
    assert (row // 8, col // 8) == (2, 1)


def test_rollout_on_a_hybrid_resnet_vit():
    import timm

    model = timm.create_model(
        "vit_tiny_r_s16_p8_224", pretrained=False, img_size=64, num_classes=2, in_chans=1
    ).eval()
    x = torch.randn(2, 1, 64, 64)
    assert default_method(model) == "rollout"
    maps = saliency_maps(model, x, method="rollout")
    assert maps.shape == (2, 64, 64) and float(maps.max()) == 1.0


def test_overlay_images_and_volumes(tmp_path):
    img = np.zeros((1, 8, 10), dtype=np.uint8)
    cam = np.zeros((8, 10))
    cam[2, 7] = 1.0
    out = overlay_image(img, cam, alpha=0.5)
    assert out.shape == (8, 10, 3) and out.dtype == np.uint8
    assert out[2, 7, 0] > out[2, 7, 2] and out[0, 0, 2] > out[0, 0, 0]  # hot is red, cold blue
    assert np.array_equal(overlay_image(img, cam, alpha=0.0), np.zeros((8, 10, 3), np.uint8))
    rgb = np.full((3, 8, 10), 200, dtype=np.uint8)
    assert overlay_image(rgb, cam).shape == (8, 10, 3)
    volume = np.zeros((1, 4, 8, 10), dtype=np.uint8)
    volume[0, 3] = 255
    vcam = np.zeros((4, 8, 10))
    vcam[3, 1, 1] = 1.0  # peak in slice 3, the bright one
    assert overlay_image(volume, vcam, alpha=0.0).min() == 255
    path = save_side_by_side(tmp_path / "x.png", volume, vcam)
    with Image.open(path) as png:
        assert png.size == (26 * (2 * 10 + 4), 26 * 8)  # enlarged 26x: 10 px wide -> 260 px
    with pytest.raises(ValueError, match="do not match"):
        overlay_image(img, np.zeros((4, 4)))


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_explain_writes_pngs_and_csv_and_bad_input_fails_on_one_line(
    blob_run, tmp_path, capsys
):
    run, held = blob_run["run"], blob_run["held"]
    out = tmp_path / "maps"
    code, stdout, err = run_cli(capsys, "explain", run, held / "left", "-o", out, "--faithfulness")
    assert code == 0, err
    pngs = sorted(out.glob("*_gradcam.png"))
    assert len(pngs) == 15 and "written to" in stdout
    with (out / "explanations.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15 and {r["method"] for r in rows} == {"gradcam"}
    assert {"deletion", "insertion", "random_deletion", "random_insertion"} <= set(rows[0])
    assert sum(r["predicted"] == "left" for r in rows) >= 14

    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    for args, expected in [
        (["--method", "shap"], "unknown explanation method 'shap'"),
        (["--method", "rollout"], "use method gradcam"),
        (["--layer", "nope"], "no layer named 'nope'"),
    ]:
        code, _, err = run_cli(capsys, "explain", run, held / "none", "-o", out, *args)
        message = " ".join(err.split())
        assert code == 2 and message.startswith("error:") and expected in message, err
        assert "Traceback" not in err
    code, _, err = run_cli(capsys, "explain", run, broken)
    assert code == 2 and "broken.png is not a readable" in " ".join(err.split())
    code, _, err = run_cli(capsys, "explain", run, tmp_path / "empty_dir_does_not_exist")
    assert code == 2 and "does not exist" in " ".join(err.split())
    code, stdout, _ = run_cli(capsys, "explain", "--help")
    assert code == 0 and "--faithfulness" in stdout and "--layer" in stdout
