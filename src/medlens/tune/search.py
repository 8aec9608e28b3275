"""``medlens tune``: plan once, then let Optuna train trial after trial on the same data."""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlens.config import Plan
from medlens.errors import ConfigError, TrainingError
from medlens.progress import Reporter, SilentReporter
from medlens.stages.planning import FLAG_FIELDS, flag_overrides, plan_dataset
from medlens.tune import require_optuna

DEFAULT_TRIALS = 20


@dataclass
class TuneResult:
    """Where the search wrote, the study, and its best trial and plan."""

    folder: Path
    study_name: str
    storage: str  # with any password masked
    best_number: int
    best_value: float
    best_params: dict[str, Any]
    best_plan: Plan
    best_plan_file: Path
    trials: list[dict[str, Any]]

    @property
    def states(self) -> dict[str, int]:
        return dict(Counter(t["state"] for t in self.trials))


def run_search(
    source: str,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    output: str | Path | None = None,
    data_dir: str | None = None,
    size: int | None = None,
    overrides: dict[str, Any] | None = None,
    download: bool = True,
    source_fields: dict[str, Any] | None = None,
    pruner: Any = "median",
    reporter: Reporter | None = None,
) -> TuneResult:
    """Search hyperparameters (see :mod:`medlens.tune.space`) by val AUC, and write the best
    plan.

    ``trials``: trials this call runs (20 when neither it nor ``timeout`` is given); ``timeout``:
    seconds after which no new trial starts. ``storage``: any SQLAlchemy database URL (default
    ``sqlite:///<output>/study.db``); workers given the same URL and study name share one
    study. ``pruner``: "median", "hyperband", "none" or an Optuna pruner. The sampler is TPE,
    seeded with the plan's train.seed.
    """
    from medlens.config import save_plan
    from medlens.tune.objective import Objective
    from medlens.tune.records import best_plan, write_trials_csv
    from medlens.tune.space import baseline_params
    from medlens.tune.study import default_storage, make_pruner, masked, open_storage, open_study

    require_optuna()
    reporter = reporter or SilentReporter()
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")
    if trials is None and timeout is None:
        trials = DEFAULT_TRIALS
    if isinstance(pruner, str):
        make_pruner(pruner, 1)  # an unknown name fails before the data is loaded
    url = storage or None
    if url is not None:
        rdb = open_storage(url)  # a bad URL fails before the data is loaded, too
    overrides = dict(overrides or {})
    recipe, fp, ds = plan_dataset(
        source,
        data_dir=data_dir,
        size=size,
        overrides=overrides,
        download=download,
        source_fields=source_fields,
        reporter=reporter,
    )
    stem = Path(ds.name).stem
    folder = Path(output) if output else Path("runs") / f"tune-{stem}"
    folder.mkdir(parents=True, exist_ok=True)
    if url is None:
        url = default_storage(folder)
        rdb = open_storage(url)
    name = study_name or f"medlens-{stem}"
    prune = make_pruner(pruner, recipe.train.epochs) if isinstance(pruner, str) else pruner
    study = open_study(rdb, name, recipe.train.seed, prune)
    known = study.user_attrs.get("dataset")
    if known is not None and known != ds.name:
        raise ConfigError(
            f"study {name!r} in {masked(url)} tunes {known}, not {ds.name}",
            hint="use another --study-name or --storage",
        )
    if known is None:
        study.set_user_attr("dataset", ds.name)
    fixed = set(overrides)
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial(baseline_params(recipe, fixed), skip_if_exists=True)
    save_plan(recipe, folder / "base_plan.yaml")
    trials_csv = folder / "trials.csv"

    def after_trial(study: Any, trial: Any) -> None:
        write_trials_csv(study, trials_csv)
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        best = ""
        with contextlib.suppress(ValueError):  # no finished trial yet
            best = f"; best so far: trial {study.best_trial.number} ({study.best_value:.4f})"
        reporter.message(f"trial {trial.number} {trial.state.name}, val AUC {value}{best}")

    objective = Objective(recipe, fp, ds, folder / "trials", fixed, reporter)
    study.optimize(
        objective,
        n_trials=trials,
        timeout=timeout,
        catch=(TrainingError,),  # a diverging trial fails; the search goes on
        callbacks=[after_trial],
        gc_after_trial=True,
    )
    rows = write_trials_csv(study, trials_csv)
    plan_best, trial = best_plan(study)
    plan_file = folder / "best_plan.yaml"
    save_plan(plan_best, plan_file)
    return TuneResult(
        folder=folder,
        study_name=name,
        storage=masked(url),
        best_number=trial.number,
        best_value=float(trial.value),
        best_params=dict(trial.params),
        best_plan=plan_best,
        best_plan_file=plan_file,
        trials=rows,
    )


def tune(source: str, *, overrides: dict[str, Any] | None = None, **options: Any) -> TuneResult:
    """Hyperparameter search with Optuna (TPE, pruned on per-epoch val AUC), scored on val AUC
    only; writes trials.csv, the study (``sqlite:///<output>/study.db`` unless ``storage``) and
    best_plan.yaml, which ``train(plan_file=...)`` takes. Needs ``pip install "medlens[tune]"``.

    ``options``: those of :func:`run_search` (``trials``, ``timeout``, ``storage``,
    ``study_name``, ``output``, ``pruner``, ...) and the CLI flags epochs, batch_size, lr, seed
    (training and sampler), device, model; a field fixed this way or in ``overrides`` is left
    out of the search (:mod:`medlens.tune.space`).

    >>> r = tune("breastmnist", trials=20, epochs=10)  # doctest: +SKIP
    >>> r.best_value, r.best_plan_file  # doctest: +SKIP
    """
    flags = {k: options.pop(k) for k in list(options) if k in FLAG_FIELDS}
    return run_search(source, overrides={**(overrides or {}), **flag_overrides(**flags)}, **options)
