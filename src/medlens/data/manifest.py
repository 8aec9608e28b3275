"""Labelled file lists: CSV/Parquet manifests and image folders (one sub-folder per class).

A manifest row names an image file, its label (one column of class names or indices, or
several 0/1 columns for a multi-label task), and optionally a patient id, a split and
metadata such as sex, age or site. Relative paths are relative to the manifest's folder.

>>> m = read_manifest("cxr.csv", label_columns=["finding"], patient_column="pid")  # doctest: +SKIP
>>> m.task, m.label_names  # doctest: +SKIP
('binary', ['normal', 'pneumonia'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medlens.data.dataset import SPLITS
from medlens.data.readers import image_kind
from medlens.errors import DataError

PATH_COLUMNS = ("path", "image", "file", "filename", "image_path")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@dataclass
class Manifest:
    """Files and their labels, before any image is read."""

    source: str
    paths: list[Path]
    labels: np.ndarray  # (N,) int64 class indices, or (N, K) float32 0/1
    label_names: list[str]
    task: str
    rows: np.ndarray  # manifest row (1-based, header = row 1) or folder index, for messages
    patients: np.ndarray | None = None  # (N,) str
    splits: np.ndarray | None = None  # (N,) "train" / "val" / "test"
    metadata: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __len__(self) -> int:
        return len(self.paths)

    def where(self, i: int) -> str:
        """How to name item ``i`` in a message: the file, and its manifest row if any."""
        row = (
            f" (row {int(self.rows[i])} of {self.source})"
            if self.source.endswith((".csv", ".parquet", ".tsv"))
            else ""
        )
        return f"{self.paths[i]}{row}"

    def subset(self, keep: np.ndarray) -> Manifest:
        """The items where ``keep`` is true."""
        idx = np.flatnonzero(keep)
        return Manifest(
            source=self.source,
            paths=[self.paths[i] for i in idx],
            labels=self.labels[idx],
            label_names=self.label_names,
            task=self.task,
            rows=self.rows[idx],
            patients=None if self.patients is None else self.patients[idx],
            splits=None if self.splits is None else self.splits[idx],
            metadata=self.metadata.iloc[idx].reset_index(drop=True)
            if len(self.metadata) == len(self.paths)
            else self.metadata,
        )


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(
            path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=False
        )
    except ImportError as exc:
        raise DataError(
            f"reading {path} needs pyarrow", hint="pip install 'medlens[parquet]'"
        ) from exc
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path} is not a readable table ({type(exc).__name__}: {exc})") from exc


def _column(df: pd.DataFrame, name: str, what: str, path: Path) -> pd.Series:
    if name not in df.columns:
        raise DataError(
            f"{path} has no {what} column {name!r} (columns: {', '.join(df.columns)})",
            hint=f"name the {what} column with the matching option",
        )
    return df[name]


def _single_label(values: pd.Series, path: Path, column: str):
    text = values.astype(str).str.strip()
    blank = np.flatnonzero((text == "") | (text.str.lower() == "nan"))
    if len(blank):
        rows = ", ".join(str(i + 2) for i in blank[:5])
        raise DataError(
            f"{path}: empty {column!r} label in row(s) {rows}",
            hint="give every row a label, or drop those rows",
        )
    names = sorted(
        text.unique(),
        key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v),
    )
    if len(names) < 2:
        raise DataError(
            f"{path}: column {column!r} holds one class only ({names[0]!r})",
            hint="a classifier needs at least two classes",
        )
    counts = text.value_counts()
    lonely = [n for n in names if counts[n] == 1]
    if lonely:
        rows = [int(np.flatnonzero(text.to_numpy() == n)[0]) + 2 for n in lonely]
        shown = ", ".join(f"{n!r} (row {r})" for n, r in zip(lonely, rows, strict=True))
        raise DataError(
            f"{path}: label(s) {shown} appear only once in column {column!r}",
            hint="a label seen once is most likely a typo: correct it or drop the row",
        )
    index = {n: i for i, n in enumerate(names)}
    return text.map(index).to_numpy(np.int64), names


def _multi_label(df: pd.DataFrame, columns: list[str], path: Path):
    out = np.zeros((len(df), len(columns)), np.float32)
    for k, col in enumerate(columns):
        text = _column(df, col, "label", path).astype(str).str.strip().str.lower()
        mapping = {"1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0, "true": 1.0, "false": 0.0}
        bad = np.flatnonzero(~text.isin(mapping))
        if len(bad):
            i = bad[0]
            raise DataError(
                f"{path}: row {i + 2} has {df[col].iloc[i]!r} in label column {col!r}",
                hint="multi-label columns hold 0 or 1",
            )
        out[:, k] = text.map(mapping).to_numpy(np.float32)
    return out


def _patients(values: pd.Series, path: Path, column: str) -> np.ndarray:
    text = values.astype(str).str.strip()
    blank = np.flatnonzero(text.str.lower().isin(("", "nan", "none")))
    if len(blank):
        rows = ", ".join(str(i + 2) for i in blank[:5])
        raise DataError(
            f"{path}: empty {column!r} patient id in row(s) {rows}",
            hint="give every row its patient id; unknown ids would merge patients",
        )
    return text.to_numpy(str)


def _splits(values: pd.Series, path: Path) -> np.ndarray:
    text = values.astype(str).str.strip().str.lower()
    bad = np.flatnonzero(~text.isin(SPLIT_ALIASES))
    if len(bad):
        i = bad[0]
        raise DataError(
            f"{path}: row {i + 2} has split {values.iloc[i]!r}", hint="use train, val or test"
        )
    return text.map(SPLIT_ALIASES).to_numpy(str)


def read_manifest(
    path: str | Path,
    *,
    label_columns: list[str] | None = None,
    path_column: str | None = None,
    patient_column: str | None = None,
    split_column: str | None = None,
) -> Manifest:
    """Read a CSV, TSV or Parquet manifest; one label column (classes) or several (0/1)."""
    path = Path(path).resolve()
    df = _read_table(path)
    if df.empty:
        raise DataError(f"{path} has no rows")
    if path_column is None:
        found = [c for c in PATH_COLUMNS if c in df.columns]
        if not found:
            raise DataError(
                f"{path} has no path column (looked for {', '.join(PATH_COLUMNS)})",
                hint="name it with --path-column",
            )
        path_column = found[0]
    if not label_columns:
        if "label" not in df.columns:
            raise DataError(f"{path} has no 'label' column", hint="name it with --label-column")
        label_columns = ["label"]
    files = _column(df, path_column, "path", path).astype(str).str.strip()
    paths = [p if p.is_absolute() else path.parent / p for p in map(Path, files)]
    if len(label_columns) == 1:
        labels, names = _single_label(
            _column(df, label_columns[0], "label", path), path, label_columns[0]
        )
        task = "binary" if len(names) == 2 else "multi-class"
    else:
        labels, names, task = (
            _multi_label(df, label_columns, path),
            list(label_columns),
            "multi-label",
        )
    used = {path_column, *label_columns, patient_column, split_column}
    return Manifest(
        source=str(path),
        paths=paths,
        labels=labels,
        label_names=[str(n) for n in names],
        task=task,
        rows=np.arange(2, len(df) + 2),
        patients=None
        if patient_column is None
        else _patients(_column(df, patient_column, "patient", path), path, patient_column),
        splits=None
        if split_column is None
        else _splits(_column(df, split_column, "split", path), path),
        metadata=df[[c for c in df.columns if c not in used]].reset_index(drop=True),
    )


def scan_folder(folder: str | Path) -> Manifest:
    """An image folder: one sub-folder per class, or train/val/test folders holding those.

    ::

        folder/normal/a.png  folder/pneumonia/b.png          (medlens makes the splits)
        folder/train/normal/a.png  folder/test/normal/c.png  (the folder's own splits)
    """
    folder = Path(folder).resolve()
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    split_dirs = {d.name.lower(): d for d in subdirs if d.name.lower() in SPLIT_ALIASES}
    roots = (
        [(SPLIT_ALIASES[n], d) for n, d in split_dirs.items()] if split_dirs else [(None, folder)]
    )
    class_names = sorted(
        {
            d.name
            for _, root in roots
            for d in root.iterdir()
            if d.is_dir() and not d.name.startswith(".")
        }
    )
    if len(class_names) < 2:
        raise DataError(
            f"{folder} needs one sub-folder per class (found {len(class_names)})",
            hint="put each class's images in a folder named after the class",
        )
    paths, labels, splits = [], [], []
    for split, root in roots:
        for k, name in enumerate(class_names):
            files = (
                sorted(
                    f for f in (root / name).rglob("*") if f.is_file() and image_kind(f) is not None
                )
                if (root / name).is_dir()
                else []
            )
            paths += files
            labels += [k] * len(files)
            splits += [split] * len(files)
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    empty = [class_names[k] for k in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(
            f"{folder}: class folder(s) {', '.join(empty)} hold no images",
            hint="add images or remove the empty folders",
        )
    return Manifest(
        source=str(folder),
        paths=paths,
        labels=np.asarray(labels, np.int64),
        label_names=class_names,
        task="binary" if len(class_names) == 2 else "multi-class",
        rows=np.arange(len(paths)),
        splits=np.asarray(splits, str) if split_dirs else None,
    )


def check_split_classes(m: Manifest) -> None:
    """Every class (label) must have training images."""
    if m.splits is None:
        return
    train = m.labels[m.splits == "train"]
    counts = (
        train.sum(axis=0)
        if m.task == "multi-label"
        else np.bincount(train, minlength=len(m.label_names))
    )
    empty = [m.label_names[k] for k in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(
            f"{m.source}: no training images for {', '.join(empty)}",
            hint="move some of its images to the train split",
        )
    for split in SPLITS:
        if not (m.splits == split).any():
            raise DataError(
                f"{m.source}: the {split} split is empty",
                hint="give every split images, or drop the split column",
            )
