"""Shared fixtures: the real MedMNIST files beside the checkout, and small generated datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N`: N workers share the cores, so each computes on one thread (set before torch
    # is imported; subprocesses inherit it). Two torch processes of two threads each on two
    # cores ran 7x slower than one after the other.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

MEDMNIST_DIR = Path(
    os.environ.get(
        "MEDLENS_TEST_DATA", Path(__file__).resolve().parents[2] / "shared/data/medmnist"
    )
)


@pytest.fixture(scope="session")
def medmnist_dir() -> Path:
    """The folder with the official MedMNIST files (../shared/data/medmnist)."""
    if not (MEDMNIST_DIR / "breastmnist.npz").is_file():
        pytest.fail(f"MedMNIST test data not found in {MEDMNIST_DIR}; set MEDLENS_TEST_DATA")
    return MEDMNIST_DIR


@pytest.fixture(autouse=True)
def _no_home_downloads(monkeypatch, tmp_path):
    """Keep tests from touching ~/.medmnist or the network through the default data dir."""
    monkeypatch.setenv("MEDLENS_DATA", str(tmp_path / "medlens_data_home"))
    monkeypatch.setenv("MEDLENS_CACHE", str(tmp_path / "medlens_cache"))


def blob_images(labels: np.ndarray, size: int, spatial_dims: int, rng) -> np.ndarray:
    """Noisy images where label k (multi-label) or class k puts a bright blob in region k."""
    n = len(labels)
    shape = (n,) + (size,) * spatial_dims
    images = rng.normal(60, 20, size=shape)
    half = size // 2
    m = 2 if half >= 6 else 1  # margin: below 12 px, 2 px each side would leave no blob at all
    corners = [(0, 0), (0, half), (half, 0), (half, half)]
    onehot = labels if labels.ndim == 2 else np.eye(labels.max() + 1)[labels]
    for k in range(onehot.shape[1]):
        r, c = corners[k % 4]
        sl = (slice(r + m, r + half - m), slice(c + m, c + half - m))
        if spatial_dims == 3:
            sl = (slice(m, size - m), *sl)
        for i in np.flatnonzero(onehot[:, k]):
            images[(i, *sl)] += 120
    return np.clip(images, 0, 255).astype(np.uint8)


def write_blob_npz(
    path: Path,
    task: str,
    spatial_dims: int = 2,
    size: int = 16,
    n: tuple[int, int, int] = (240, 60, 80),
    k: int = 3,
    seed: int = 0,
) -> Path:
    """A MedMNIST-format .npz whose labels are decided by where bright blobs sit."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        if task == "multi-label":
            labels = (rng.random((count, k)) < 0.4).astype(np.uint8)
            labels[np.arange(count), rng.integers(0, k, count)] = 1  # at least one label
        else:
            labels = np.arange(count) % k
            rng.shuffle(labels)
        arrays[f"{split}_images"] = blob_images(labels, size, spatial_dims, rng)
        arrays[f"{split}_labels"] = labels if labels.ndim == 2 else labels[:, None].astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def multilabel_npz(tmp_path) -> Path:
    return write_blob_npz(tmp_path / "blobs_multilabel.npz", "multi-label")


@pytest.fixture
def volume_npz(tmp_path) -> Path:
    return write_blob_npz(
        tmp_path / "blobs3d.npz", "multi-class", spatial_dims=3, size=12, n=(120, 40, 60), k=2
    )


@pytest.fixture(scope="session")
def breast_run(medmnist_dir, tmp_path_factory) -> Path:
    """One BreastMNIST run with the default CPU plan, trained once per test session (~15 s).

    Read-only for tests: copy it (shutil.copytree) before changing anything inside.
    """
    import medlens.api as ml

    out = tmp_path_factory.mktemp("breast_run") / "run"
    ml.train("breastmnist", data_dir=str(medmnist_dir), output=out, device="cpu")
    return out
