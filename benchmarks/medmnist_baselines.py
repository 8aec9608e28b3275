"""The MedMNIST v2 paper's test-split baselines, as (AUC, ACC), for
``benchmarks/medmnist_benchmark.py``.

Source: Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D
biomedical image classification", Scientific Data 10:41 (2023), doi:10.1038/s41597-022-01721-8,
its 2D (Table 3, 12 datasets) and 3D (6 datasets) benchmark tables; each cell is the mean of at
least three runs. The paper itself was not readable from the session that wrote this file, so
every number below was copied from public GitHub files that reproduce those table cells (found
by exact-string search), cross-checked against a second copy where there was one:

- PathMNIST, OCTMNIST, TissueMNIST, OrganAMNIST: full rows (all seven methods) from a project
  plan quoting "Baselines oficiales de MedMNIST v2" for those four datasets; PathMNIST again
  in a PathMNIST project README ("Official Benchmark Targets").
- PneumoniaMNIST: full row from a PneumoniaMNIST README's "Benchmarking" table.
- BreastMNIST: ResNet-18 (28), ResNet-50 (28), auto-sklearn, AutoKeras, Google AutoML Vision
  from a statistics script's reference dict; ResNet-18 (28) also from a verification record
  that recomputes it from the authors' released predictions (AUC 0.901, ACC 0.863).
- ChestMNIST: ResNet-18/50 (224), auto-sklearn, AutoKeras, Google AutoML Vision from a dataset
  note and a ChestMNIST README; ResNet-50 (28) AUC only (its ACC was not found).
- ResNet-18 (28) of all twelve 2D datasets and all four ResNets of DermaMNIST: a reference
  module citing "MedMNIST v2, Yang et al. 2023, Table 3".
- ResNet-50 (224) of all twelve 2D datasets and ResNet-50 + 3D of all six 3D datasets: a
  benchmark-references file taken from medmnist.com/v2 (retrieved 2026-09-21).

Cells that could not be sourced are None ("not sourced"), never filled in from memory:
ResNet-18 (224) of BreastMNIST, RetinaMNIST, BloodMNIST, OrganCMNIST and OrganSMNIST; ResNet-50
(28) of those five (ChestMNIST: its ACC); the three AutoML methods of DermaMNIST, RetinaMNIST,
BloodMNIST, OrganCMNIST and OrganSMNIST; every 3D method other than ResNet-50 + 3D.
"""

from __future__ import annotations

from typing import NamedTuple


class Score(NamedTuple):
    auc: float
    acc: float | None  # None: the AUC was sourced but not the ACC


METHODS_2D = (
    "ResNet-18 (28)",
    "ResNet-18 (224)",
    "ResNet-50 (28)",
    "ResNet-50 (224)",
    "auto-sklearn",
    "AutoKeras",
    "Google AutoML Vision",
)
METHODS_3D = (
    "ResNet-18 + 2.5D",
    "ResNet-18 + 3D",
    "ResNet-18 + ACS",
    "ResNet-50 + 2.5D",
    "ResNet-50 + 3D",
    "ResNet-50 + ACS",
    "auto-sklearn",
    "AutoKeras",
)
# the ResNets trained at MedMNIST's 28 px (28^3 for 3D): what "beats the paper" compares with
RESNETS_28 = {
    2: ("ResNet-18 (28)", "ResNet-50 (28)"),
    3: tuple(m for m in METHODS_3D if m.startswith("ResNet")),
}


def _row2d(*cells: tuple[float, float | None] | None) -> dict[str, Score | None]:
    return {m: Score(*c) if c else None for m, c in zip(METHODS_2D, cells, strict=True)}


def _row3d(resnet50_3d: tuple[float, float]) -> dict[str, Score | None]:
    return {m: Score(*resnet50_3d) if m == "ResNet-50 + 3D" else None for m in METHODS_3D}


# (AUC, ACC) in the order of METHODS_2D: R18 (28), R18 (224), R50 (28), R50 (224),
# auto-sklearn, AutoKeras, Google AutoML Vision.
BASELINES_2D: dict[str, dict[str, Score | None]] = {
    "pathmnist": _row2d(
        (0.983, 0.907),
        (0.989, 0.909),
        (0.990, 0.911),
        (0.989, 0.892),
        (0.934, 0.716),
        (0.959, 0.834),
        (0.944, 0.728),
    ),
    "chestmnist": _row2d(
        (0.768, 0.947),
        (0.773, 0.947),
        (0.769, None),
        (0.773, 0.948),
        (0.649, 0.779),
        (0.742, 0.937),
        (0.778, 0.948),
    ),
    "dermamnist": _row2d(
        (0.917, 0.735), (0.920, 0.754), (0.913, 0.735), (0.912, 0.731), None, None, None
    ),
    "octmnist": _row2d(
        (0.943, 0.743),
        (0.958, 0.763),
        (0.952, 0.762),
        (0.958, 0.776),
        (0.887, 0.601),
        (0.955, 0.763),
        (0.963, 0.771),
    ),
    "pneumoniamnist": _row2d(
        (0.944, 0.854),
        (0.956, 0.864),
        (0.948, 0.854),
        (0.962, 0.884),
        (0.942, 0.855),
        (0.947, 0.878),
        (0.991, 0.946),
    ),
    "retinamnist": _row2d((0.717, 0.524), None, None, (0.716, 0.511), None, None, None),
    "breastmnist": _row2d(
        (0.901, 0.863),
        None,
        (0.857, 0.812),
        (0.866, 0.842),
        (0.836, 0.803),
        (0.871, 0.831),
        (0.919, 0.861),
    ),
    "bloodmnist": _row2d((0.998, 0.958), None, None, (0.997, 0.950), None, None, None),
    "tissuemnist": _row2d(
        (0.930, 0.676),
        (0.933, 0.681),
        (0.931, 0.680),
        (0.932, 0.680),
        (0.828, 0.532),
        (0.941, 0.703),
        (0.924, 0.673),
    ),
    "organamnist": _row2d(
        (0.997, 0.935),
        (0.998, 0.951),
        (0.997, 0.935),
        (0.998, 0.947),
        (0.963, 0.762),
        (0.994, 0.905),
        (0.990, 0.886),
    ),
    "organcmnist": _row2d((0.992, 0.900), None, None, (0.993, 0.911), None, None, None),
    "organsmnist": _row2d((0.972, 0.782), None, None, (0.975, 0.785), None, None, None),
}

BASELINES_3D: dict[str, dict[str, Score | None]] = {
    "organmnist3d": _row3d((0.994, 0.883)),
    "nodulemnist3d": _row3d((0.875, 0.847)),
    "fracturemnist3d": _row3d((0.725, 0.494)),
    "adrenalmnist3d": _row3d((0.828, 0.745)),
    "vesselmnist3d": _row3d((0.907, 0.918)),
    "synapsemnist3d": _row3d((0.851, 0.795)),
}


def baselines(flag: str) -> dict[str, Score | None]:
    """The paper's row for a MedMNIST flag (``breastmnist``, ``adrenalmnist3d``); {} if none."""
    return BASELINES_2D.get(flag) or BASELINES_3D.get(flag) or {}


def methods(flag: str) -> tuple[str, ...]:
    return METHODS_3D if flag in BASELINES_3D else METHODS_2D


def best_resnet_28(flag: str) -> tuple[float | None, float | None, list[str]]:
    """(best AUC, best ACC, ResNets compared) among the paper's ResNets at 28 px, per metric."""
    row = baselines(flag)
    dims = 3 if flag in BASELINES_3D else 2
    found = [(m, row[m]) for m in RESNETS_28[dims] if row.get(m) is not None]
    aucs = [s.auc for _, s in found]
    accs = [s.acc for _, s in found if s.acc is not None]
    return (max(aucs) if aucs else None, max(accs) if accs else None, [m for m, _ in found])
