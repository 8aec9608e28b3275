"""Every shared option and argument of the medlens commands, declared once.

A command takes an alias (``data_dir: DataDir = None``), so a flag's name, help and check live
here, as in pip's ``cmdoptions`` and huggingface_hub's ``_cli_utils``. The checks
(:mod:`medlens.cli.validate`) run as callbacks while the command line is parsed, before any
command imports torch.

Options that travel together (where the data comes from and how a manifest is read) form an
:class:`OptionGroup`: decorating a command with the group adds the options to it and hands
the command their values as one dict. A new option is one line: an alias here, or an entry
in its group.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from medlens.cli import validate


def output_option(help: str) -> Any:
    """``--output/-o PATH``: where a command writes; ``help`` says what it writes there."""
    return Annotated[Path | None, typer.Option("--output", "-o", help=help, show_default=False)]


# --------------------------------------------------------------------------- data sources
DatasetArg = Annotated[
    str,
    typer.Argument(
        help="MedMNIST name (e.g. pneumoniamnist, organmnist3d_64), a MedMNIST-format .npz, "
        "an image folder (one sub-folder per class) or a CSV/Parquet manifest.",
        callback=validate.dataset,
    ),
]
DataDir = Annotated[
    str | None,
    typer.Option(
        "--data-dir",
        help="Folder with MedMNIST .npz files (default: $MEDLENS_DATA, else ~/.medmnist).",
        show_default=False,
    ),
]
Size = Annotated[
    int | None,
    typer.Option(
        "--size",
        help="MedMNIST image size: 28, 64, 128 or 224 (3D: 28 or 64). Default 28.",
        show_default=False,
    ),
]
Download = Annotated[
    bool,
    typer.Option(
        "--download/--no-download", help="Download missing MedMNIST files (with MD5 check)."
    ),
]
LabelCols = Annotated[
    list[str] | None,
    typer.Option(
        "--label-column",
        help="Manifest: the label column (classes), or repeat it for several 0/1 "
        "columns (multi-label). Default: 'label'.",
        show_default=False,
    ),
]
PathCol = Annotated[
    str | None,
    typer.Option(
        "--path-column",
        help="Manifest: the column of image paths (default: path, image, file...).",
        show_default=False,
    ),
]
PatientCol = Annotated[
    str | None,
    typer.Option(
        "--patient-column",
        help="Manifest: patient ids; splits then keep each patient in one split.",
        show_default=False,
    ),
]
SplitCol = Annotated[
    str | None,
    typer.Option(
        "--split-column",
        help="Manifest: the user's own train/val/test column (checked for leaks).",
        show_default=False,
    ),
]
SkipBad = Annotated[
    bool,
    typer.Option(
        "--skip-bad", help="Skip unreadable images and list them in skipped.csv beside the cache."
    ),
]
CacheDir = Annotated[
    str | None,
    typer.Option(
        "--cache-dir",
        help="Where decoded images are cached (default $MEDLENS_CACHE or ~/.cache/medlens).",
        show_default=False,
    ),
]
ImageRoot = Annotated[
    str | None,
    typer.Option(
        "--image-root",
        help="Manifest: the folder its paths (or ids without an extension) are relative to "
        "(default: the manifest's folder).",
        show_default=False,
    ),
]
Modality = Annotated[
    str | None,
    typer.Option(
        "--modality",
        help="x-ray, ct, mri, pet, nuclear-medicine, ultrasound, mammography, angiography, "
        "dermoscopy, pathology, microscopy, fundus, oct, endoscopy or photo (default: guessed).",
        show_default=False,
        callback=validate.modality,
    ),
]
DropDuplicates = Annotated[
    bool,
    typer.Option(
        "--drop-duplicates",
        help="Drop images identical to one in an earlier split (listed in a CSV in the cache).",
    ),
]
ValFraction = Annotated[
    float | None,
    typer.Option(
        "--val-fraction",
        help="Train and test but no val: the fraction of train carved out as val (default 0.1).",
        show_default=False,
        callback=validate.fraction("--val-fraction"),
    ),
]
Budget = Annotated[
    str | None,
    typer.Option(
        "--budget",
        help="Wall time for training and evaluation, e.g. 20m, 1h30m, 90s: the planner fits "
        "resolution, model and epochs to it on this machine (train.budget).",
        show_default=False,
        callback=validate.budget,
    ),
]

# ------------------------------------------------------------------ external validation
OnData = Annotated[
    str | None,
    typer.Option(
        "--on",
        help="Evaluate on another site's labelled data instead (a folder, manifest, .npz or "
        "MedMNIST name): written to RUN/external/<name>/.",
        callback=validate.dataset,
        show_default=False,
    ),
]
LabelMap = Annotated[
    str | None,
    typer.Option(
        "--label-map",
        help="External class names to the run's, e.g. NORMAL=normal,PNEUMONIA=pneumonia "
        "(default: equal names, ignoring case).",
        callback=validate.label_map,
        show_default=False,
    ),
]
ExternalName = Annotated[
    str | None,
    typer.Option(
        "--name", help="Name of the external set (default: the folder or file name).",
        show_default=False,
    ),
]  # fmt: skip

# --------------------------------------------------------------------------- runs and plans
RunArg = Annotated[
    Path,
    typer.Argument(help="Run directory written by `medlens train`.", callback=validate.trained_run),
]
ImagesArg = Annotated[
    list[Path],
    typer.Argument(
        help="Image files (PNG, JPEG, TIFF, BMP, DICOM, NIfTI; .npy arrays) or folders."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override any plan field, e.g. --set loss.name=focal --set augment.hflip=true. "
        "Repeatable.",
        show_default=False,
        callback=validate.set_options,
    ),
]
PlanFile = Annotated[
    Path | None,
    typer.Option(
        "--plan",
        help="Train with this plan.yaml (from `medlens plan` or an earlier run).",
        show_default=False,
        callback=validate.plan_file,
    ),
]
Resume = Annotated[
    bool, typer.Option("--resume", help="Continue the run in --output from its last checkpoint.")
]
NewRunOut = output_option("New run directory (default under runs/).")

# --------------------------------------------------------------------------- training
Model = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Any timm model name or a medlens model (see `medlens models`).",
        show_default=False,
        callback=validate.model_name,
    ),
]
Epochs = Annotated[
    int | None,
    typer.Option(
        "--epochs", min=1, help="Training epochs [default: the plan's].", show_default=False
    ),
]
BatchSize = Annotated[
    int | None, typer.Option("--batch-size", min=1, help="Batch size.", show_default=False)
]
Lr = Annotated[
    float | None, typer.Option("--lr", min=1e-12, help="Peak learning rate.", show_default=False)
]
Seed = Annotated[
    int | None,
    typer.Option(
        "--seed", help="Random seed (same seed, same result on the CPU).", show_default=False
    ),
]
Folds = Annotated[
    int | None,
    typer.Option(
        "--folds",
        help="k-fold cross-validation: train+val pooled into K folds, one run per fold, and "
        "the run directory the ensemble of them (train.folds).",
        show_default=False,
        callback=validate.members("--folds"),
    ),
]
Seeds = Annotated[
    int | None,
    typer.Option(
        "--seeds",
        help="An ensemble of N runs with seeds seed..seed+N-1 on one split (train.seeds).",
        show_default=False,
        callback=validate.members("--seeds"),
    ),
]
Device = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="auto (CUDA when available), cpu or cuda.",
        show_default=False,
        callback=validate.device,
    ),
]
Onnx = Annotated[
    bool | None,
    typer.Option(
        "--onnx/--no-onnx",
        help="Run on ONNX Runtime with RUN/export/model.onnx, or on PyTorch. Default: the ONNX "
        "export when it exists and matches the best checkpoint.",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON, not as tables.")]


# --------------------------------------------------------------------------- option groups
@dataclass(frozen=True)
class OptionGroup:
    """Options several commands share; ``@GROUP`` adds them to a command.

    The decorated command declares one parameter named ``param`` instead of the options, and
    receives ``pack({option: value, ...})`` there.
    """

    param: str
    options: dict[str, tuple[Any, Any]]  # parameter name -> (alias, default)
    pack: Callable[[dict[str, Any]], Any] = dict

    def __call__(self, command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        if self.param not in signature.parameters:
            raise TypeError(f"{command.__name__} needs a parameter {self.param!r} for the group")
        kept = [p for name, p in signature.parameters.items() if name != self.param]
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=alias, default=d)
            for name, (alias, d) in self.options.items()
        ]

        @functools.wraps(command)
        def with_group(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in self.options}
            return command(**kwargs, **{self.param: self.pack(values)})

        # Typer reads the parameters from __signature__ and their types from __annotations__
        with_group.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
        with_group.__annotations__ = {p.name: p.annotation for p in [*kept, *added]}
        return with_group


def _source_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of the API's data-taking functions (``data_info``, ``plan``,
    ``train``, ``compare``, ``tune``): data_dir, size, download and the manifest's
    ``source_fields``."""
    where = {k: values.pop(k) for k in ("data_dir", "size", "download")}
    values["label_columns"] = values["label_columns"] or None
    return {**where, "source_fields": values}


#: Where the data comes from and how a folder or manifest is read.
SOURCE = OptionGroup(
    "source",
    {
        "data_dir": (DataDir, None),
        "size": (Size, None),
        "download": (Download, True),
        "label_columns": (LabelCols, None),
        "path_column": (PathCol, None),
        "patient_column": (PatientCol, None),
        "split_column": (SplitCol, None),
        "image_root": (ImageRoot, None),
        "modality": (Modality, None),
        "drop_duplicates": (DropDuplicates, False),
        "val_fraction": (ValFraction, None),
        "skip_bad": (SkipBad, False),
        "cache_dir": (CacheDir, None),
    },
    _source_kwargs,
)


def overrides(items: list[str] | None) -> dict[str, Any]:
    """``--set`` items (checked already) as the API's ``overrides`` dict."""
    from medlens.config import parse_set_options

    return parse_set_options(items or [])
