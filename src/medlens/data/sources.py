"""Turn what the user typed (a dataset name, a file or a folder) into an :class:`ArrayDataset`."""

from __future__ import annotations

from collections.abc import Callable
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
    options=None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ArrayDataset:
    """Load ``source``: a MedMNIST name (``pneumoniamnist``, ``organmnist3d_64``), a
    MedMNIST-format ``.npz``, an image folder (one sub-folder per class) or a CSV/Parquet
    manifest. ``options`` (:class:`~medlens.data.labelled.SourceOptions`) say how to read the
    last two.

    >>> load_dataset("breastmnist", data_dir="../shared/data/medmnist")  # doctest: +SKIP
    """
    path = Path(source).expanduser()
    if path.suffix == ".npz":
        if size is not None:
            raise DataError(f"--size applies to MedMNIST names and folders, not to {path}")
        return load_npz_dataset(path.resolve())  # absolute: plan.yaml must work from anywhere
    from medlens.data.labelled import SourceOptions, is_labelled_source, load_labelled

    if is_labelled_source(path):
        if not path.exists():
            raise DataError(f"{path} does not exist", hint="check the path")
        opts = options or SourceOptions()
        if size is not None:
            opts.size = size
        return load_labelled(path, opts, on_progress=on_progress)
    if path.exists():
        raise DataError(
            f"{path} is not a format medlens reads",
            hint="give a MedMNIST name, a MedMNIST-format .npz, an image folder or a "
            "CSV/Parquet manifest",
        )
    return load_medmnist(source, size=size, data_dir=data_dir, allow_download=download)
