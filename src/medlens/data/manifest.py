"""Labelled file lists: CSV/Parquet manifests (image folders: :mod:`medlens.data.folders`).

A manifest row names an image file, its label (one column of class names or indices, one-hot
0/1 columns, or several 0/1 columns for a multi-label task), and optionally a patient id, a
split and metadata such as sex, age or site. Manifests are read as they come:

- the path column may hold paths relative to the manifest's folder or to ``image_root``, or
  ids without an extension (``ISIC_0024306``): the file is then found by looking under that
  folder, and a row with no file or two matching files is an error naming the row;
- without ``label_columns``, a column named like ``label``, ``class``, ``diagnosis`` or
  ``dx`` is the label; failing that, 0/1 columns with exactly one 1 per row (ISIC's
  ``image, MEL, NV, BCC, ...``) are one multi-class label;
- a column named like ``patient_id``, ``lesion_id`` or ``study_id`` groups the images (one
  group never straddles two splits), and a ``split`` column of train/val/test values is the
  user's own split.

Every such choice is written to :attr:`Manifest.notes`.

>>> m = read_manifest("HAM10000_metadata.csv", image_root="images")  # doctest: +SKIP
>>> m.task, m.label_names, m.notes[0]  # doctest: +SKIP
('multi-class', ['akiec', 'bcc', ...], "label column 'dx' (7 classes)")
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medlens.data.dataset import SPLITS
from medlens.data.readers import IMAGE_SUFFIXES, image_kind
from medlens.errors import DataError

# Column names recognised without an option, compared after normalising ("Patient ID" is
# patient_id); the first one present wins.
PATH_COLUMNS = (
    "path",
    "image",
    "file",
    "filename",
    "file_name",
    "filepath",
    "image_path",
    "image_file",
    "image_name",
    "image_id",
    "img",
)
LABEL_COLUMNS = ("label", "labels", "class", "class_name", "diagnosis", "dx", "target", "finding")
# broadest first: a patient has several lesions and studies
GROUP_COLUMNS = (
    "patient_id",
    "patient",
    "patientid",
    "subject_id",
    "subject",
    "participant_id",
    "case_id",
    "lesion_id",
    "study_id",
)
SPLIT_COLUMNS = ("split", "subset", "partition")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "trn": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "eval": "val",
    "evaluation": "val",
    "test": "test",
    "testing": "test",
    "tst": "test",
}
_BINARY = {"1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0, "true": 1.0, "false": 0.0}


def split_name(text: str) -> str | None:
    """The split a folder name or column value means ("train", "val", "test"), else None.

    >>> split_name("Training"), split_name("VALID"), split_name("Testing"), split_name("scans")
    ('train', 'val', 'test', None)
    """
    return SPLIT_ALIASES.get(re.sub(r"[^a-z]", "", str(text).lower()))


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
    notes: list[str] = field(default_factory=list)  # what was found and how it was read
    split_source: str = "split column"  # how to name the user's splits in a message

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
            notes=list(self.notes),
            split_source=self.split_source,
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


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


def _find_column(df: pd.DataFrame, candidates: tuple[str, ...], skip: set) -> str | None:
    """The first of ``candidates`` among the columns (compared normalised), not in ``skip``."""
    by_name = {}
    for col in df.columns:
        if col not in skip:
            by_name.setdefault(_normal(col), col)
    return next((by_name[c] for c in candidates if c in by_name), None)


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


def _is_binary(values: pd.Series) -> bool:
    return bool(values.astype(str).str.strip().str.lower().isin(_BINARY).all())


def _multi_label(df: pd.DataFrame, columns: list[str], path: Path):
    out = np.zeros((len(df), len(columns)), np.float32)
    for k, col in enumerate(columns):
        text = _column(df, col, "label", path).astype(str).str.strip().str.lower()
        bad = np.flatnonzero(~text.isin(_BINARY))
        if len(bad):
            i = bad[0]
            raise DataError(
                f"{path}: row {i + 2} has {df[col].iloc[i]!r} in label column {col!r}",
                hint="multi-label columns hold 0 or 1",
            )
        out[:, k] = text.map(_BINARY).to_numpy(np.float32)
    return out


def _labels(df: pd.DataFrame, columns: list[str], path: Path, notes: list[str]):
    """(labels, names, task) from one column of classes or several 0/1 columns; 0/1 columns
    with exactly one 1 in every row are one multi-class label (ISIC's ground truth)."""
    if len(columns) == 1:
        labels, names = _single_label(_column(df, columns[0], "label", path), path, columns[0])
        return labels, names, "binary" if len(names) == 2 else "multi-class"
    onehot = _multi_label(df, columns, path)
    if not (onehot.sum(1) == 1).all():
        return onehot, list(columns), "multi-label"
    empty = [c for c, n in zip(columns, onehot.sum(0), strict=True) if n == 0]
    names = [c for c in columns if c not in empty]
    if len(names) < 2:
        raise DataError(
            f"{path}: the one-hot columns {', '.join(columns)} mark one class only",
            hint="a classifier needs at least two classes",
        )
    notes.append(
        f"label columns {', '.join(columns)} hold exactly one 1 per row: read as one "
        f"{'binary' if len(names) == 2 else 'multi-class'} label, not multi-label"
        + (f" (no row has {', '.join(empty)}: not a class)" if empty else "")
    )
    keep = [columns.index(n) for n in names]
    return (
        onehot[:, keep].argmax(1).astype(np.int64),
        names,
        ("binary" if len(names) == 2 else "multi-class"),
    )


def _guess_label_columns(df: pd.DataFrame, path: Path, skip: set, notes: list[str]) -> list[str]:
    """A label-like column, or the 0/1 columns that are one-hot; DataError when neither."""
    found = _find_column(df, LABEL_COLUMNS, skip)
    if found is not None:
        if found != "label":
            notes.append(f"label column {found!r}")
        return [found]
    binary = [c for c in df.columns if c not in skip and _is_binary(df[c])]
    if len(binary) >= 2:
        onehot = _multi_label(df, binary, path)
        bad = np.flatnonzero(onehot.sum(1) != 1)
        if not len(bad):
            return binary
        raise DataError(
            f"{path} has no label column; its 0/1 columns {', '.join(binary)} are not one-hot "
            f"(row {bad[0] + 2} has {int(onehot[bad[0]].sum())} ones)",
            hint="for a multi-label task name them: "
            + " ".join(f"--label-column {c}" for c in binary),
        )
    raise DataError(
        f"{path} has no label column (looked for {', '.join(LABEL_COLUMNS)}, and for one-hot "
        f"0/1 columns; columns: {', '.join(df.columns)})",
        hint="name it with --label-column",
    )


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
    names = values.astype(str).map(split_name)
    bad = np.flatnonzero(names.isna().to_numpy())
    if len(bad):
        i = bad[0]
        raise DataError(
            f"{path}: row {i + 2} has split {values.iloc[i]!r}", hint="use train, val or test"
        )
    return names.to_numpy(str)


def _has_image_suffix(name: str) -> bool:
    low = name.lower()
    return low.endswith(".nii.gz") or Path(low).suffix in IMAGE_SUFFIXES - {""}


def _without_suffix(rel: str) -> str:
    low = rel.lower()
    if low.endswith(".nii.gz"):
        return rel[: -len(".nii.gz")]
    return rel[: -len(Path(rel).suffix)] if Path(rel).suffix else rel


class _FileIndex:
    """Every image file under a folder, by relative path and by name, without extension;
    built on first use with one walk of the folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_rel: dict[str, list[Path]] | None = None
        self._by_stem: dict[str, list[Path]] = defaultdict(list)

    def matches(self, value: str) -> list[Path]:
        """Files for ``value`` (an id, or a relative path, without extension): those at that
        relative path first, else those of that name anywhere below the root."""
        if self._by_rel is None:
            self._by_rel = defaultdict(list)
            for f in self.root.rglob("*"):
                if f.is_file() and not f.name.startswith(".") and image_kind(f) is not None:
                    rel = _without_suffix(f.relative_to(self.root).as_posix())
                    self._by_rel[rel].append(f)
                    self._by_stem[rel.rsplit("/", 1)[-1]].append(f)
        key = value.replace("\\", "/").removeprefix("./")
        return self._by_rel.get(key) or ([] if "/" in key else self._by_stem.get(key, []))


def resolve_paths(
    values: pd.Series,
    base: Path,
    source: Path,
    *,
    skip_missing: bool = False,
    notes: list[str] | None = None,
) -> list[Path]:
    """The image file of each path-column value: ``base / value`` when it exists, else the one
    image file named ``value`` plus an extension (ids such as ``ISIC_0024306``) at that
    relative path or anywhere below ``base``.

    A value with no such file is a DataError naming its row (with ``skip_missing`` its path is
    kept, for the cache to skip and list); two matching files are always one.
    """
    index = _FileIndex(base)
    paths, looked_up, missing = [], 0, []
    for i, value in enumerate(values.astype(str).str.strip()):
        direct = Path(value) if Path(value).is_absolute() else base / value
        if direct.is_file() or _has_image_suffix(value):
            if not direct.is_file():
                missing.append((i, direct, ""))
            paths.append(direct)
            continue
        found = index.matches(value)
        if len(found) > 1:
            shown = ", ".join(str(f) for f in found[:3])
            raise DataError(
                f"row {i + 2} of {source}: {value!r} matches {len(found)} files ({shown})",
                hint="give the extension (or the sub-folder) in the path column, or point "
                "--image-root at the one folder that holds the images",
            )
        if not found:
            missing.append((i, direct, f"; no file named {value}.<ext> below {base} either"))
            paths.append(direct)
            continue
        paths.append(found[0])
        looked_up += 1
    if missing and not skip_missing:
        i, direct, why = missing[0]
        more = f" ({len(missing) - 1} more rows have no file)" if len(missing) > 1 else ""
        raise DataError(
            f"{direct} (row {i + 2} of {source}) does not exist{why}{more}",
            hint="check the path column and --image-root, or add --skip-bad to skip rows "
            "without a file",
        )
    if looked_up and notes is not None:
        suffixes = sorted({p.suffix.lower() for p in paths if p.is_file()})
        notes.append(
            f"{looked_up} path(s) without an extension matched to their {'/'.join(suffixes)} "
            f"file below {base}"
        )
    return paths


def read_manifest(
    path: str | Path,
    *,
    label_columns: list[str] | None = None,
    path_column: str | None = None,
    patient_column: str | None = None,
    split_column: str | None = None,
    image_root: str | Path | None = None,
    skip_missing: bool = False,
) -> Manifest:
    """Read a CSV, TSV or Parquet manifest as it comes (see the module doc).

    ``image_root`` is the folder the paths are relative to (default: the manifest's own);
    ``skip_missing`` keeps rows without a file (the cache skips and lists them).
    """
    path = Path(path).resolve()
    df = _read_table(path)
    if df.empty:
        raise DataError(f"{path} has no rows")
    notes: list[str] = []
    if path_column is None:
        path_column = _find_column(df, PATH_COLUMNS, set())
        if path_column is None:
            raise DataError(
                f"{path} has no path column (looked for {', '.join(PATH_COLUMNS)})",
                hint="name it with --path-column",
            )
    if patient_column is None:
        patient_column = _find_column(df, GROUP_COLUMNS, {path_column})
        if patient_column is not None:
            notes.append(
                f"grouping column {patient_column!r}: its images stay in one split "
                "(--patient-column to choose another)"
            )
    if split_column is None:
        found = _find_column(df, SPLIT_COLUMNS, {path_column, patient_column})
        if found is not None and df[found].astype(str).map(split_name).notna().all():
            split_column = found
            notes.append(f"split column {found!r}: the manifest's own train/val/test")
    taken = {path_column, patient_column, split_column}
    if not label_columns:
        label_columns = _guess_label_columns(df, path, taken, notes)
    base = path.parent if image_root is None else Path(image_root).expanduser().resolve()
    if not base.is_dir():
        raise DataError(f"image root {base} is not a folder", hint="check --image-root")
    paths = resolve_paths(
        _column(df, path_column, "path", path),
        base,
        path,
        skip_missing=skip_missing,
        notes=notes,
    )
    labels, names, task = _labels(df, label_columns, path, notes)
    used = {*taken, *label_columns}
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
        notes=notes,
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
