"""Tables that set models side by side: compare's leaderboard, tune's trials, and a compressed
model against the one it came from."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from medlens.cli.tables import console, fmt, wide_console


def print_leaderboard(result: Any) -> None:
    """Two tables (test metrics, then cost) and the paired tests; the files hold the rest."""
    from medlens.compare.leaderboard import (
        METRICS,
        TITLES,
        mean_std,
        method_text,
        p_text,
        paired_text,
    )

    info = result.info
    out = wide_console()
    at = f"at {info['positive_class']}" if info["positive_class"] else "macro-averaged"
    metrics = Table(
        "model",
        *(TITLES[m] for m in METRICS),
        title=f"{info['dataset']}: test metrics, mean ± std over {len(info['seeds'])} seed(s), "
        f"{info['epochs']} epochs",
        caption=f"F1, sensitivity and specificity {at}",
    )
    cost = Table(
        "model",
        "parameters",
        "GFLOPs",
        "train s",
        "ms/image b1",
        "images/s b64",
        title=f"cost: CPU fp32, {info['hardware']['latency_threads']} thread(s); training "
        "time in training steps",
    )
    for r in result.rows:
        metrics.add_row(r["model"], *(mean_std(r, m, 3) for m in METRICS))
        cost.add_row(
            r["model"],
            f"{r['parameters'] / 1e6:.2f} M",
            f"{r['gflops']:.3f}",
            f"{r['train_s_mean']:.1f}",
            f"{r['latency_ms']:.2f}",
            f"{r['images_per_s']:.0f}",
        )
    out.print(metrics)
    out.print(cost)
    if result.paired:
        best = result.best
        paired = Table(
            "model",
            "AUC",
            f"AUC {best}",
            f"difference [{result.paired[0]['ci']:.0%} CI]",
            "p-value",
            "test",
            title=f"paired tests: {best} (best mean test AUC) against each model, on "
            "seed-averaged test probabilities",
        )
        for p in result.paired:
            paired.add_row(
                p["model"],
                f"{p['auc_b']:.4f}",
                f"{p['auc_a']:.4f}",
                paired_text(p),
                p_text(p["p_value"]),
                method_text(p["method"]),
            )
        out.print(paired)
    console.print(f"leaderboard.md, leaderboard.csv and leaderboard.png written to {result.folder}")


def print_tuning(result: Any) -> None:
    """Every trial with its state, val AUC and parameters; then the best plan as YAML."""
    from medlens.config import dump_plan

    params = sorted({k for t in result.trials for k in t if k.startswith("param_")})
    table = Table(
        "trial",
        "state",
        "val AUC",
        "s",
        *(p.removeprefix("param_") for p in params),
        title=f"study {result.study_name} ({result.storage})",
        caption="val AUC: best epoch; of a pruned trial (@epoch), the last before it stopped",
    )
    for t in result.trials:
        table.add_row(
            str(t["number"]),
            t["state"] + (f" @{t['pruned_at_epoch']}" if t.get("pruned_at_epoch") else ""),
            fmt(t["val_auc"]),
            "-" if t["duration_s"] is None else f"{t['duration_s']:.0f}",
            *(_param_text(t.get(p)) for p in params),
        )
    wide_console().print(table)
    counts = ", ".join(f"{n} {s.lower()}" for s, n in result.states.items())
    console.print(
        f"{len(result.trials)} trials ({counts}); best: trial {result.best_number}, "
        f"val AUC {result.best_value:.4f}"
    )
    # soft_wrap: a YAML line folded at the console's width would no longer be YAML
    console.print(dump_plan(result.best_plan), highlight=False, markup=False, soft_wrap=True)
    console.print(
        f"best plan written to {result.best_plan_file}; trials in "
        f"{result.folder / 'trials.csv'}\ntrain it with: medlens train --plan "
        f"{result.best_plan_file}",
        soft_wrap=True,
    )


def _param_text(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def print_compression(record: dict[str, Any], *rows: tuple[str, dict[str, Any]]) -> None:
    """Parameters, MACs, test AUC/ACC and CPU speed of the models, then the AUC change."""
    table = Table(
        "model",
        "params",
        "MACs",
        "test AUC",
        "test ACC",
        "ms b1",
        "img/s b64",
        title=f"{record['kind']} on {record['dataset']}",
        caption="CPU fp32: ms per image at batch 1, images/s at batch 64",
    )
    for label, m in rows:
        cpu = m.get("cpu") or {}
        table.add_row(
            f"{m['model']}\n[dim]{label}[/dim]",
            f"{m['parameters'] / 1e6:.2f} M",
            f"{m['macs'] / 1e6:.1f} M",
            fmt(m["test"]["auc"]),
            fmt(m["test"]["acc"]),
            f"{cpu['1']['latency_ms']:.1f}" if "1" in cpu else "-",
            f"{cpu['64']['images_per_s']:.0f}" if "64" in cpu else "-",
        )
    console.print(table)
    cmp = record["comparison"]
    speed = cmp.get("cpu_speedup", {}).get("64")
    console.print(
        f"test AUC difference {cmp['test_auc_difference']:+.4f} (compressed - original); "
        f"{cmp['parameter_ratio']:.3f}x the parameters"
        + (f", {speed:.2f}x the CPU images/s" if speed else "")
    )
