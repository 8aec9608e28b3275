"""Turn what the user typed (a dataset name, a file or a folder) into an :class:`ArrayDataset`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medlens.config import check_modality, modality_name
from medlens.data.dataset import ArrayDataset
from medlens.data.medmnist import dataset_names, dataset_spec, load_medmnist, parse_name
from medlens.data.npz import load_npz_dataset
from medlens.errors import DataError


def load_npz_file(path: Path) -> ArrayDataset:
    """A MedMNIST-format ``.npz``; one named by a MedMNIST flag (``pneumoniamnist_64.npz``)
    takes that dataset's modality, and its class names when the count matches.

    >>> load_npz_file(Path("../shared/data/medmnist/breastmnist.npz")).modality  # doctest: +SKIP
    'ultrasound'
    """
    ds = load_npz_dataset(path.resolve())  # absolute: plan.yaml must work from anywhere
    flag = parse_name(path.stem)[0]
    if flag in dataset_names():
        spec = dataset_spec(flag)
        ds.modality = modality_name(spec.modality)
        if ds.task == spec.task and ds.n_classes == len(spec.label_names):
            ds.label_names = spec.label_names
        ds.metadata["notes"] = [f"{path.name}: MedMNIST's {flag} by its name ({ds.modality})"]
    return ds


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
    from medlens.data.labelled import SourceOptions, is_labelled_source, load_labelled

    path = Path(source).expanduser()
    opts = options or SourceOptions()
    given = check_modality(opts.modality) if opts.modality else None  # before any reading
    if path.suffix == ".npz":
        if size is not None:
            raise DataError(f"--size applies to MedMNIST names and folders, not to {path}")
        ds = load_npz_file(path)
    elif is_labelled_source(path):
        if not path.exists():
            raise DataError(f"{path} does not exist", hint="check the path")
        if size is not None:
            opts.size = size
        return load_labelled(path, opts, on_progress=on_progress)
    elif path.exists():
        raise DataError(
            f"{path} is not a format medlens reads",
            hint="give a MedMNIST name, a MedMNIST-format .npz, an image folder or a "
            "CSV/Parquet manifest",
        )
    else:
        ds = load_medmnist(source, size=size, data_dir=data_dir, allow_download=download)
        ds.modality = modality_name(ds.modality)
    if given:
        ds.modality = given
    return ds
