"""The Optuna study: where it is stored, how trials are sampled and pruned."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from medlens.errors import ConfigError
from medlens.tune import require_optuna

PRUNERS = ("median", "hyperband", "none")
# a trial whose process died stops beating; after this long another worker marks it FAIL
HEARTBEAT_S, GRACE_S = 60, 180


def default_storage(folder: Path) -> str:
    """``sqlite:///<folder>/study.db`` (absolute, so the URL works from any directory)."""
    return f"sqlite:///{(folder / 'study.db').resolve()}"


def masked(url: str) -> str:
    """The URL with any password replaced by ``***`` (it is printed in errors)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def make_pruner(name: str, epochs: int) -> Any:
    """Median pruning (after 3 finished trials and the first quarter of the epochs),
    Hyperband over 1 to ``epochs`` epochs, or none."""
    optuna = require_optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, epochs // 4))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(epochs, 1), reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {name!r}", hint=f"use one of {', '.join(PRUNERS)}")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def open_storage(url: str) -> Any:
    """An Optuna RDB storage with heartbeats, or a ConfigError that names the URL."""
    optuna = require_optuna()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
            )
    except Exception as exc:  # sqlalchemy parse, driver and connection errors alike
        raise ConfigError(
            f"cannot open the study storage {masked(url)!r}: {_reason(exc)}",
            hint="give a database URL such as sqlite:///path/study.db or "
            "postgresql://user@host/db (with its driver installed)",
        ) from exc


def open_study(storage: Any, name: str, seed: int, pruner: Any) -> Any:
    """Create the study, or load it when it exists (so several machines share one)."""
    optuna = require_optuna()
    try:
        return optuna.create_study(
            storage=storage,
            study_name=name,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=pruner,
            load_if_exists=True,
        )
    except Exception as exc:
        raise ConfigError(
            f"cannot create or load the study {name!r}: {_reason(exc)}",
            hint="use another --study-name (a study maximises val AUC)",
        ) from exc
