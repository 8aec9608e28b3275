"""``medlens report``: make sure the run is evaluated and analysed, then render its report.

The rendering (:mod:`medlens.report`) only reads files; this stage runs ``evaluate`` when the
run has no evaluation yet and ``analyse`` for analyses that are missing or stale.

>>> report("runs/breastmnist-small_cnn")  # doctest: +SKIP
PosixPath('runs/breastmnist-small_cnn/report.html')
"""

from __future__ import annotations

from pathlib import Path

from medlens.progress import Reporter
from medlens.report.build import build_report
from medlens.run import Run
from medlens.stages.analyse import analyse
from medlens.stages.evaluate import as_run, evaluate_run


def report(
    run_dir: str | Path | Run,
    *,
    output: str | Path | None = None,
    robustness: bool = True,
    uncertainty: bool = True,
    gallery: int = 6,
    refresh: bool = False,
    data_dir: str | None = None,
    reporter: Reporter | None = None,
) -> Path:
    """Write ``report.html`` and ``model_card.md`` (into the run, or beside ``output``).

    ``refresh``: evaluate and analyse again instead of reusing saved results.
    """
    run = as_run(run_dir)
    evaluated = all(f.is_file() for f in (run.metrics_file, run.trust_file, run.predictions_file))
    if refresh or not evaluated:
        evaluate_run(run, data_dir=data_dir, download=False)
    analyse(
        run,
        robustness=robustness,
        uncertainty=uncertainty,
        gallery=gallery,
        refresh=refresh,
        data_dir=data_dir,
        download=False,
        reporter=reporter,
    )
    return build_report(
        run, output=output, robustness=robustness, uncertainty=uncertainty, gallery=gallery > 0
    )
