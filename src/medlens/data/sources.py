"""Turn what the user typed (a dataset name or a file path) into an :class:`ArrayDataset`."""

from __future__ import annotations

from pathlib import Path

from medlens.data.dataset import ArrayDataset
from medlens.data.medmnist import load_medmnist
from medlens.data.npz import load_npz_dataset
from medlens.errors import DataError


def load_dataset(
    source: str,
    *,
    data_dir: str | Path | None = None,
    size: int | None = None,
    download: bool = True,
) -> ArrayDataset:
    """Load ``source``: a MedMNIST name (``pneumoniamnist``, ``organmnist3d_64``) or an ``.npz``.

    >>> load_dataset("breastmnist", data_dir="../shared/data/medmnist")  # doctest: +SKIP
    """
    path = Path(source).expanduser()
    if path.suffix == ".npz":
        if size is not None:
            raise DataError(f"--size applies to MedMNIST names, not to the file {path}")
        return load_npz_dataset(path.resolve())  # absolute: plan.yaml must work from anywhere
    if path.exists():
        raise DataError(
            f"{path} is not a format medlens reads yet",
            hint="give a MedMNIST name or a MedMNIST-format .npz file",
        )
    return load_medmnist(source, size=size, data_dir=data_dir, allow_download=download)
