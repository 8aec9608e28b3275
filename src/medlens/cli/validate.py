"""Argument checks that run while the command line is parsed, before any heavy import.

Each check is a Typer callback of an option or argument in :mod:`medlens.cli.options`: it takes
the value, raises the :class:`~medlens.errors.MedlensError` the stage would raise later, in the
same words, and returns the value. Only light modules are imported (config, errors, the
MedMNIST names, the model names, the run directory's paths), so a wrong argument is refused in
a fraction of a second instead of after the 5-10 s that importing torch, timm and torchvision
takes.

>>> device("tpu")
Traceback (most recent call last):
...
medlens.errors.ConfigError: unknown device 'tpu' (fix: use auto, cpu or cuda)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from medlens.errors import ConfigError, DataError
from medlens.models.names import check_model_name

# data.labelled.MANIFEST_SUFFIXES (a test keeps them equal): that module loads pandas and the
# image readers, seconds this check must not wait for
MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet")


def set_options(items: list[str] | None) -> list[str] | None:
    """``--set KEY=VALUE``: the form, that KEY is a plan field, that VALUE fits it, and for
    ``model.name`` that the model exists."""
    if not items:
        return items
    from medlens.config import check_override, parse_set_options

    for key, value in parse_set_options(items).items():
        check_override(key, value)
        if key == "model.name":
            check_model_name(value)
    return items


def dataset(source: str | None) -> str | None:
    """An existing path of a kind medlens reads, or a known MedMNIST name (with close names);
    the checks and messages of :func:`medlens.data.sources.load_dataset`."""
    if source is None:
        return None
    path = Path(source).expanduser()
    if path.suffix == ".npz":
        if not path.resolve().is_file():
            raise DataError(f"{path.resolve()} does not exist", hint="check the path")
    elif path.is_dir() or path.suffix.lower() in MANIFEST_SUFFIXES:
        if not path.exists():
            raise DataError(f"{path} does not exist", hint="check the path")
    elif path.exists():
        raise DataError(
            f"{path} is not a format medlens reads",
            hint="give a MedMNIST name, a MedMNIST-format .npz, an image folder or a "
            "CSV/Parquet manifest",
        )
    else:
        from medlens.data.medmnist import dataset_spec, parse_name

        dataset_spec(parse_name(source)[0])
    return source


def trained_run(path: Path) -> Path:
    """A run directory with plan.yaml and checkpoints/best.safetensors."""
    from medlens.run import Run

    Run.open(path)
    return path


def trained_run_as(role: str) -> Callable[[Path], Path]:
    """:func:`trained_run` naming the run by its ``role`` ("teacher", "run") in errors."""

    def check(path: Path) -> Path:
        from medlens.run import Run

        Run.open(Path(path).expanduser().resolve(), role=role)
        return path

    return check


def plan_file(path: Path | None) -> Path | None:
    """``--plan``: a readable, valid plan.yaml."""
    if path is not None:
        from medlens.config import load_plan

        load_plan(path)
    return path


def model_name(name: str | None) -> str | None:
    """``--model``/``--student``: a medlens or timm model (see :mod:`medlens.models.names`)."""
    if name is not None:
        check_model_name(name)
    return name


def model_names(names: str | None) -> str | None:
    """``--models a,b``: each a known model (empty and repeated names: the stage says so)."""
    for name in (names or "").split(","):
        if name.strip():
            check_model_name(name.strip())
    return names


def device(name: str | None) -> str | None:
    """auto, cpu, cuda or cuda:N (whether a GPU is there, torch says later)."""
    if name is not None and name not in ("auto", "cpu") and not name.startswith("cuda"):
        raise ConfigError(f"unknown device {name!r}", hint="use auto, cpu or cuda")
    return name


def one_of(
    choices: Sequence[str], what: str, *, use: str = "use one of", fold_case: bool = False
) -> Callable[[str | None], str | None]:
    """A check that a value is one of ``choices``: ``unknown <what> 'x' (fix: <use> a, b)``."""

    def check(value: str | None) -> str | None:
        if value is not None and (value.lower() if fold_case else value) not in choices:
            raise ConfigError(f"unknown {what} {value!r}", hint=f"{use} {', '.join(choices)}")
        return value

    return check


def prune_amount(amount: float) -> float:
    """``--amount``: a fraction strictly between 0 and 1 (as ``compress.prune.check_options``)."""
    if not 0.0 < amount < 1.0:
        raise ConfigError(
            f"--amount must lie strictly between 0 and 1 (the fraction of each layer's "
            f"channels to remove), got {amount}",
            hint="e.g. --amount 0.3 removes 30% of the channels",
        )
    return amount


def resume(resume: bool, output: Path | None) -> None:
    """``train --resume``: the run to continue is named by --output and has a last checkpoint."""
    if not resume:
        return
    if output is None:
        raise ConfigError("--resume needs --output naming the run to continue")
    from medlens.run import Run

    Run(Path(output)).check_resumable()


def modality(word: str | None) -> str | None:
    """``--modality``: a word of the vocabulary (close names suggested)."""
    if word is not None:
        from medlens.config import check_modality

        return check_modality(word)
    return word


def fraction(flag: str) -> Callable[[float | None], float | None]:
    """A check that a value lies strictly between 0 and 1."""

    def check(value: float | None) -> float | None:
        if value is not None and not 0.0 < value < 1.0:
            raise ConfigError(
                f"{flag} must lie strictly between 0 and 1, got {value}", hint=f"e.g. {flag} 0.1"
            )
        return value

    return check


def budget(text: str | None) -> str | None:
    """``--budget``: a positive duration (20m, 1h30m, 90s, or seconds)."""
    if text is None:
        return None
    from medlens.config import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"--budget {text!r}: {exc}", hint="e.g. --budget 20m") from None
    if seconds <= 0:
        raise ConfigError(
            f"--budget {text!r} leaves no time to train", hint="give a positive time, e.g. 20m"
        )
    return text


def label_map(text: str | None) -> str | None:
    """``--label-map EXTERNAL=RUN,...``: the form of every item (the names are checked against
    the classes once the data is read)."""
    parse_label_map(text)
    return text


def parse_label_map(text: str | None) -> dict[str, str]:
    """``"NORMAL=normal,PNEUMONIA=pneumonia"`` as a dict (a ConfigError naming a bad item).

    >>> parse_label_map("NORMAL=normal, PNEUMONIA=pneumonia")
    {'NORMAL': 'normal', 'PNEUMONIA': 'pneumonia'}
    """
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(
                f"--label-map item {item.strip()!r} is not EXTERNAL=RUN",
                hint="write it as EXTERNAL_CLASS=RUN_CLASS,..., e.g. NORMAL=normal",
            )
        out[key.strip()] = value.strip()
    return out


def members(flag: str) -> Callable[[int | None], int | None]:
    """``--folds`` / ``--seeds``: an ensemble of at least 2 members."""

    def check(n: int | None) -> int | None:
        if n is not None and n < 2:
            what = "cross-validation needs" if flag == "--folds" else "an ensemble needs"
            raise ConfigError(
                f"{flag} {n}: {what} at least 2",
                hint=f"e.g. {flag} 5" if flag == "--folds" else f"e.g. {flag} 3",
            )
        return n

    return check
