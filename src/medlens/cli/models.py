"""``medlens models``: the models medlens knows, with their parameter counts."""

from __future__ import annotations

from typing import Annotated

import typer

from medlens.cli.tables import print_models


def models(
    timm_pattern: Annotated[
        str | None,
        typer.Option(
            "--timm",
            help="Also list timm models matching this pattern, e.g. 'efficientnet*'.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List medlens' own models and the literature's architectures with their parameter
    counts; any timm model name works too (filter them with --timm).

    Example: medlens models --timm 'efficientnet*'
    """
    # the catalogue and the timm names are cached: listing them again imports no torch
    from medlens.models.catalogue import model_catalogue
    from medlens.models.names import timm_models

    print_models(model_catalogue(), timm_pattern, timm_models(timm_pattern) if timm_pattern else [])
