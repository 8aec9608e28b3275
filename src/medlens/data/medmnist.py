"""MedMNIST v2 / MedMNIST+: the 12 2D and 6 3D datasets at every released size.

Names, label names, task types and download checksums come from the ``medmnist`` package's
metadata (``medmnist.info.INFO``), so they match the official release; that file is read
without importing the package (its ``__init__`` imports torch), so names are checked at once.
Files are looked for in,
in order: the ``data_dir`` argument (``--data-dir``), the ``MEDLENS_DATA`` variable, then
``~/.medmnist``.

>>> spec = dataset_spec("pneumoniamnist")
>>> spec.task, spec.label_names
('binary', ['normal', 'pneumonia'])
>>> spec.filename(64)
'pneumoniamnist_64.npz'
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from medlens.errors import DataError, DatasetNotFoundError

if TYPE_CHECKING:  # loading arrays needs numpy and pandas; names and specs need neither
    from medlens.data.dataset import ArrayDataset

SIZES_2D = (28, 64, 128, 224)
SIZES_3D = (28, 64)

# MedMNIST's metadata has no modality field; these come from the MedMNIST v2 paper (Table 1).
MODALITIES = {
    "pathmnist": "colon pathology",
    "chestmnist": "chest x-ray",
    "dermamnist": "dermatoscope",
    "octmnist": "retinal oct",
    "pneumoniamnist": "chest x-ray",
    "retinamnist": "fundus camera",
    "breastmnist": "breast ultrasound",
    "bloodmnist": "blood cell microscope",
    "tissuemnist": "kidney cortex microscope",
    "organamnist": "abdominal ct",
    "organcmnist": "abdominal ct",
    "organsmnist": "abdominal ct",
    "organmnist3d": "abdominal ct",
    "nodulemnist3d": "chest ct",
    "adrenalmnist3d": "shape from abdominal ct",
    "fracturemnist3d": "chest ct",
    "vesselmnist3d": "shape from brain mra",
    "synapsemnist3d": "electron microscope",
}

_TASKS = {
    "binary-class": "binary",
    "multi-class": "multi-class",
    "multi-label, binary-class": "multi-label",
    "ordinal-regression": "ordinal",
}


@dataclass(frozen=True)
class MedMNISTSpec:
    """What the official metadata says about one dataset."""

    flag: str
    task: str
    label_names: list[str]
    n_channels: int
    n_samples: dict[str, int]
    spatial_dims: int
    modality: str
    license: str
    info: dict

    @property
    def sizes(self) -> tuple[int, ...]:
        return SIZES_3D if self.spatial_dims == 3 else SIZES_2D

    def filename(self, size: int = 28) -> str:
        return f"{self.flag}.npz" if size == 28 else f"{self.flag}_{size}.npz"

    def url(self, size: int = 28) -> str:
        return self.info["url" if size == 28 else f"url_{size}"]

    def md5(self, size: int = 28) -> str:
        return self.info["MD5" if size == 28 else f"MD5_{size}"]


def import_medmnist(submodule: str) -> ModuleType:
    """``medmnist.<submodule>`` from the installed package (this imports torch)."""
    return importlib.import_module(f"medmnist.{submodule}")


@lru_cache(maxsize=1)
def _info() -> dict:
    """The official metadata: urls, MD5s, labels, tasks, from ``medmnist/info.py``.

    The file is loaded by its location: ``import medmnist.info`` would first run
    ``medmnist/__init__.py``, which imports torch (seconds) for the dataset classes.
    """
    package = importlib.util.find_spec("medmnist")
    folders = package.submodule_search_locations if package is not None else None
    if not folders:
        found = f" ({package.origin} is not the package)" if package is not None else ""
        raise DataError(
            "the medmnist package, whose metadata names the MedMNIST datasets, is not "
            f"installed{found}",
            hint="pip install medmnist",
        )
    path = Path(next(iter(folders))) / "info.py"
    info = importlib.util.spec_from_file_location("medlens_medmnist_info", path)
    if info is None or info.loader is None or not path.is_file():
        raise DataError(f"{path} is missing", hint="reinstall medmnist: pip install -U medmnist")
    module = importlib.util.module_from_spec(info)
    info.loader.exec_module(module)
    return module.INFO


def dataset_names() -> list[str]:
    """All MedMNIST dataset flags, 2D first."""
    return list(_info())


def dataset_spec(name: str) -> MedMNISTSpec:
    """Metadata of one dataset; raises :class:`DataError` with suggestions for unknown names."""
    info = _info()
    flag = name.lower()
    if flag not in info:
        close = difflib.get_close_matches(flag, info, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see `medlens data list`"
        raise DataError(f"unknown dataset {name!r}", hint=hint)
    entry = info[flag]
    return MedMNISTSpec(
        flag=flag,
        task=_TASKS[entry["task"]],
        label_names=[entry["label"][str(i)] for i in range(len(entry["label"]))],
        n_channels=int(entry["n_channels"]),
        n_samples=dict(entry["n_samples"]),
        spatial_dims=3 if flag.endswith("3d") else 2,
        modality=MODALITIES.get(flag, "unknown"),
        license=entry.get("license", ""),
        info=entry,
    )


def parse_name(name: str) -> tuple[str, int | None]:
    """``"pneumoniamnist_64"`` -> ``("pneumoniamnist", 64)``; no suffix -> size ``None``."""
    flag, _, suffix = name.lower().rpartition("_")
    if flag and suffix.isdigit():
        return flag, int(suffix)
    return name.lower(), None


def default_data_dir() -> Path:
    """``MEDLENS_DATA`` if set, else ``~/.medmnist`` (the medmnist package's own default)."""
    env = os.environ.get("MEDLENS_DATA")
    return Path(env).expanduser() if env else Path.home() / ".medmnist"


def download(spec: MedMNISTSpec, size: int, data_dir: Path) -> Path:
    """Download one file and check its MD5; a clear error when offline or corrupt."""
    from torchvision.datasets.utils import check_integrity, download_url

    path = data_dir / spec.filename(size)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        # md5=None: torchvision only fetches; the check below gives the clearer message
        download_url(spec.url(size), root=str(data_dir), filename=path.name, md5=None)
    except Exception as exc:  # urllib raises many kinds; all mean "not downloaded"
        path.unlink(missing_ok=True)  # never leave a partial file that would fail later
        raise DatasetNotFoundError(
            f"{path.name} is not in {data_dir} and downloading it failed "
            f"({type(exc).__name__}: {exc})",
            hint=f"download {spec.url(size)} by hand and put it in {data_dir}, "
            "or point --data-dir (or MEDLENS_DATA) at the folder that holds it",
        ) from exc
    if not check_integrity(str(path), spec.md5(size)):
        path.unlink()
        raise DataError(
            f"the downloaded {path.name} failed its MD5 check and was deleted",
            hint="download it again; if it keeps failing, fetch it by hand",
        )
    return path


def locate(
    name: str, size: int | None = None, data_dir: str | Path | None = None, allow_download=True
) -> tuple[MedMNISTSpec, int, Path]:
    """Find (or fetch) the file for ``name`` at ``size``; returns (spec, size, path)."""
    flag, name_size = parse_name(name)
    spec = dataset_spec(flag)
    if size is not None and name_size is not None and size != name_size:
        raise DataError(f"{name!r} names size {name_size} but size {size} was asked for")
    size = size or name_size or 28
    if size not in spec.sizes:
        raise DataError(
            f"{spec.flag} comes in sizes {', '.join(map(str, spec.sizes))}, not {size}",
            hint="pick one of those sizes",
        )
    folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
    path = folder / spec.filename(size)
    if path.is_file():
        return spec, size, path
    if not allow_download:
        raise DatasetNotFoundError(
            f"{path.name} not found in {folder}",
            hint=f"download {spec.url(size)} and put it in {folder}, or set --data-dir",
        )
    return spec, size, download(spec, size, folder)


def load_medmnist(
    name: str, size: int | None = None, data_dir: str | Path | None = None, allow_download=True
) -> ArrayDataset:
    """Load a MedMNIST dataset as arrays, validated against its official metadata.

    >>> ds = load_medmnist("breastmnist", data_dir="../shared/data/medmnist")  # doctest: +SKIP
    >>> ds.task, ds.image_shape, len(ds.splits["train"])  # doctest: +SKIP
    ('binary', (28, 28), 546)
    """
    from medlens.data.npz import load_npz_dataset

    spec, size, path = locate(name, size, data_dir, allow_download)
    ds = load_npz_dataset(
        path,
        name=spec.flag if size == 28 else f"{spec.flag}_{size}",
        task=spec.task,
        label_names=spec.label_names,
        spatial_dims=spec.spatial_dims,
        modality=spec.modality,
    )
    if ds.in_chans != spec.n_channels:
        raise DataError(
            f"{path} has {ds.in_chans} channels but {spec.flag} has {spec.n_channels}",
            hint="the file may belong to another dataset; download it again",
        )
    ds.metadata.update({"medmnist_flag": spec.flag, "size": size, "license": spec.license})
    return ds
