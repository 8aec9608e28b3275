"""The ``medlens`` command: a thin Typer layer over :mod:`medlens.api`.

One module per command group (:mod:`.data`, :mod:`.train`, :mod:`.evaluate`, :mod:`.predict`,
:mod:`.deploy`, :mod:`.compare`, :mod:`.compress`, :mod:`.models`), the shared options in
:mod:`.options`, their checks in :mod:`.validate` and the printed tables in :mod:`.tables` and
:mod:`.leaderboards`. Arguments are checked while the command line is parsed, before a command
imports torch; every user error is a :class:`~medlens.errors.MedlensError`, which ``main``
prints on one line before exiting with code 2, never with a traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from medlens import __version__
from medlens.cli import compare, compress, data, deploy, evaluate, models, predict, train
from medlens.cli.tables import console, err_console
from medlens.errors import MedlensError

app = typer.Typer(
    name="medlens",
    help="Medical image classification: fingerprint a dataset, plan a recipe, train, evaluate "
    "and predict. Each command's --help explains its options.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(
    help="Inspect datasets: list MedMNIST sets, fingerprint one.", no_args_is_help=True
)
data_app.command("info")(data.info)
data_app.command("list")(data.list_sets)
app.add_typer(data_app, name="data")  # first in the help, as the flow starts with the data
for name, command in {
    "plan": train.plan,
    "train": train.train,
    "evaluate": evaluate.evaluate,
    "recalibrate": evaluate.recalibrate,
    "analyse": evaluate.analyse,
    "report": evaluate.report,
    "predict": predict.predict,
    "export": deploy.export,
    "explain": predict.explain,
    "serve": deploy.serve,
    "compare": compare.compare,
    "tune": compare.tune,
    "models": models.models,
    "distill": compress.distill,
    "prune": compress.prune,
}.items():
    app.command(name)(command)


def _version(value: bool) -> None:
    if value:
        console.print(f"medlens {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Medical image classification, from a dataset to a trained and evaluated model."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; print user errors on one line and exit 2."""
    try:
        app(args=argv, standalone_mode=False)
    except MedlensError as exc:
        # escaped: hints such as pip install "medlens[serve]" are text, not rich markup
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except typer.TyperException as exc:  # usage errors: bad option values, missing arguments
        ctx = getattr(exc, "ctx", None)
        where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        err_console.print(f"[red]error:[/red] {text}{where}", highlight=False, soft_wrap=True)
        return getattr(exc, "exit_code", 2)
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
