"""Datasets as users download them: folder layouts, manifests as they come, duplicates in the
user's own splits, the modality vocabulary, and the real chest X-ray folder (train/test, no val).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import medlens.api as ml
from medlens.config import MODALITIES, apply_overrides, check_modality, modality_name
from medlens.data.cache import load_cache
from medlens.data.fingerprint import fingerprint
from medlens.data.folders import scan_folder
from medlens.data.labelled import MODALITY_NAMES, SourceOptions
from medlens.data.sources import load_dataset
from medlens.errors import ConfigError, DataError
from medlens.plan import make_plan
from medlens.plan.planner import MIRROR_FREE, ORIENTATION_FREE
from tests.conftest import blob_images

CHEST_XRAY = Path(__file__).resolve().parents[2] / "shared/data/chest_xray"


def _pngs(folder: Path, label: int, n: int, rng, size: int = 16, prefix: str = "img") -> list:
    """``n`` distinct PNGs of class ``label`` (a bright blob in quadrant ``label``)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(blob_images(np.full(n, label), size, 2, rng)):
        paths.append(folder / f"{prefix}{label}_{i:03d}.png")
        Image.fromarray(img).save(paths[-1])
    return paths


def _split_folder(root: Path, counts: dict[str, int], classes=("benign", "malignant")) -> Path:
    """``root/<split>/<class>/*.png`` with ``counts[split]`` images per class."""
    rng = np.random.default_rng(len(counts))
    for split, n in counts.items():
        for k, name in enumerate(classes):
            _pngs(root / split / name, k, n, rng, prefix=f"{split}_")
    return root


def _n(ds) -> dict[str, int]:
    return {s: len(ds.splits[s]) for s in ("train", "val", "test")}


def _folder_hashes(ds, root: Path) -> dict[str, np.ndarray]:
    """The cached images' hashes of each split folder's files (the cache holds the folder's
    files in scan order)."""
    m = scan_folder(root)
    cached = load_cache(Path(ds.metadata["cache"]))
    assert len(cached.keep) == len(m)
    return {s: cached.hashes[m.splits == s] for s in set(m.splits)}


def _note(ds, text: str) -> str:
    found = [n for n in ds.metadata["notes"] if text in n]
    assert found, ds.metadata["notes"]
    return found[0]


# ----------------------------------------------------------------------------- folder layouts
def test_class_folders_get_medlens_splits(tmp_path):
    rng = np.random.default_rng(0)
    for k, name in enumerate(("normal", "lesion")):
        _pngs(tmp_path / "derm" / name, k, 30, rng)
    ds = load_dataset(str(tmp_path / "derm"), size=16)
    assert _n(ds) == {"train": 48, "val": 6, "test": 6}
    assert "splits drawn by medlens: 80/10/10" in _note(ds, "splits drawn")


def test_train_val_test_folders_are_kept(tmp_path):
    root = _split_folder(tmp_path / "set", {"train": 20, "val": 5, "test": 8})
    ds = load_dataset(str(root), size=16)
    assert _n(ds) == {"train": 40, "val": 10, "test": 16}
    assert ds.class_counts("test") == [8, 8]


def test_train_test_folders_get_val_carved_out_of_train(tmp_path):
    root = _split_folder(tmp_path / "set", {"train": 40, "test": 10})
    ds = load_dataset(str(root), size=16)
    assert _n(ds) == {"train": 72, "val": 8, "test": 20}
    assert ds.class_counts("val") == [4, 4]  # stratified: 10% of each class
    folders = _folder_hashes(ds, root)
    assert list(ds.splits["test"].hashes) == list(folders["test"])  # the user's test, untouched
    assert set(ds.splits["val"].hashes) <= set(folders["train"])
    note = _note(ds, "carved out as val")
    assert "0.1 of train" in note and "seed 0" in note and "benign 4, malignant 4" in note


def test_val_fraction_and_seed_are_plan_fields_and_reload_the_same_split(tmp_path):
    from medlens.api import load_plan_data

    root = _split_folder(tmp_path / "set", {"train": 40, "test": 10})
    fields = {"val_fraction": 0.25, "split_seed": 3}
    recipe, _, ds = ml.plan(str(root), size=16, device="cpu", source_fields=fields)
    assert (recipe.data.val_fraction, recipe.data.split_seed) == (0.25, 3)
    assert _n(ds)["val"] == 20
    assert any("0.25 of train carved out as val" in n and "seed 3" in n for n in recipe.notes)
    again = load_plan_data(recipe, None, False)
    assert sorted(again.splits["val"].hashes) == sorted(ds.splits["val"].hashes)
    other = load_dataset(str(root), size=16, options=SourceOptions(val_fraction=0.25))
    assert sorted(other.splits["val"].hashes) != sorted(ds.splits["val"].hashes)  # seed 0


@pytest.mark.parametrize(
    "names",
    [
        ("Training", "Testing"),
        ("TRAIN", "valid", "TEST"),
        ("train", "dev", "test"),
        ("Train", "Validation", "testing"),
        ("training", "eval", "Test"),
    ],
)
def test_split_folder_spellings(tmp_path, names):
    root = _split_folder(tmp_path / "mri", dict.fromkeys(names, 10))
    ds = load_dataset(str(root), size=16)
    carved = {"train": 18, "val": 2, "test": 20}  # 10% of train's 20 images
    assert _n(ds) == ({"train": 20, "val": 20, "test": 20} if len(names) == 3 else carved)
    spelled = [n for n in names if n.lower() not in ("train", "val", "test")]
    if spelled:
        assert f"{spelled[0]} as " in _note(ds, "split folders read")


def test_class_folders_one_or_two_levels_down_are_found(tmp_path):
    nested = _split_folder(tmp_path / "download" / "chest_xray", {"train": 20, "test": 5})
    (tmp_path / "download" / "__MACOSX").mkdir()  # the zip's resource forks: ignored
    (nested / "chest_xray").mkdir()  # Kaggle's duplicate folder beside the splits: ignored
    m = scan_folder(tmp_path / "download")
    assert sorted(set(m.splits)) == ["test", "train"] and m.label_names == ["benign", "malignant"]
    assert "class folders found in download/chest_xray" in m.notes[0]
    assert "ignored: chest_xray" in m.notes[1]
    rng = np.random.default_rng(1)
    for k, name in enumerate(("akiec", "bcc", "nv")):
        _pngs(tmp_path / "data" / "images" / name, k, 12, rng)
    m = scan_folder(tmp_path / "data")
    assert m.label_names == ["akiec", "bcc", "nv"] and m.splits is None and len(m) == 36
    assert "class folders found in data/images" in m.notes[0]


def test_images_inside_class_folders_may_sit_deeper(tmp_path):
    rng = np.random.default_rng(2)
    for k, name in enumerate(("a", "b")):
        for p in range(4):
            _pngs(tmp_path / "set" / name / f"patient{p}", k, 3, rng)
    assert len(scan_folder(tmp_path / "set")) == 24


# ------------------------------------------------------------------------------- bad folders
def test_a_folder_without_class_folders_is_named(tmp_path):
    rng = np.random.default_rng(3)
    _pngs(tmp_path / "loose", 0, 5, rng)
    with pytest.raises(DataError, match=r"loose holds 5 image\(s\) but no class sub-folders"):
        load_dataset(str(tmp_path / "loose"))
    _pngs(tmp_path / "one" / "NORMAL", 0, 5, rng)
    with pytest.raises(DataError, match=r"one sub-folder \(NORMAL\).*fix: put each class"):
        load_dataset(str(tmp_path / "one"))
    _pngs(tmp_path / "split" / "Training", 0, 5, rng)
    with pytest.raises(DataError, match=r"split/Training holds 5 image\(s\) but no class"):
        load_dataset(str(tmp_path / "split"))


def test_a_split_folder_lacking_a_class_is_named(tmp_path):
    root = _split_folder(tmp_path / "set", {"train": 10, "test": 5})
    shutil.rmtree(root / "test" / "malignant")
    with pytest.raises(
        DataError,
        match=r"set/test has no folder for class\(es\) malignant, which train has "
        r"\(fix: add test/malignant",
    ):
        load_dataset(str(root))


def test_train_and_val_without_test_is_an_error(tmp_path):
    root = _split_folder(tmp_path / "set", {"train": 10, "val": 5})
    with pytest.raises(DataError, match="hold train, val but no test split"):
        load_dataset(str(root), size=16)


def test_an_empty_class_after_the_carve_out_is_an_error_and_keeps_the_cache(tmp_path):
    root = _split_folder(tmp_path / "set", {"train": 30, "test": 5})
    rng = np.random.default_rng(4)
    _pngs(root / "train" / "rare", 2, 2, rng)
    _pngs(root / "test" / "rare", 2, 2, rng)
    with pytest.raises(
        DataError, match=r"leaves no validation images of rare \(2 in train\).*--val-fraction"
    ):
        load_dataset(str(root), size=16)
    cache = next((tmp_path / "medlens_cache").glob("set-*"))
    stamp = (cache / "info.json").stat().st_mtime_ns
    ds = load_dataset(str(root), size=16, options=SourceOptions(val_fraction=0.5))
    assert ds.class_counts("val") == [15, 15, 1]
    assert Path(ds.metadata["cache"]) == cache  # the cache was kept and reused
    assert (cache / "info.json").stat().st_mtime_ns == stamp


# --------------------------------------------------------------------- manifests as they come
def _ham(root: Path, n_lesions: int = 30) -> Path:
    """HAM10000's metadata CSV: lesion_id, image_id (no extension), dx, ...; the images in two
    part folders below the CSV's folder."""
    rng = np.random.default_rng(5)
    rows = []
    for lesion in range(n_lesions):
        dx = ("nv", "mel", "bkl")[lesion % 3]
        for j in range(1 + lesion % 3):
            image_id = f"ISIC_{lesion:04d}{j}"
            part = root / f"HAM10000_images_part_{1 + lesion % 2}"
            part.mkdir(parents=True, exist_ok=True)
            img = blob_images(np.array([lesion % 3]), 16, 2, rng)[0]
            Image.fromarray(img).save(part / f"{image_id}.jpg", quality=95)
            rows.append(
                {
                    "lesion_id": f"HAM_{lesion:07d}",
                    "image_id": image_id,
                    "dx": dx,
                    "age": 30 + lesion,
                    "sex": "mf"[lesion % 2],
                }
            )
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root / "HAM10000_metadata.csv"


def test_ham10000_style_metadata_needs_no_options(tmp_path):
    path = _ham(tmp_path / "ham")
    ds = load_dataset(str(path), size=16)
    assert ds.task == "multi-class" and ds.label_names == ["bkl", "mel", "nv"]
    assert sum(_n(ds).values()) == 60
    lesions = {s: set(ds.splits[s].patients) for s in ("train", "val", "test")}
    assert not (lesions["train"] & lesions["val"]) and not (lesions["train"] & lesions["test"])
    assert sum(map(len, lesions.values())) == 30  # grouped by lesion, never split apart
    assert "lesion_id" not in ds.splits["train"].meta.columns
    assert ds.modality == "dermoscopy"  # from the file name HAM10000_metadata
    notes = " | ".join(ds.metadata["notes"])
    assert "grouping column 'lesion_id'" in notes and "label column 'dx'" in notes
    assert "60 path(s) without an extension matched to their .jpg file" in notes


def test_label_csv_apart_from_its_images_with_image_root(tmp_path):
    path = _ham(tmp_path / "ham")
    moved = tmp_path / "labels" / "gt.csv"
    moved.parent.mkdir()
    shutil.move(path, moved)
    with pytest.raises(DataError, match=r"ISIC_00000 \(row 2 of .*gt.csv\) does not exist"):
        load_dataset(str(moved), size=16)
    ds = load_dataset(str(moved), size=16, options=SourceOptions(image_root=str(tmp_path / "ham")))
    assert sum(_n(ds).values()) == 60


def test_relative_paths_below_another_folder(tmp_path):
    path = _ham(tmp_path / "ham")
    df = pd.read_csv(path)
    part = {f.stem: f.parent.name for f in (tmp_path / "ham").rglob("*.jpg")}
    df["image_id"] = [f"{part[i]}/{i}.jpg" for i in df["image_id"]]
    df.to_csv(tmp_path / "elsewhere.csv", index=False)
    opts = SourceOptions(image_root=str(tmp_path / "ham"))
    assert sum(_n(load_dataset(str(tmp_path / "elsewhere.csv"), size=16, options=opts)).values())


def test_an_id_with_two_files_or_none_names_the_row(tmp_path):
    path = _ham(tmp_path / "ham")
    first = next((tmp_path / "ham").rglob("ISIC_00011.jpg"))
    shutil.copy(first, first.with_suffix(".png"))
    with pytest.raises(
        DataError, match=r"row 4 of .*: 'ISIC_00011' matches 2 files .*fix: give the extension"
    ):
        load_dataset(str(path), size=16)
    first.with_suffix(".png").unlink()
    first.unlink()
    with pytest.raises(DataError, match=r"row 4 of .*does not exist; no file named ISIC_00011"):
        load_dataset(str(path), size=16)
    ds = load_dataset(str(path), size=16, options=SourceOptions(skip_bad=True))
    assert sum(_n(ds).values()) == 59 and ds.metadata["skipped"] == 1


def _isic(root: Path, unk: bool = True) -> Path:
    """ISIC 2019's ground truth: image, MEL, NV, BCC, UNK as 0.0/1.0, one 1 per row (UNK none)."""
    rng = np.random.default_rng(6)
    classes = ["MEL", "NV", "BCC"]
    rows = []
    for i in range(45):
        k = i % 3
        _pngs(root / "ISIC_2019_Training_Input", k, 1, rng, prefix=f"ISIC_{i:07d}_")
        row = {"image": f"ISIC_{i:07d}_{k}_000"} | {c: float(c == classes[k]) for c in classes}
        rows.append(row | ({"UNK": 0.0} if unk else {}))
    pd.DataFrame(rows).to_csv(root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    return root / "ISIC_2019_Training_GroundTruth.csv"


def test_isic_one_hot_columns_are_one_multiclass_label(tmp_path):
    path = _isic(tmp_path / "isic")
    ds = load_dataset(str(path), size=16)
    assert ds.task == "multi-class" and ds.label_names == ["MEL", "NV", "BCC"]
    assert ds.splits["train"].labels.ndim == 1 and sum(map(len, ds.splits.values())) == 45
    note = _note(ds, "one 1 per row")
    assert "multi-class label, not multi-label" in note and "(no row has UNK: not a class)" in note
    named = SourceOptions(label_columns=["MEL", "NV", "BCC"])
    assert load_dataset(str(path), size=16, options=named).task == "multi-class"


def test_zero_one_columns_that_are_not_one_hot_need_naming(tmp_path):
    path = _isic(tmp_path / "isic", unk=False)
    df = pd.read_csv(path)
    df.loc[3, "NV"] = 1.0  # row 5, a MEL image: two ones
    df.to_csv(path, index=False)
    with pytest.raises(
        DataError,
        match=r"0/1 columns MEL, NV, BCC are not one-hot \(row 5 has 2 ones\).*"
        r"--label-column MEL --label-column NV",
    ):
        load_dataset(str(path), size=16)
    ds = load_dataset(str(path), size=16, options=SourceOptions(label_columns=["MEL", "NV"]))
    assert ds.task == "multi-label"


def test_a_manifest_split_column_with_train_and_test_only(tmp_path):
    path = _ham(tmp_path / "ham", n_lesions=60)
    df = pd.read_csv(path)
    lesion = df["lesion_id"].str[-2:].astype(int)
    df["Split"] = np.where(lesion % 5 == 0, "Testing", "Training")
    df.to_csv(path, index=False)
    ds = load_dataset(str(path), size=16)  # the column is recognised by its name and values
    test_rows = df[df["Split"] == "Testing"]
    assert len(ds.splits["test"]) == len(test_rows)
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == len(df) - len(test_rows)
    assert "no val split in the split column" in _note(ds, "carved out as val")
    lesions = {s: set(ds.splits[s].patients) for s in ("train", "val")}
    assert not lesions["train"] & lesions["val"]  # carved by lesion


# ------------------------------------------------------------------------------- duplicates
def test_duplicates_across_user_splits_are_reported_and_dropped(tmp_path):
    root = _split_folder(tmp_path / "set", {"train": 20, "val": 5, "test": 10})
    train = sorted((root / "train" / "benign").glob("*.png"))
    shutil.copy(train[0], root / "test" / "benign" / "copy_a.png")
    shutil.copy(train[1], root / "test" / "benign" / "copy_b.png")
    shutil.copy(train[2], root / "val" / "benign" / "copy_c.png")
    shutil.copy(train[3], root / "train" / "benign" / "again.png")  # within train: kept
    fp = ml.data_info(str(root), size=16)
    d = fp.duplicates
    assert d.across_pairs == {"train/test": 2, "train/val": 1} and d.across_splits == 3
    assert d.groups == 4 and d.within_split["train"] == 1
    assert "identical images across splits: 3 (train/test 2, train/val 1) kept" in d.across_note()
    recipe, _, _ = ml.plan(str(root), size=16, device="cpu")
    assert any(n.startswith("data: identical images across splits: 3") for n in recipe.notes)

    recipe, fp, ds = ml.plan(
        str(root), size=16, device="cpu", source_fields={"drop_duplicates": True}
    )
    assert recipe.data.drop_duplicates and _n(ds) == {"train": 41, "val": 10, "test": 20}
    assert fp.duplicates.across_pairs == {} and fp.duplicates.dropped == 3
    listing = pd.read_csv(fp.duplicates.dropped_list)
    assert Path(fp.duplicates.dropped_list).parent == Path(ds.metadata["cache"])
    assert sorted(Path(p).name for p in listing["path"]) == [
        "copy_a.png",
        "copy_b.png",
        "copy_c.png",
    ]
    assert set(listing["identical_split"]) == {"train"}
    assert any("3 image(s) identical to one in an earlier split dropped" in n for n in recipe.notes)


def test_medlens_splits_keep_identical_images_together(tmp_path):
    rng = np.random.default_rng(7)
    for k, name in enumerate(("a", "b")):
        files = _pngs(tmp_path / "set" / name, k, 30, rng)
        for j in range(5):
            shutil.copy(files[j], files[j].with_name(f"dup{j}.png"))
    fp = ml.data_info(str(tmp_path / "set"), size=16)
    assert fp.duplicates.groups == 10 and fp.duplicates.across_splits == 0


def test_a_cache_built_before_image_hashes_gets_them_once(tmp_path):
    root = _split_folder(tmp_path / "set", {"train": 10, "val": 3, "test": 3})
    ds = load_dataset(str(root), size=16)
    folder = Path(ds.metadata["cache"])
    with np.load(folder / "arrays.npz") as f:
        arrays = {k: f[k] for k in f.files if k != "hashes"}
        stored = f["hashes"]
    np.savez(folder / "arrays.npz", **arrays)  # as CACHE_VERSION 4 wrote it
    again = load_cache(folder)
    assert np.array_equal(again.hashes, stored) and (folder / "hashes.npy").is_file()
    assert np.array_equal(load_cache(folder).hashes, stored)


# --------------------------------------------------------------------------------- modality
def test_modality_vocabulary():
    assert set(MODALITY_NAMES.values()) <= set(MODALITIES)
    assert set(ORIENTATION_FREE) | set(MIRROR_FREE) <= set(MODALITIES)
    from medlens.data.medmnist import MODALITIES as MEDMNIST

    guessed = {flag: modality_name(text) for flag, text in MEDMNIST.items()}
    assert "unknown" not in guessed.values()
    assert guessed["dermamnist"] == "dermoscopy" and guessed["pathmnist"] == "pathology"
    assert guessed["bloodmnist"] == "microscopy" and guessed["retinamnist"] == "fundus"
    assert check_modality("Dermatoscopy") == "dermoscopy"
    with pytest.raises(ConfigError, match=r"unknown modality 'xrya' \(fix: did you mean x-ray\?"):
        check_modality("xrya")


def test_unknown_modality_fails_before_any_file_is_read(tmp_path):
    root = _split_folder(tmp_path / "set", {"train": 10, "test": 5})
    with pytest.raises(ConfigError, match="did you mean dermoscopy"):
        load_dataset(str(root), options=SourceOptions(modality="dermscopy"))
    assert not (tmp_path / "medlens_cache").exists()
    recipe, _, _ = ml.plan(str(root), size=16, device="cpu")
    with pytest.raises(ConfigError, match=r"data.modality: .*unknown modality 'cat'"):
        apply_overrides(recipe, {"data.modality": "cat"})


def test_modality_given_or_guessed_drives_the_augmentation(tmp_path, medmnist_dir):
    root = _split_folder(tmp_path / "lesions", {"train": 10, "test": 5})
    recipe, fp, _ = ml.plan(str(root), size=16, device="cpu")
    assert fp.modality == "unknown" and recipe.data.modality is None
    assert any("modality unknown: --modality" in n for n in recipe.notes)
    assert not recipe.augment.hflip
    recipe, fp, _ = ml.plan(
        str(root), size=16, device="cpu", source_fields={"modality": "Dermoscopy"}
    )
    assert recipe.data.modality == "dermoscopy" == fp.modality
    assert recipe.augment.hflip and recipe.augment.vflip and recipe.augment.rot90
    fundus = make_plan(fp.model_copy(update={"modality": "fundus"}))
    assert fundus.augment.hflip and not fundus.augment.rot90
    # a MedMNIST file given by path is known by its name
    ds = load_dataset(str(medmnist_dir / "breastmnist.npz"))
    assert ds.modality == "ultrasound" and ds.label_names == ["malignant", "normal, benign"]
    copy = tmp_path / "my_scans.npz"
    shutil.copy(medmnist_dir / "breastmnist.npz", copy)
    assert load_dataset(str(copy)).modality == "unknown"


# -------------------------------------------------------------------------------------- CLI
def test_cli_data_info_says_what_it_found(tmp_path, capsys):
    from medlens.cli import main

    root = _split_folder(tmp_path / "Brain_MRI", {"Training": 20, "Testing": 5})
    assert main(["data", "info", str(root), "--size", "16"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert out.startswith("Brain_MRI mri, binary, 2D")
    assert "split folders read: Training as train, Testing as test" in out
    assert "0.1 of train carved out as val" in out and "modality mri: guessed" in out
    code = main(["data", "info", str(root), "--modality", "xrya"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown modality 'xrya' (fix: did you mean x-ray?" in err
    assert len(err.strip().splitlines()) == 1
    out_dir = tmp_path / "plan.yaml"
    code = main(
        ["plan", str(root), "--size", "16", "--device", "cpu", "--val-fraction", "0.2",
         "--modality", "mri", "--drop-duplicates", "-o", str(out_dir)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    plan = out_dir.read_text()
    assert "val_fraction: 0.2" in plan and "modality: mri" in plan
    assert "drop_duplicates: true" in plan


# ------------------------------------------------------------------------ the real chest X-rays
@pytest.fixture(scope="session")
def chest_xray(tmp_path_factory):
    """/work/shared/data/chest_xray at 28 px: 5,840 JPEGs cached once per session (about a
    minute on 2 cores; MEDLENS_TEST_CACHE keeps that cache between sessions)."""
    if not (CHEST_XRAY / "train").is_dir():
        pytest.fail(f"the chest X-ray test data is not in {CHEST_XRAY}")
    cache = os.environ.get("MEDLENS_TEST_CACHE") or str(tmp_path_factory.mktemp("cxr_cache"))
    ds = load_dataset(str(CHEST_XRAY), size=28, options=SourceOptions(cache_dir=cache))
    return ds, fingerprint(ds)


def test_chest_xray_val_is_carved_from_train_and_test_is_the_test_folder(chest_xray):
    ds, fp = chest_xray
    cached = load_cache(Path(ds.metadata["cache"]))
    m = scan_folder(CHEST_XRAY)  # the cache's rows are the folder's files in this order
    assert len(cached.keep) == len(m) == 5840
    test_rows = np.flatnonzero(m.splits == "test")
    assert np.array_equal(ds.splits["test"].images, cached.images[test_rows])  # same, in order
    assert ds.class_counts("test") == [234, 390]
    train_hashes = set(cached.hashes[m.splits == "train"])
    assert set(ds.splits["val"].hashes) <= train_hashes
    assert not set(cached.hashes[test_rows]) & train_hashes  # so val holds no test image
    ideal = 0.1 * np.array([1341, 3875])
    assert np.abs(np.array(ds.class_counts("val")) - ideal).max() <= 1
    assert np.array(ds.class_counts("train")) + ds.class_counts("val") == pytest.approx(
        [1341, 3875]
    )
    assert fp.modality == "x-ray" and fp.in_chans == 1


def test_chest_xray_duplicate_groups_and_plan_notes(chest_xray):
    _, fp = chest_xray
    d = fp.duplicates
    assert d.groups == 30 and d.across_splits == 0 and d.across_pairs == {}
    assert d.within_split["test"] == 6 and d.within_split["train"] + d.within_split["val"] == 24
    recipe = make_plan(fp, device="cpu")
    assert recipe.data.val_fraction == 0.1 and recipe.data.split_seed == 0
    assert recipe.data.modality == "x-ray"
    carve = [n for n in recipe.notes if "carved out as val" in n]
    assert carve and "522 of 5216 images" in carve[0] and "identical images kept" in carve[0]
    json.dumps(fp.model_dump(mode="json"))  # the fingerprint is plain JSON
