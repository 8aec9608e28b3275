"""The two data paths: arrays resident on the device, and batches streamed by loader workers
(from RAM or a memory-mapped cache). Same seed, same batches, same training."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import medlens.api as ml
from medlens.config import AugmentConfig, apply_overrides
from medlens.data import loader
from medlens.data.loader import DeviceArrays
from medlens.data.sources import load_dataset
from medlens.errors import ConfigError
from tests.conftest import blob_images

# one pinned core in the test runs: torch warns about two workers, which is what is tested
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")

CPU = torch.device("cpu")
AUG = AugmentConfig(
    hflip=True, rotate_deg=10, scale=(0.9, 1.1), translate=0.05, brightness=0.1, contrast=0.1
)


def _arrays(images, labels, device=CPU, **kw) -> DeviceArrays:
    return DeviceArrays(images, labels, device, [0.5], [0.25], channels_last=True, **kw)


def _epoch(data: DeviceArrays, seed: int, **kw) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return list(data.batches(16, shuffle=True, generator=gen, augment=AUG, **kw))


def _random_arrays(n: int = 103) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 1, 20, 20), dtype=np.uint8), rng.integers(0, 3, n)


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_equal_resident_batches(workers):
    """Two epochs, augmentation on, with and without drop_last and sharding: torch.equal."""
    images, labels = _random_arrays()
    resident = _arrays(images, labels)
    streamed = _arrays(images, labels, on_device="never", workers=workers)
    assert resident.resident and not streamed.resident
    for epoch in range(2):
        for kw in ({}, {"drop_last": True}, {"shard": (0, 2)}, {"shard": (1, 2)}):
            a, b = _epoch(resident, epoch, **kw), _epoch(streamed, epoch, **kw)
            assert _same(a, b), (epoch, kw)
            assert b[0][0].is_contiguous(memory_format=torch.channels_last)
    # 103 images, batch 16: 7 batches, 6 with drop_last; shards take 51 images each
    assert [len(_epoch(streamed, 0, **kw)) for kw in ({}, {"drop_last": True})] == [7, 6]
    rank0, rank1 = (torch.cat([y for _, y in _epoch(streamed, 0, shard=(r, 2))]) for r in (0, 1))
    assert len(rank0) == len(rank1) == 51
    in_order = torch.cat([y for _, y in streamed.batches(40)])
    assert torch.equal(in_order, torch.from_numpy(labels))
    assert torch.equal(torch.cat(list(streamed.uint8_batches(40))), torch.from_numpy(images))


def _stats(data: DeviceArrays, epochs: int) -> dict[str, np.ndarray]:
    """Per batch: mean and std of the augmented pixels, and the share of label 1."""
    means, stds, balance = [], [], []
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(epoch)
        for x, y in data.batches(64, shuffle=True, generator=gen, drop_last=True, augment=AUG):
            means.append(float(x.mean()))
            stds.append(float(x.std()))
            balance.append(float((y == 1).float().mean()))
    return {"mean": np.array(means), "std": np.array(stds), "balance": np.array(balance)}


@pytest.fixture(scope="module")
def breast_train(medmnist_dir) -> tuple[np.ndarray, np.ndarray]:
    with np.load(medmnist_dir / "breastmnist.npz") as f:
        return f["train_images"][:, None], f["train_labels"].ravel().astype(np.int64)


def test_augmentation_statistics_agree_between_modes(breast_train):
    """On the CPU both modes draw the same random numbers: the statistics are identical."""
    images, labels = breast_train
    a = _stats(_arrays(images, labels), epochs=10)
    b = _stats(_arrays(images, labels, on_device="never", workers=2), epochs=10)
    assert len(a["mean"]) == 80  # 546 images, batch 64, drop_last: 8 batches per epoch
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # and they are what BreastMNIST gives: normalised with (0.5, 0.25), 73% label 1
    raw = (images / 255.0 - 0.5) / 0.25
    assert abs(a["mean"].mean() - raw.mean()) < 0.05
    assert a["std"].mean() == pytest.approx(raw.std(), rel=0.1)
    assert a["balance"].mean() == pytest.approx(labels.mean(), abs=0.01)
    assert a["balance"].std() > 0.02  # batches are shuffled, not stratified


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_resident_statistics_match_cpu_streamed_within_sampling_error(breast_train):
    """The CUDA generator draws other augmentations: equal within sampling error. The batch
    order comes from the CPU generator, so the label balance is identical."""
    images, labels = breast_train
    gpu = _stats(_arrays(images, labels, device=torch.device("cuda")), epochs=20)
    cpu = _stats(_arrays(images, labels, on_device="never", workers=2), epochs=20)
    np.testing.assert_array_equal(gpu["balance"], cpu["balance"])
    for key in ("mean", "std"):
        g, c = gpu[key], cpu[key]
        se = np.sqrt(g.var(ddof=1) / len(g) + c.var(ddof=1) / len(c))
        assert abs(g.mean() - c.mean()) < 4 * se + 1e-3, (key, g.mean(), c.mean(), se)


def _train(medmnist_dir, out, mode: str, workers: int):
    return ml.train(
        "breastmnist",
        data_dir=str(medmnist_dir),
        output=out,
        device="cpu",
        model="small_cnn",
        epochs=3,
        seed=0,
        overrides={"train.data_on_device": mode, "train.workers": workers},
    )


# measured: both modes reach a best val AUC of 0.690 (0.673 after epoch 3) on BreastMNIST
AUC_FLOOR = 0.65


def test_streamed_training_ends_on_the_resident_weights(medmnist_dir, tmp_path):
    resident = _train(medmnist_dir, tmp_path / "resident", "auto", 0)
    streamed = _train(medmnist_dir, tmp_path / "streamed", "never", 2)
    assert "data on device: True" in (tmp_path / "resident" / "log.txt").read_text()
    assert "data on device: False" in (tmp_path / "streamed" / "log.txt").read_text()
    a = load_file(tmp_path / "resident" / "checkpoints" / "last.safetensors")
    b = load_file(tmp_path / "streamed" / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    aucs = [r["val_auc"] for r in streamed.fit.history]
    assert aucs == [r["val_auc"] for r in resident.fit.history]
    assert streamed.fit.best_val_auc >= AUC_FLOOR, aucs
    assert streamed.metrics["test"]["auc"] == pytest.approx(resident.metrics["test"]["auc"])


def _npy(path, images: np.ndarray) -> np.memmap:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=images.shape)
    out[:] = images
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def test_streams_from_a_memmap_without_reading_it_whole(tmp_path):
    images, labels = _random_arrays()
    mapped = _npy(tmp_path / "images.npy", images)
    data = _arrays(mapped, labels, on_device="never", workers=2)
    assert isinstance(data.host, np.memmap)
    assert data.images.data_ptr() == mapped.ctypes.data  # a view of the map, not a copy
    assert _same(_epoch(data, 0), _epoch(_arrays(images, labels), 0))
    # a spawned worker maps the file again instead of receiving the pixels
    gather = pickle.loads(pickle.dumps(loader._Gather(mapped, labels)))
    assert isinstance(gather.images, np.memmap)
    assert len(pickle.dumps(loader._Gather(mapped, labels))) < 2_000 < images.nbytes


def test_auto_streams_a_memmap_larger_than_ram(tmp_path, monkeypatch):
    images, labels = _random_arrays()
    mapped = _npy(tmp_path / "images.npy", images)
    assert _arrays(mapped, labels).resident  # it fits
    monkeypatch.setattr(loader, "_available_ram", lambda: float(images.nbytes))
    assert not _arrays(mapped, labels).resident  # 40% of the free RAM is too little
    assert _arrays(images, labels).resident  # already in RAM: nothing to gain by streaming


def test_cached_splits_are_memory_mapped(tmp_path):
    """A folder dataset's splits come from the on-disk cache as memmaps, and stream as such."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    for i, (img, y) in enumerate(zip(blob_images(labels, 32, 2, rng), labels, strict=True)):
        folder = tmp_path / "png" / ("normal", "lesion")[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"img{i:03d}.png")
    ds = load_dataset(str(tmp_path / "png"), size=32)
    train = ds.splits["train"]
    assert isinstance(train.images, np.memmap) and train.images.shape[1:] == (1, 32, 32)
    assert sum(len(s) for s in ds.splits.values()) == 60
    data = _arrays(train.images, train.labels, on_device="never", workers=0)
    assert data.host is train.images
    assert _same(_epoch(data, 1), _epoch(_arrays(np.array(train.images), train.labels), 1))


def test_always_that_does_not_fit_is_a_config_error(monkeypatch):
    images, labels = _random_arrays()
    monkeypatch.setattr(DeviceArrays, "_fits", staticmethod(lambda images, device: False))
    with pytest.raises(ConfigError, match="data_on_device is always") as err:
        _arrays(images, labels, on_device="always")
    assert "stream" in err.value.hint
    assert not _arrays(images, labels).resident  # auto streams instead


def test_plan_settings_are_validated(medmnist_dir):
    recipe, _, _ = ml.plan("breastmnist", data_dir=str(medmnist_dir), device="cpu")
    assert (recipe.train.data_on_device, recipe.train.workers) == ("auto", None)
    changed = apply_overrides(recipe, {"train.data_on_device": "never", "train.workers": "3"}).train
    assert (changed.data_on_device, changed.workers) == ("never", 3)
    for bad in ({"train.data_on_device": "sometimes"}, {"train.workers": "-1"}):
        with pytest.raises(ConfigError):
            apply_overrides(recipe, bad)
