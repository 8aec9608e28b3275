"""benchmarks/medmnist_benchmark.py: the paper's baseline table and the markdown writer (no
training), and benchmark scripts that shadow no module."""

from __future__ import annotations

import pytest
from benchmarks import medmnist_baselines as paper
from benchmarks import medmnist_benchmark as bench

FLAGS_2D = {
    "pathmnist",
    "chestmnist",
    "dermamnist",
    "octmnist",
    "pneumoniamnist",
    "retinamnist",
    "breastmnist",
    "bloodmnist",
    "tissuemnist",
    "organamnist",
    "organcmnist",
    "organsmnist",
}
FLAGS_3D = {
    "organmnist3d",
    "nodulemnist3d",
    "fracturemnist3d",
    "adrenalmnist3d",
    "vesselmnist3d",
    "synapsemnist3d",
}
# cells that could not be sourced, as the module's docstring states them
GAPS_2D = {
    "breastmnist": {"ResNet-18 (224)"},
    "dermamnist": {"auto-sklearn", "AutoKeras", "Google AutoML Vision"},
    **{
        flag: {
            "ResNet-18 (224)",
            "ResNet-50 (28)",
            "auto-sklearn",
            "AutoKeras",
            "Google AutoML Vision",
        }
        for flag in ("retinamnist", "bloodmnist", "organcmnist", "organsmnist")
    },
}


def test_every_medmnist_dataset_has_every_column_or_a_stated_gap():
    assert set(paper.BASELINES_2D) == FLAGS_2D and set(paper.BASELINES_3D) == FLAGS_3D
    for flag, row in paper.BASELINES_2D.items():
        assert tuple(row) == paper.METHODS_2D, flag
        gaps = {m for m, s in row.items() if s is None}
        assert gaps == GAPS_2D.get(flag, set()), flag
        assert row["ResNet-18 (28)"] is not None and row["ResNet-50 (224)"] is not None
    for flag, row in paper.BASELINES_3D.items():
        assert tuple(row) == paper.METHODS_3D, flag
        assert {m for m, s in row.items() if s is not None} == {"ResNet-50 + 3D"}, flag
    for row in [*paper.BASELINES_2D.values(), *paper.BASELINES_3D.values()]:
        for score in filter(None, row.values()):
            assert 0.5 <= score.auc <= 1.0
            assert score.acc is None or 0.0 < score.acc <= 1.0
    # the one AUC without its ACC
    assert paper.BASELINES_2D["chestmnist"]["ResNet-50 (28)"].acc is None


def test_best_resnet_at_28_px():
    assert paper.best_resnet_28("pathmnist") == (0.990, 0.911, ["ResNet-18 (28)", "ResNet-50 (28)"])
    assert paper.best_resnet_28("bloodmnist") == (0.998, 0.958, ["ResNet-18 (28)"])
    assert paper.best_resnet_28("adrenalmnist3d") == (0.828, 0.745, ["ResNet-50 + 3D"])
    assert paper.best_resnet_28("cifar10") == (None, None, [])


def _fake(flag, acc, auc, seconds=75.0):
    return bench.Result(flag, acc, auc, seconds, "small_cnn", 40, 128)


def test_the_table_writer_produces_the_expected_markdown():
    results = [_fake("breastmnist", 0.80, 0.91), _fake("pneumoniamnist", 0.93, 0.982, 3725)]
    text = bench.report(
        results,
        hardware_line="no GPU; Test CPU, 2 cores",
        command="python benchmarks/medmnist_benchmark.py --data-dir d",
        today="2026-11-23",
        notes=["Skipped: x_64.npz: 64 px."],
    )
    lines = text.splitlines()
    assert lines[0] == "## MedMNIST benchmark (2026-11-23)"
    assert "Command: `python benchmarks/medmnist_benchmark.py --data-dir d`" in lines
    assert "Hardware: no GPU; Test CPU, 2 cores" in lines
    header = next(line for line in lines if line.startswith("| dataset"))
    assert header == (
        "| dataset | model, epochs, batch | medlens ACC | medlens AUC | time | "
        "ResNet-18 (28) ACC / AUC | ResNet-18 (224) ACC / AUC | ResNet-50 (28) ACC / AUC | "
        "ResNet-50 (224) ACC / AUC | auto-sklearn ACC / AUC | AutoKeras ACC / AUC | "
        "Google AutoML Vision ACC / AUC | beats best ResNet (28)? |"
    )
    assert (
        "| breastmnist | small_cnn, 40, 128 | 0.800 | 0.910 | 1 min 15 s | 0.863 / 0.901 | n/s | "
        "0.812 / 0.857 | 0.842 / 0.866 | 0.803 / 0.836 | 0.831 / 0.871 | 0.861 / 0.919 | no |"
    ) in lines
    assert (
        "| pneumoniamnist | small_cnn, 40, 128 | 0.930 | 0.982 | 1 h 2 min | 0.854 / 0.944 | "
        "0.864 / 0.956 | 0.854 / 0.948 | 0.884 / 0.962 | 0.855 / 0.942 | 0.878 / 0.947 | "
        "0.946 / 0.991 | yes |"
    ) in lines
    assert any(line.startswith("Total wall-clock: 1 h 3 min for 2 dataset(s)") for line in lines)
    assert lines[-1] == "Skipped: x_64.npz: 64 px."
    # every table row has as many cells as the header
    rows = [line for line in lines if line.startswith("| ")]
    assert len({row.count("|") for row in rows}) == 1


def test_3d_results_get_their_own_table_and_partial_comparisons_say_so():
    text = bench.report(
        [_fake("breastmnist", 0.9, 0.95), _fake("adrenalmnist3d", 0.80, 0.85)],
        hardware_line="cpu",
        command="c",
        today="d",
    )
    headers = [line for line in text.splitlines() if line.startswith("| dataset")]
    assert len(headers) == 2 and "ResNet-50 + 3D ACC / AUC" in headers[1]
    row3d = next(line for line in text.splitlines() if line.startswith("| adrenalmnist3d"))
    assert row3d.endswith("| 0.745 / 0.828 | n/s | n/s | n/s | yes (vs ResNet-50 + 3D) |")
    row2d = next(line for line in text.splitlines() if line.startswith("| breastmnist"))
    assert row2d.endswith("| yes |")


def test_find_datasets_skips_other_sizes_and_names_missing_ones(tmp_path):
    for name in ("breastmnist.npz", "adrenalmnist3d.npz", "adrenalmnist3d_64.npz", "notes.npz"):
        (tmp_path / name).write_bytes(b"")
    flags, skipped = bench.find_datasets(tmp_path)
    assert flags == ["adrenalmnist3d", "breastmnist"]
    assert any("adrenalmnist3d_64.npz: 64 px" in line for line in skipped)
    assert any("notes.npz" in line for line in skipped)
    flags, skipped = bench.find_datasets(tmp_path, 64, ["adrenalmnist3d", "pathmnist"])
    assert flags == ["adrenalmnist3d"]
    assert any(line.startswith("pathmnist: no pathmnist.npz at 64 px") for line in skipped)


@pytest.mark.parametrize(
    ("seconds", "text"), [(9.6, "10 s"), (95.2, "1 min 35 s"), (3725, "1 h 2 min")]
)
def test_duration(seconds, text):
    assert bench.duration(seconds) == text


def test_no_benchmark_script_shadows_a_module_it_could_import():
    """``python benchmarks/x.py`` puts benchmarks/ first on sys.path, so a script there named
    like an installed module hides it from every import (benchmarks/medmnist.py once hid the
    medmnist package)."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    folder = Path(bench.__file__).resolve().parent
    names = sorted(p.stem for p in folder.glob("*.py"))
    assert "medmnist_benchmark" in names and "medmnist" not in names
    shadowing = [
        name
        for name in names
        if name in sys.stdlib_module_names
        or (
            (spec := importlib.util.find_spec(name)) is not None
            and Path(spec.origin or "").resolve().parent != folder
        )
    ]
    assert shadowing == []
    code = f"import sys; sys.path.insert(0, {str(folder)!r}); import medmnist; print(medmnist.INFO)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "breastmnist" in out.stdout  # the package's metadata, not a script
