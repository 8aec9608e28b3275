"""MedMNIST catalogue, file lookup, offline errors, validation of bad files, and the fingerprint."""

from __future__ import annotations

import hashlib
import urllib.error

import numpy as np
import pytest

from medlens.data import medmnist
from medlens.data.fingerprint import find_duplicates, fingerprint, intensity_stats
from medlens.data.sources import load_dataset
from medlens.errors import DataError, DatasetNotFoundError
from tests.conftest import write_blob_npz


def test_catalogue_has_all_18_datasets_at_every_size():
    names = medmnist.dataset_names()
    assert len(names) == 18
    dims = {n: medmnist.dataset_spec(n).spatial_dims for n in names}
    assert sum(d == 2 for d in dims.values()) == 12 and sum(d == 3 for d in dims.values()) == 6
    for name in names:
        spec = medmnist.dataset_spec(name)
        for size in spec.sizes:
            assert spec.url(size).startswith("https://") and len(spec.md5(size)) == 32
    assert medmnist.dataset_spec("chestmnist").task == "multi-label"
    assert medmnist.dataset_spec("retinamnist").task == "ordinal"
    assert medmnist.dataset_spec("pathmnist").label_names[0] == "adipose"
    assert medmnist.dataset_spec("organmnist3d").sizes == (28, 64)


def test_real_breastmnist_matches_official_metadata(medmnist_dir):
    ds = load_dataset("breastmnist", data_dir=str(medmnist_dir))
    assert ds.task == "binary" and ds.label_names == ["malignant", "normal, benign"]
    assert {s: len(ds.splits[s]) for s in ds.splits} == {"train": 546, "val": 78, "test": 156}
    assert ds.splits["train"].images.shape == (546, 1, 28, 28)
    assert ds.splits["train"].images.dtype == np.uint8
    assert ds.class_counts("train") == [147, 399]


def test_real_3d_file_at_size_64(medmnist_dir):
    ds = load_dataset("adrenalmnist3d", size=64, data_dir=str(medmnist_dir))
    assert ds.spatial_dims == 3 and ds.image_shape == (64, 64, 64)
    assert ds.name == "adrenalmnist3d_64"
    same = load_dataset("adrenalmnist3d_64", data_dir=str(medmnist_dir))
    assert same.image_shape == (64, 64, 64)


def test_real_file_md5_matches_the_official_checksum(medmnist_dir):
    spec = medmnist.dataset_spec("breastmnist")
    digest = hashlib.md5((medmnist_dir / "breastmnist.npz").read_bytes()).hexdigest()
    assert digest == spec.md5(28)


def test_data_dir_from_environment(medmnist_dir, monkeypatch):
    monkeypatch.setenv("MEDLENS_DATA", str(medmnist_dir))
    assert len(load_dataset("breastmnist").splits["test"]) == 156


def test_offline_error_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", offline)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("dermamnist", size=64, data_dir=str(tmp_path))
    msg = str(err.value)
    assert "dermamnist_64.npz" in msg and str(tmp_path) in msg and "zenodo" in msg
    assert not (tmp_path / "dermamnist_64.npz").exists()


def test_no_download_gives_the_same_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="pathmnist.npz not found"):
        load_dataset("pathmnist", data_dir=str(tmp_path), download=False)


def test_unknown_dataset_and_size_suggest_fixes():
    with pytest.raises(DataError, match="did you mean pneumoniamnist"):
        load_dataset("pneumomnist")
    with pytest.raises(DataError, match="sizes 28, 64, not 128"):
        load_dataset("organmnist3d", size=128)


def test_npz_without_expected_keys_is_named(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"bad.npz lacks the keys train_images"):
        load_dataset(str(bad))


def test_truncated_npz_is_named(tmp_path):
    good = write_blob_npz(tmp_path / "good.npz", "binary", k=2)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:500])
    with pytest.raises(DataError, match="cut.npz is not a readable .npz"):
        load_dataset(str(cut))


def _arrays(**replace):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 255, (10, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(10) % 2)[:, None].astype(np.uint8)
    arrays.update(replace)
    return arrays


def test_labels_out_of_range_are_reported(tmp_path, medmnist_dir):
    path = tmp_path / "breastmnist.npz"
    labels = (np.arange(10) % 3)[:, None]
    np.savez(path, **_arrays(train_labels=labels))
    with pytest.raises(DataError, match=r"train_labels has labels in 0..2, outside the 2 classes"):
        load_dataset("breastmnist", data_dir=str(tmp_path))


def test_images_of_wrong_shape_are_reported(tmp_path):
    path = tmp_path / "shapes.npz"
    np.savez(path, **_arrays(val_images=np.zeros((10, 32, 32), np.uint8)))
    with pytest.raises(DataError, match=r"val_images images are \(1, 32, 32\) but train"):
        load_dataset(str(path))
    np.savez(path, **_arrays(train_images=np.zeros((10, 28), np.uint8)))
    with pytest.raises(DataError, match=r"train_images has shape \(10, 28\)"):
        load_dataset(str(path))


def test_wrong_dataset_file_is_caught_by_channel_count(tmp_path):
    np.savez(tmp_path / "pathmnist.npz", **_arrays())  # gray images under an RGB dataset's name
    with pytest.raises(DataError, match="has 1 channels but pathmnist has 3"):
        load_dataset("pathmnist", data_dir=str(tmp_path))


def test_image_label_count_mismatch(tmp_path):
    path = tmp_path / "count.npz"
    np.savez(path, **_arrays(test_labels=np.zeros((9, 1), np.uint8)))
    with pytest.raises(DataError, match="test_images has 10 images but test_labels has 9"):
        load_dataset(str(path))


def test_generated_multilabel_and_3d_files_load(multilabel_npz, volume_npz):
    ml = load_dataset(str(multilabel_npz))
    assert ml.task == "multi-label" and ml.n_classes == 3
    assert ml.splits["train"].labels.dtype == np.float32
    vol = load_dataset(str(volume_npz))
    assert vol.spatial_dims == 3 and vol.splits["train"].images.shape[1:] == (1, 12, 12, 12)


def test_intensity_stats_match_numpy():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (50, 3, 20, 20), dtype=np.uint8)
    stats = intensity_stats(images)
    ref = images.astype(np.float64) / 255
    for c in range(3):
        assert stats.mean[c] == pytest.approx(ref[:, c].mean(), abs=1e-5)
        assert stats.std[c] == pytest.approx(ref[:, c].std(), abs=1e-5)
        assert stats.p99[c] == pytest.approx(np.percentile(ref[:, c], 99), abs=1 / 255)
    assert (stats.min, stats.max) == (int(images.min()), int(images.max()))


def test_duplicates_across_splits_are_found(tmp_path):
    path = write_blob_npz(tmp_path / "d.npz", "binary", k=2)
    with np.load(path) as f:
        arrays = dict(f)
    arrays["test_images"][3] = arrays["train_images"][7]
    arrays["train_images"][9] = arrays["train_images"][7]
    np.savez(path, **arrays)
    dup = find_duplicates(load_dataset(str(path)))
    assert dup.across_splits == 1 and dup.within_train == 1
    assert dup.examples == [{"test": [3], "train": [7, 9]}]


def test_real_fingerprint(medmnist_dir):
    fp = fingerprint(load_dataset("pneumoniamnist", data_dir=str(medmnist_dir)))
    assert fp.class_counts["train"] == [1214, 3494]
    assert fp.minority_fraction == pytest.approx(1214 / 4708, abs=1e-4)
    assert fp.modality == "x-ray" and fp.task == "binary"  # MedMNIST's "chest x-ray"
    assert fp.duplicates.across_splits > 0  # the official splits share a few identical images


@pytest.fixture
def file_server(tmp_path):
    """A loopback HTTP server over a folder, standing in for Zenodo."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_checks_the_md5(file_server, medmnist_dir, tmp_path, monkeypatch):
    served, base = file_server
    monkeypatch.setattr(
        medmnist.MedMNISTSpec, "url", lambda self, size=28: f"{base}/{self.flag}.npz"
    )
    (served / "breastmnist.npz").write_bytes((medmnist_dir / "breastmnist.npz").read_bytes())
    target = tmp_path / "downloads"
    ds = load_dataset("breastmnist", data_dir=str(target))
    assert len(ds.splits["train"]) == 546 and (target / "breastmnist.npz").is_file()

    good = (medmnist_dir / "pneumoniamnist.npz").read_bytes()
    (served / "pneumoniamnist.npz").write_bytes(good[:-10] + b"0123456789")  # corrupted
    with pytest.raises(DataError, match="downloaded pneumoniamnist.npz failed its MD5 check"):
        load_dataset("pneumoniamnist", data_dir=str(target))
    assert not (target / "pneumoniamnist.npz").exists()  # no corrupt file left behind
