"""The public Python surface of medlens: every stage as a function. The CLI is a thin layer
over these; nothing inside medlens imports this module.

>>> import medlens.api as ml
>>> fp = ml.data_info("breastmnist", data_dir="../shared/data/medmnist")  # doctest: +SKIP
>>> result = ml.train("breastmnist", data_dir="data", epochs=20)  # doctest: +SKIP
>>> result.metrics["test"]["auc"]  # doctest: +SKIP
0.87
>>> ml.report(result.run_dir)  # doctest: +SKIP
PosixPath('runs/breastmnist-small_cnn-.../report.html')
"""

from __future__ import annotations

from medlens.compare.comparison import ComparisonResult, compare
from medlens.compress.distill import distill_run as distill
from medlens.compress.prune import prune_run as prune
from medlens.config import Plan, apply_overrides, load_plan, save_plan
from medlens.export.onnx_export import export_run as export
from medlens.models.catalogue import model_catalogue as models_table
from medlens.run import Run, check_plan_fits, load_plan_data
from medlens.serve import serve
from medlens.stages.analyse import analyse
from medlens.stages.evaluate import evaluate_run
from medlens.stages.explain import explain
from medlens.stages.external import evaluate_external
from medlens.stages.planning import data_info, describe, flag_overrides
from medlens.stages.planning import plan_dataset as plan
from medlens.stages.predict import predict
from medlens.stages.recalibrate import recalibrate
from medlens.stages.report import report
from medlens.stages.train import TrainResult, train
from medlens.tune.search import TuneResult, tune

__all__ = [
    "ComparisonResult",
    "Plan",
    "Run",
    "TrainResult",
    "TuneResult",
    "analyse",
    "apply_overrides",
    "check_plan_fits",
    "compare",
    "data_info",
    "describe",
    "distill",
    "evaluate_external",
    "evaluate_run",
    "explain",
    "export",
    "flag_overrides",
    "load_plan",
    "load_plan_data",
    "models_table",
    "plan",
    "predict",
    "prune",
    "recalibrate",
    "report",
    "save_plan",
    "serve",
    "train",
    "tune",
]
