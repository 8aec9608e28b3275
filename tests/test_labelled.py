"""Bring your own data: folders, CSV manifests, DICOM and NIfTI, cache, splits, bad files."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from sklearn.metrics import roc_auc_score

import medlens.api as ml
from medlens.data.fingerprint import fingerprint
from medlens.data.labelled import SourceOptions
from medlens.data.sources import load_dataset
from medlens.errors import DataError
from tests.conftest import blob_images


def _png_folder(root: Path, n_per_class: int = 40, size: int = 24, seed: int = 0) -> Path:
    """Two classes told apart by where a bright blob sits (16-bit PNGs for one in four)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per_class)
    images = blob_images(labels, size, 2, rng)
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        folder = root / ("normal", "lesion")[y]
        folder.mkdir(parents=True, exist_ok=True)
        if i % 4 == 0:
            Image.fromarray(img.astype(np.uint16) * 250).save(folder / f"img{i:03d}.png")
        else:
            Image.fromarray(img).save(folder / f"img{i:03d}.png")
    return root


def _manifest(root: Path, n_patients: int = 30, per_patient: int = 3, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        y = p % 2
        imgs = blob_images(np.full(per_patient, y), 20, 2, rng)
        for j, img in enumerate(imgs):
            name = f"scans/p{p:02d}_{j}.png"
            (root / "scans").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / name)
            rows.append(
                {
                    "path": name,
                    "finding": ("clear", "nodule")[y],
                    "patient_id": f"MRN{p:05d}",
                    "sex": "FM"[p % 2],
                    "age": 40 + p,
                }
            )
    path = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_image_folder_is_cached_and_split(tmp_path):
    folder = _png_folder(tmp_path / "imgs")
    ds = load_dataset(str(folder), size=16)
    assert ds.task == "binary" and ds.label_names == ["lesion", "normal"]
    assert sum(len(ds.splits[s]) for s in ds.splits) == 80
    assert len(ds.splits["train"]) == pytest.approx(64, abs=3)
    assert ds.splits["train"].images.shape[1:] == (1, 16, 16)
    cache = Path(ds.metadata["cache"])
    assert (cache / "images.npy").is_file() and (cache / "info.json").is_file()
    stamp = (cache / "info.json").stat().st_mtime_ns
    again = load_dataset(str(folder), size=16)  # same files, same settings: reused
    assert (cache / "info.json").stat().st_mtime_ns == stamp
    assert np.array_equal(again.splits["test"].images, ds.splits["test"].images)
    other = load_dataset(str(folder), size=20)  # other settings: another cache
    assert Path(other.metadata["cache"]) != cache


def test_manifest_splits_by_patient_and_hides_ids(tmp_path):
    path = _manifest(tmp_path)
    opts = SourceOptions(label_columns=["finding"], patient_column="patient_id", size=16)
    ds = load_dataset(str(path), options=opts)
    by_split = {s: set(ds.splits[s].patients) for s in ds.splits}
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    fp = fingerprint(ds)
    assert fp.patient_ids and sum(sum(v) for v in fp.patients_per_class.values()) == 30
    cache = Path(ds.metadata["cache"])
    blob = b"".join(f.read_bytes() for f in cache.iterdir())
    assert b"MRN000" not in blob  # patient ids are hashed in the cache
    assert "MRN000" not in fp.model_dump_json()


def test_parquet_manifest(tmp_path):
    path = _manifest(tmp_path)
    pd.read_csv(path).to_parquet(tmp_path / "m.parquet")
    ds = load_dataset(
        str(tmp_path / "m.parquet"),
        options=SourceOptions(label_columns=["finding"], patient_column="patient_id", size=16),
    )
    assert sum(len(ds.splits[s]) for s in ds.splits) == 90 and ds.label_names == ["clear", "nodule"]


def test_user_split_column_that_leaks_a_patient_is_an_error(tmp_path):
    path = _manifest(tmp_path)
    df = pd.read_csv(path)
    df["split"] = np.where(
        np.arange(len(df)) % 10 < 8, "train", np.where(np.arange(len(df)) % 10 == 8, "val", "test")
    )
    df.to_csv(path, index=False)
    opts = SourceOptions(
        label_columns=["finding"], patient_column="patient_id", split_column="split", size=16
    )
    with pytest.raises(
        DataError,
        match=r"12 patient\(s\) have images in more than one split, e.g. rows \d+, \d+, \d+",
    ):
        load_dataset(str(path), options=opts)


def test_multilabel_manifest(tmp_path):
    rng = np.random.default_rng(2)
    labels = (rng.random((60, 3)) < 0.4).astype(int)
    labels[np.arange(60), rng.integers(0, 3, 60)] = 1
    images = blob_images(labels, 20, 2, rng)
    (tmp_path / "x").mkdir()
    rows = []
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / "x" / f"{i}.png")
        rows.append(
            {"image": f"x/{i}.png", "a": labels[i, 0], "b": labels[i, 1], "c": labels[i, 2]}
        )
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    ds = load_dataset(
        str(tmp_path / "m.csv"), options=SourceOptions(label_columns=["a", "b", "c"], size=16)
    )
    assert ds.task == "multi-label" and ds.label_names == ["a", "b", "c"]
    assert ds.splits["train"].labels.shape[1] == 3


def _bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    good = next(folder.parent.rglob("*.png")).read_bytes()
    bad = {
        "empty": folder / "empty.png",
        "text": folder / "text.png",
        "truncated": folder / "truncated.png",
        "bomb": folder / "bomb.png",
    }
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("not an image at all")
    bad["truncated"].write_bytes(good[:60])

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    header = (50_000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 50,000 x 50,000 gray
    bad["bomb"].write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + chunk(b"IEND", b"")
    )
    return bad


def test_broken_files_are_named_or_skipped(tmp_path):
    folder = _png_folder(tmp_path / "imgs")
    bad = _bad_files(folder / "lesion")
    with pytest.raises(DataError, match=r"could not be cached.*(empty|text|truncated|bomb)\.png"):
        load_dataset(str(folder), size=16)
    ds = load_dataset(str(folder), size=16, options=SourceOptions(skip_bad=True))
    assert sum(len(ds.splits[s]) for s in ds.splits) == 80
    skipped = pd.read_csv(Path(ds.metadata["cache"]) / "skipped.csv")
    assert sorted(Path(p).name for p in skipped["path"]) == sorted(p.name for p in bad.values())
    bomb = skipped[skipped["path"].str.endswith("bomb.png")]["error"].iloc[0]
    assert "too large to decode safely" in bomb and "2500000000 pixels" in bomb


def test_nothing_cached_is_lost_when_a_later_file_fails(tmp_path):
    folder = _png_folder(tmp_path / "imgs", n_per_class=80)
    broken = folder / "normal" / "zzz.png"
    broken.write_text("broken")
    chunks = Path(tmp_path / "medlens_cache" / "chunks")
    with pytest.raises(DataError, match="zzz.png"):
        load_dataset(str(folder), size=16)
    before = set(chunks.iterdir())
    assert len(before) >= 2  # the chunks without the broken file were kept
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(broken)
    ds = load_dataset(str(folder), size=16)
    assert sum(len(ds.splits[s]) for s in ds.splits) == 161
    assert before <= set(chunks.iterdir())  # reused, and only the fixed chunk was added
    assert len(set(chunks.iterdir()) - before) == 1


def test_manifest_errors_name_the_row(tmp_path):
    path = _manifest(tmp_path)
    df = pd.read_csv(path)
    df.loc[4, "path"] = "scans/missing.png"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"missing.png \(row 6 of .*manifest.csv\)"):
        load_dataset(str(path), options=SourceOptions(label_columns=["finding"], size=16))
    df.loc[4, "path"] = "scans/p00_0.png"
    df.loc[7, "finding"] = ""
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match="empty 'finding' label in row"):
        load_dataset(str(path), options=SourceOptions(label_columns=["finding"], size=16))
    df.loc[7, "finding"] = "nodlue"  # a typo makes a class of one
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"label\(s\) 'nodlue' \(row 9\) appear only once"):
        load_dataset(str(path), options=SourceOptions(label_columns=["finding"], size=16))
    with pytest.raises(DataError, match="no label column 'diagnosis'"):
        load_dataset(str(path), options=SourceOptions(label_columns=["diagnosis"]))


def test_empty_class_folder_is_an_error(tmp_path):
    folder = _png_folder(tmp_path / "imgs")
    (folder / "other").mkdir()
    with pytest.raises(DataError, match="other hold no images"):
        load_dataset(str(folder))


def _dicom_series(root: Path, n: int = 40) -> Path:
    """CT_small.dcm copies whose class is a bright square (in Hounsfield units), each with its
    own noise (identical copies would be kept in one split, as one group)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    base = ds.pixel_array.astype(np.int16)
    rng = np.random.default_rng(0)
    rows = []
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        y = i % 2
        arr = base + rng.normal(0, 30, base.shape).astype(np.int16)
        r = 8 if y else 40
        arr[r : r + 16, 20:36] += 600
        ds.PixelData = arr.tobytes()
        ds.PatientName = "DOE^JANE"
        ds.PatientID = "SECRET-ID-42"
        ds.save_as(root / f"ct{i}.dcm")
        rows.append({"path": f"ct{i}.dcm", "label": ("low", "high")[y]})
    pd.DataFrame(rows).to_csv(root / "ct.csv", index=False)
    return root / "ct.csv"


def test_dicom_manifest_trains_and_leaks_no_phi(tmp_path):
    path = _dicom_series(tmp_path / "ct")
    run = tmp_path / "run"
    result = ml.train(
        str(path),
        size=32,
        output=run,
        device="cpu",
        epochs=8,
        overrides={"data.preprocess.window": "soft_tissue"},
    )
    assert result.plan.data.preprocess.window == "soft_tissue"
    assert json.loads((run / "fingerprint.json").read_text())["modality"] == "ct"
    # predict reads DICOM and applies the run's own preprocessing (soft-tissue window)
    rows = ml.predict(run, [tmp_path / "ct"])
    truth = pd.read_csv(path).set_index("path")["label"]
    is_high = [truth[Path(r["path"]).name] == "high" for r in rows]
    auc = roc_auc_score(is_high, [r["p_high"] for r in rows])
    assert len(rows) == 40 and auc >= 0.9, auc
    assert result.metrics["test"]["auc"] >= 0.9, result.metrics["test"]
    written = b"".join(f.read_bytes() for f in run.rglob("*") if f.is_file())
    written += b"".join(
        f.read_bytes() for f in (tmp_path / "medlens_cache").rglob("*") if f.is_file()
    )
    assert b"SECRET-ID-42" not in written and b"DOE^JANE" not in written


def test_nifti_volumes_train_in_3d(tmp_path):
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 20)
    vols = blob_images(labels, 12, 3, rng).astype(np.float32)
    for i, (v, y) in enumerate(zip(vols, labels, strict=True)):
        folder = tmp_path / "vols" / ("a", "b")[y]
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(
            nib.Nifti1Image(np.transpose(v, (2, 1, 0)), np.diag([1.0, 1.0, 2.0, 1.0])),
            folder / f"v{i}.nii.gz",
        )
    result = ml.train(
        str(tmp_path / "vols"), size=12, output=tmp_path / "run", device="cpu", epochs=8
    )
    assert result.plan.data.spatial_dims == 3 and result.plan.model.name == "small_cnn_3d"
    assert result.metrics["test"]["auc"] >= 0.9, result.metrics["test"]
    fp = json.loads((tmp_path / "run" / "fingerprint.json").read_text())
    assert fp["metadata"]["spacing_median"] == [2.0, 1.0, 1.0]


def test_cli_folder_with_skip_bad_and_resume_from_plan(capsys, tmp_path):
    from medlens.cli import main

    folder = _png_folder(tmp_path / "imgs")
    _bad_files(folder / "normal")
    code = main(
        [
            "train",
            str(folder),
            "--skip-bad",
            "--size",
            "16",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "-o",
            str(tmp_path / "run"),
        ]
    )
    _, err = capsys.readouterr()
    assert code == 0, err
    plan = (tmp_path / "run" / "plan.yaml").read_text()
    assert "skip_bad: true" in plan and "preprocess:" in plan
    code = main(["evaluate", str(tmp_path / "run"), "--json"])
    assert code == 0 and '"auc"' in capsys.readouterr()[0]
    code = main(["train", str(folder), "--size", "16", "-o", str(tmp_path / "run2")])
    assert code == 2 and "--skip-bad" in capsys.readouterr()[1]


def test_reloading_a_plan_keeps_its_splits_whatever_the_training_seed(tmp_path):
    """evaluate, --resume and --plan reload the data: the split must be the plan's (seed 0),
    not one drawn with train.seed, or a seed-3 run would be evaluated on other test images."""
    from medlens.api import load_plan_data
    from medlens.config import apply_overrides

    path = _manifest(tmp_path)
    fields = {"label_columns": ["finding"], "patient_column": "patient_id"}
    recipe, _, ds = ml.plan(str(path), device="cpu", source_fields=fields)
    reloaded = load_plan_data(apply_overrides(recipe, {"train.seed": 3}), None, False)
    for split in ("train", "val", "test"):
        assert sorted(reloaded.splits[split].patients) == sorted(ds.splits[split].patients)
