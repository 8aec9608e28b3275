"""``medlens compare``: train every (model, seed), then rank, measure and test the models."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlens.compare.members import Member, MemberResult
from medlens.config import Plan, positive_index
from medlens.errors import ConfigError, ModelError
from medlens.progress import Reporter, SilentReporter
from medlens.run import check_plan_fits, plan_differences, write_json
from medlens.stages.ensemble import check_ensemble_plan
from medlens.stages.planning import FLAG_FIELDS, flag_overrides, plan_dataset


@dataclass
class ComparisonResult:
    """The comparison folder, its leaderboard rows (best first) and the paired tests."""

    folder: Path
    rows: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    info: dict[str, Any]
    statuses: dict[str, str] = field(default_factory=dict)

    @property
    def best(self) -> str:
        return self.rows[0]["model"]


def parse_models(models: str | list[str]) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]``; empty or repeated names are errors."""
    items = models.split(",") if isinstance(models, str) else list(models)
    names = [m.strip() for m in items if m.strip()]
    if not names:
        raise ConfigError("--models names no model", hint="e.g. --models resnet18,small_cnn")
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:
        raise ConfigError(f"--models names {', '.join(repeated)} twice", hint="name each once")
    return names


def _check_models_take_data(models: list[str], team: list[Member], inputs) -> dict[str, Any]:
    """Parameters and GFLOPs per model; one ModelError listing every model that cannot
    take the data, raised before anything is trained."""
    from medlens.compare.cost import check_model_takes

    found, failures = {}, []
    for model in models:
        plan = next(m.plan for m in team if m.model == model)
        try:
            found[model] = check_model_takes(plan, inputs)
        except ModelError as exc:
            failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        hint = (failures[0].hint or "").replace("drop it", "drop them")
        raise ModelError("; ".join(e.message for e in failures), hint=hint)
    return found


def _cost(
    folder: Path,
    models: list[str],
    team: list[Member],
    inputs,
    static: dict,
    seconds: float,
    threads: int | None,
) -> dict[str, dict[str, Any]]:
    """cost.json: measured once per model on this CPU and input shape, then reused."""
    from medlens.compare.cost import cpu_speed
    from medlens.export.speed import hardware

    path = folder / "cost.json"
    hw = hardware()
    n_threads = threads or hw["torch_threads"]
    key = {"cpu": hw["cpu"], "threads": n_threads, "input": list(inputs.shape[1:])}
    cached = json.loads(path.read_text()) if path.is_file() else {}
    saved = cached.get("models", {}) if cached.get("key") == key else {}
    for model in models:
        if model not in saved:
            plan = next(m.plan for m in team if m.model == model)
            saved[model] = {**static[model], **cpu_speed(plan, inputs, seconds, n_threads)}
    write_json(path, {"key": key, "hardware": hw, "models": saved})
    return {m: saved[m] for m in models}


def _paired_tests(
    rows: list[dict[str, Any]],
    results: list[MemberResult],
    plan: Plan,
    ds,
    n_boot: int,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The best model (by mean test AUC, or cross-validated AUC with --folds) against each
    other one, on seed-averaged test probabilities (with --folds: out-of-fold probabilities of
    train+val, so that choosing a model never looks at the test split); also each model's AUC
    of those averaged probabilities."""
    from medlens.compare.paired import paired_auc_test
    from medlens.data.folds import pooled
    from medlens.evaluate.metrics import medmnist_auc

    task = plan.data.task
    oof = results[0].oof_probs is not None
    test = pooled(ds) if oof else ds.splits["test"]
    y = np.asarray(test.labels)
    probs = {
        r["model"]: np.mean(
            [m.oof_probs if oof else m.test_probs for m in results if m.model == r["model"]],
            axis=0,
        )
        for r in rows
    }
    seed_avg = {m: float(medmnist_auc(y, p, task)) for m, p in probs.items()}
    best = rows[0]["model"]
    paired = []
    for row in rows[1:]:
        test_result = paired_auc_test(
            y,
            probs[best],
            probs[row["model"]],
            task,
            positive=positive_index(plan),
            groups=test.patients,
            n_boot=n_boot,
            ci=plan.evaluate.ci,
        )
        split = "out-of-fold" if oof else "test"
        paired.append({"model": row["model"], "best": best, "split": split, **test_result})
    return paired, seed_avg


def run_comparison(
    source: str,
    *,
    models: str | list[str],
    seeds: int = 3,
    folds: int | None = None,
    output: str | Path | None = None,
    data_dir: str | None = None,
    size: int | None = None,
    overrides: dict[str, Any] | None = None,
    download: bool = True,
    source_fields: dict[str, Any] | None = None,
    reporter: Reporter | None = None,
    latency_seconds: float = 1.0,
    latency_threads: int | None = None,
    n_boot: int = 2000,
) -> ComparisonResult:
    """Train ``models`` x ``seeds`` runs on one plan and data, and write the leaderboard.

    Every problem with the models (unknown names, a model that cannot take the data's image
    size) is raised before any training. Seeds are ``train.seed`` + 0, 1, ... of the plan.
    """
    from medlens.compare.cost import model_inputs
    from medlens.compare.leaderboard import add_paired, leaderboard_rows, markdown, write_csv
    from medlens.compare.members import (
        MEMBER_FIELDS,
        check_same_plan,
        members,
        read_member,
        run_name,
        train_member,
    )
    from medlens.compare.plot import plot_leaderboard
    from medlens.config import load_plan, save_plan
    from medlens.export.speed import hardware
    from medlens.models.registry import model_spatial_dims

    reporter = reporter or SilentReporter()
    names = parse_models(models)
    if folds is not None:  # every candidate a k-fold cross-validation: a cross-validated score
        if folds < 2:
            raise ConfigError(f"--folds {folds}: cross-validation needs at least 2")
        overrides = {**(overrides or {}), "train.folds": folds}
    if not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}", hint="e.g. --seeds 3")
    for name in names:
        model_spatial_dims(name)  # unknown names fail here, with close names suggested
    recipe, fp, ds = plan_dataset(
        source,
        data_dir=data_dir,
        size=size,
        overrides=overrides,
        download=download,
        source_fields=source_fields,
        reporter=reporter,
    )
    folder = Path(output) if output else Path("runs") / f"compare-{Path(ds.name).stem}"
    base_file = folder / "base_plan.yaml"
    if base_file.is_file():
        wrong = plan_differences(load_plan(base_file), recipe, ignore=MEMBER_FIELDS)
        if wrong:
            raise ConfigError(
                f"{folder} holds a comparison with another plan ({'; '.join(wrong[:4])})",
                hint="rerun with the options it was started with, or choose another --output",
            )
    seed_list = [recipe.train.seed + i for i in range(seeds)]
    team = members(recipe, names, seed_list, folder / "runs")
    if folds is not None:
        check_ensemble_plan(recipe, ds)  # enough patients per class for the folds
    for member in team:
        check_plan_fits(member.plan, ds)
        check_same_plan(member)
    inputs = model_inputs(recipe, ds.splits["test"].images[:64])
    static = _check_models_take_data(names, team, inputs)

    folder.mkdir(parents=True, exist_ok=True)
    save_plan(recipe, base_file)
    statuses = {}
    for i, member in enumerate(team, start=1):
        reporter.message(f"[{i}/{len(team)}] {member.model}, seed {member.seed}: {member.run.root}")
        statuses[run_name(member.model, member.seed)] = status = train_member(
            member, fp, ds, reporter
        )
        if status == "done":
            reporter.message("  already trained and evaluated: kept")
    results = [read_member(m, ds) for m in team]
    reporter.message("measuring parameters, GFLOPs and CPU latency")
    cost = _cost(folder, names, team, inputs, static, latency_seconds, latency_threads)
    rows = leaderboard_rows(results, cost, recipe.data.task)
    paired, seed_avg = _paired_tests(rows, results, recipe, ds, n_boot)
    add_paired(rows, paired, seed_avg)

    hw = {**hardware(), "latency_threads": cost[names[0]]["threads"]}
    positive = results[0].test.get("positive_class")
    info = {
        "dataset": ds.name,
        "task": recipe.data.task,
        "models": names,
        "seeds": seed_list,
        "folds": folds,
        "epochs": recipe.train.epochs,
        "device": recipe.train.device,
        "positive_class": positive,
        "best": rows[0]["model"],
        "hardware": hw,
    }
    write_json(
        folder / "comparison.json",
        {**info, "runs": statuses, "leaderboard": rows, "paired_tests": paired},
    )
    write_csv(rows, folder / "leaderboard.csv")
    (folder / "leaderboard.md").write_text(markdown(info, rows, paired))
    plot_leaderboard(
        rows, folder / "leaderboard.png", f"{ds.name}: {len(seed_list)} seeds, test split"
    )
    return ComparisonResult(folder=folder, rows=rows, paired=paired, info=info, statuses=statuses)


def compare(source: str, *, overrides: dict[str, Any] | None = None, **options: Any):
    """Train models x seeds runs with one plan on the same data and splits, and write a
    leaderboard (test metrics, parameters, GFLOPs, training time, CPU latency) with paired AUC
    tests of the best model against each other one.

    ``options``: those of :func:`run_comparison` (``models``, ``seeds``, ``output``,
    ``data_dir``, ...) and the CLI flags epochs, batch_size, lr, seed (the first seed), device.
    Runs already finished in ``output`` are kept, not retrained.

    >>> r = compare("breastmnist", models="small_cnn,resnet18", seeds=3)  # doctest: +SKIP
    >>> r.rows[0]["model"], r.rows[0]["auc_mean"], r.paired[0]["p_value"]  # doctest: +SKIP
    """
    # seeds and folds are compare's own: runs per model, and folds per run
    own = {"seeds", "folds"}
    flags = {k: options.pop(k) for k in list(options) if k in FLAG_FIELDS and k not in own}
    overrides = {**(overrides or {}), **flag_overrides(**flags)}
    if "model.name" in overrides:
        raise ConfigError("compare sets model.name itself", hint="name the models with --models")
    if not isinstance(options.get("models", ""), str):
        options["models"] = list(options["models"])
    return run_comparison(source, overrides=overrides, **options)
