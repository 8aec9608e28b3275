"""Argument errors are refused while the command line is parsed: one clear line, exit code 2,
and neither torch nor timm imported (each case runs the CLI in a fresh Python process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medlens.cli import validate
from medlens.errors import MedlensError
from medlens.models import catalogue, names

HEAVY = ("torch", "timm", "torchvision", "monai", "medlens.api", "pandas")

# Runs each command line of argv[1] (a JSON list) in turn in this one process and prints, per
# command, its exit code, what it wrote to stderr and which heavy modules were imported by then
# (the first case that imports one is the culprit: the later ones inherit it).
_DRIVER = """
import contextlib, io, json, sys
from medlens.cli import main
for args in json.loads(sys.argv[1]):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(args)
    heavy = [m for m in json.loads(sys.argv[2]) if m in sys.modules]
    print(json.dumps({"args": args, "code": code, "err": err.getvalue(), "out": out.getvalue(),
                      "heavy": heavy}))
"""


def run_light(cases: list[list[str]]) -> list[dict]:
    """Run the command lines in one fresh interpreter; each one's code, stderr and imports."""
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(cases), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _fake_run(folder: Path, trained: bool = True) -> Path:
    """A run directory as far as the argument checks look: plan.yaml (and best weights)."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "plan.yaml").write_text("version: 1\n")
    if trained:
        (folder / "checkpoints" / "best.safetensors").write_bytes(b"")
    return folder


def _cases(tmp: Path) -> list[tuple[list, str]]:
    run = _fake_run(tmp / "run")
    untrained = _fake_run(tmp / "untrained", trained=False)
    notes = tmp / "notes.txt"
    notes.write_text("not data")
    empty = tmp / "empty"
    empty.mkdir()
    return [
        # --set: the form, the field, the value's type
        (
            ["train", "breastmnist", "--set", "train.epochs"],
            "--set 'train.epochs' is not KEY=VALUE",
        ),
        (
            ["train", "breastmnist", "--set", "loss.nme=focal"],
            "unknown plan field 'loss.nme' (fix: did you mean loss.name?)",
        ),
        (
            ["train", "breastmnist", "--set", "train.epochs=abc"],
            "plan with overrides: train.epochs: Input should be a valid integer",
        ),
        (
            ["plan", "breastmnist", "--set", "train.device=tpu"],
            "train.device: Input should be 'auto', 'cpu' or 'cuda'",
        ),
        (
            ["tune", "breastmnist", "--set", "augment.scale=[0.9"],
            "--set augment.scale='[0.9': cannot parse the value",
        ),
        (
            ["compare", "breastmnist", "--models", "small_cnn", "--set", "optim.lr=-1"],
            "optim.lr: Input should be greater than 0",
        ),
        # model names: --model, --models, --student, --set model.name
        (
            ["plan", "breastmnist", "--set", "model.name=resnet181", "-o", tmp / "plan.yaml"],
            "unknown model 'resnet181': neither a medlens model nor a timm model (fix: did you "
            "mean resnet18",
        ),
        (["train", "breastmnist", "--model", "resnet81"], "unknown model 'resnet81'"),
        (["compare", "breastmnist", "--models", "small_cnn,resnt50"], "unknown model 'resnt50'"),
        (["distill", run, "--student", "mobilenetv3_smal"], "unknown model 'mobilenetv3_smal'"),
        # run directories
        (["evaluate", "/nonexistent"], "/nonexistent does not exist: it is not a medlens run"),
        (["report", empty], f"{empty} is not a medlens run (no plan.yaml)"),
        (["predict", untrained, notes], f"{untrained}/checkpoints/best.safetensors is missing)"),
        (["explain", empty, notes], "is not a medlens run"),
        (["export", untrained], "best.safetensors is missing) (fix: train the run first"),
        (["serve", untrained], "best.safetensors is missing"),
        (["distill", tmp / "gone"], f"teacher {tmp / 'gone'} does not exist"),
        (["prune", untrained], f"run {untrained} has no trained weights"),
        (["train", "--resume"], "--resume needs --output naming the run to continue"),
        (["train", "--resume", "-o", empty], f"nothing to resume in {empty}"),
        (["train", "--plan", tmp / "nope.yaml"], f"plan file {tmp / 'nope.yaml'} does not exist"),
        # datasets
        (["data", "info", tmp / "missing.npz"], f"{tmp / 'missing.npz'} does not exist"),
        (["train", tmp / "missing.csv"], f"{tmp / 'missing.csv'} does not exist"),
        (["plan", notes], f"{notes} is not a format medlens reads"),
        (
            ["data", "info", "breastmnst"],
            "unknown dataset 'breastmnst' (fix: did you mean breastmnist",
        ),
        # choices
        (["train", "breastmnist", "--device", "tpu"], "unknown device 'tpu' (fix: use auto"),
        (
            ["tune", "breastmnist", "--pruner", "foo"],
            "unknown pruner 'foo' (fix: use one of median",
        ),
        (["explain", run, notes, "--method", "cam"], "unknown explanation method 'cam'"),
        (["export", run, "--format", "tflite"], "unknown export format 'tflite' (fix: use one of:"),
        (["prune", run, "--importance", "l3"], "unknown channel importance 'l3'"),
        (["prune", run, "--amount", "1.5"], "--amount must lie strictly between 0 and 1"),
    ]


@pytest.fixture
def cached_names(tmp_path) -> None:
    """The timm names in this test's cache directory ($MEDLENS_CACHE), as a first run leaves
    them: without them the first model check imports timm to fill the cache."""
    names.timm_models()


def test_argument_errors_are_refused_before_torch_is_imported(tmp_path, cached_names):
    cases = _cases(tmp_path)
    results = run_light([[str(a) for a in args] for args, _ in cases])
    assert len(results) == len(cases)
    for (args, expected), r in zip(cases, results, strict=True):
        message = " ".join(r["err"].split())
        assert r["code"] == 2, (args, message)
        assert message.startswith("error:") and expected in message, (args, message)
        assert message.count("error:") == 1 and "Traceback" not in message, (args, message)
        assert r["heavy"] == [], (args, r["heavy"])
    assert not (tmp_path / "plan.yaml").exists()  # plan with an unknown model writes nothing


def test_listings_import_no_torch(tmp_path, cached_names, monkeypatch):
    # the counts as an earlier `medlens models` left them (made up, to see they are read)
    monkeypatch.setattr(catalogue, "_count_all", lambda: dict.fromkeys(_listed(), 123_456_789))
    catalogue.parameter_counts()
    results = run_light([["data", "list", "--data-dir", str(tmp_path)], ["models"]])
    assert [r["code"] for r in results] == [0, 0]
    assert "organmnist3d" in results[0]["out"] and "breastmnist" in results[0]["out"]
    assert "123.5 M" in results[1]["out"] and "vit_base_r50_s16_224" in results[1]["out"]
    assert results[1]["heavy"] == []


def _listed() -> list[str]:
    return [*names.OWN_MODELS, *names.LITERATURE]


def test_python_dash_m_medlens_runs_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "medlens", "--version"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "medlens 0.1.0"


# ---- the early checks say what the stages would say ------------------------------------------
def _message(call) -> str:
    with pytest.raises(MedlensError) as info:
        call()
    return str(info.value)


def test_choices_are_the_stages():
    from medlens.analyse.saliency import METHODS
    from medlens.cli import compare, compress, deploy, predict
    from medlens.compress.prune import IMPORTANCE
    from medlens.data.labelled import MANIFEST_SUFFIXES
    from medlens.export.onnx_export import FORMATS
    from medlens.tune.study import PRUNERS

    assert predict.EXPLAIN_METHODS == METHODS
    assert deploy.EXPORT_FORMATS == FORMATS
    assert compress.IMPORTANCES == IMPORTANCE
    assert compare.PRUNERS == PRUNERS
    assert validate.MANIFEST_SUFFIXES == MANIFEST_SUFFIXES


def test_choice_messages_are_the_stages():
    from medlens.analyse.saliency import check_method
    from medlens.cli import compress, deploy, predict
    from medlens.compress.prune import check_options
    from medlens.device import resolve_device

    pairs = [
        (
            lambda: validate.one_of(predict.EXPLAIN_METHODS, "explanation method")("cam"),
            lambda: check_method("cam"),
        ),
        (
            lambda: validate.one_of(compress.IMPORTANCES, "channel importance")("l3"),
            lambda: check_options(0.3, 1, "l3"),
        ),
        (lambda: validate.prune_amount(1.5), lambda: check_options(1.5, 1, "l2")),
        (lambda: validate.device("tpu"), lambda: resolve_device("tpu")),
    ]
    for early, stage in pairs:
        assert _message(early) == _message(stage)
    export = validate.one_of(deploy.EXPORT_FORMATS, "export format", use="use one of:")
    assert (
        _message(lambda: export("tflite"))
        == "unknown export format 'tflite' (fix: use one of: onnx)"
    )


def test_dataset_messages_are_load_datasets(tmp_path):
    from medlens.data.sources import load_dataset

    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    for source in ("breastmnst", tmp_path / "missing.npz", tmp_path / "m.csv", notes):
        early = _message(lambda s=source: validate.dataset(str(s)))
        assert early == _message(lambda s=source: load_dataset(str(s), download=False))


@pytest.mark.parametrize(
    "item",
    ["loss.nme=focal", "train.epochs=abc", "train.epochs=0", "augment.scale=[0.9", "train.ema=2"],
)
def test_set_messages_are_apply_overrides(item, medmnist_dir):
    import medlens.api as ml
    from medlens.config import apply_overrides, parse_set_options

    recipe = ml.plan("breastmnist", data_dir=str(medmnist_dir), device="cpu")[0]
    early = _message(lambda: validate.set_options([item]))
    assert early == _message(lambda: apply_overrides(recipe, parse_set_options([item])))
