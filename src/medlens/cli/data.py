"""``medlens data info`` and ``medlens data list``: what a dataset is, which MedMNIST sets exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medlens.cli import options
from medlens.cli.tables import err_console, print_fingerprint, print_medmnist_list


@options.SOURCE
def info(dataset: options.DatasetArg, as_json: options.AsJson = False, source: Any = None) -> None:
    """Fingerprint a dataset: task, image shape, class counts per split, intensities, duplicates.

    Example: medlens data info breastmnist --data-dir ../shared/data/medmnist
    """
    from medlens import api
    from medlens.progress import RichReporter

    fp = api.data_info(dataset, **source, reporter=RichReporter(err_console))
    if as_json:
        print(fp.model_dump_json(indent=2))
        return
    print_fingerprint(fp)


def list_sets(data_dir: options.DataDir = None) -> None:
    """List the MedMNIST datasets, their tasks and sizes, and which files are present locally.

    Example: medlens data list --data-dir ../shared/data/medmnist
    """
    from medlens.data.medmnist import default_data_dir

    print_medmnist_list(Path(data_dir).expanduser() if data_dir else default_data_dir())
