"""``train.compile``: the training module goes through torch.compile (and only with the flag),
plain checkpoints, and a clear failure."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

import medlens.api as ml
from medlens.errors import ConfigError
from medlens.train import compiled
from tests.conftest import write_blob_npz


def _no_cpp_compiler() -> bool:
    return shutil.which("g++") is None and shutil.which("c++") is None


@pytest.mark.skipif(_no_cpp_compiler(), reason="inductor needs a C++ compiler (g++) on CPUs")
@pytest.mark.timeout(180)
def test_compiled_training_saves_plain_weights(tmp_path, monkeypatch):
    real_compile, compiled_modules = torch.compile, []

    def counting_compile(module, *args, **kwargs):  # the real compiler, counted
        compiled_modules.append(module)
        return real_compile(module, *args, **kwargs)

    monkeypatch.setattr(compiled.torch, "compile", counting_compile)
    npz = write_blob_npz(tmp_path / "blobs.npz", "multi-class", size=16, n=(96, 32, 32), k=2)
    run = tmp_path / "run"
    result = ml.train(
        str(npz),
        output=run,
        device="cpu",
        epochs=1,
        batch_size=32,
        model="small_cnn",
        overrides={"train.compile": "true", "evaluate.bootstrap": "0"},
    )
    assert result.plan.train.compile and len(compiled_modules) == 1
    weights = load_file(run / "checkpoints" / "best.safetensors")
    assert not any("_orig_mod" in key for key in weights)
    from medlens.models.build import build_model

    plain = build_model(result.plan, torch.device("cpu"))
    plain.load_state_dict(weights)  # strict: every key of the uncompiled model
    assert type(compiled_modules[0]) is type(plain)


def test_the_flag_compiles_the_module_being_trained_and_only_then(tmp_path, monkeypatch):
    """A spy in place of torch.compile: called once, with the very module the optimiser
    trains, whose compiled forward sees every training batch; never called with the flag off."""
    compiled_modules, batch_sizes = [], []

    def spy_compile(module, *args, **kwargs):
        compiled_modules.append(module)

        def forward(x):
            batch_sizes.append(len(x))
            return module(x)

        return forward

    monkeypatch.setattr(compiled.torch, "compile", spy_compile)
    npz = write_blob_npz(tmp_path / "blobs.npz", "multi-class", size=16, n=(64, 16, 16), k=2)

    def train(name, flag):
        return ml.train(
            str(npz),
            output=tmp_path / name,
            device="cpu",
            epochs=2,
            batch_size=32,
            model="small_cnn",
            overrides={"train.compile": flag, "evaluate.bootstrap": "0"},
        )

    train("on", "true")
    assert len(compiled_modules) == 1
    net = compiled_modules[0]
    last = load_file(tmp_path / "on" / "checkpoints" / "last.safetensors")
    trained = {k[len("model.") :]: v for k, v in last.items() if k.startswith("model.")}
    state = net.state_dict()
    assert trained.keys() == state.keys()
    for key, value in trained.items():  # the module compiled is the module trained
        assert torch.equal(state[key], value), key
    assert sum(batch_sizes) == 2 * 64  # two epochs of 64 images, all through the compiled forward
    compiled_modules.clear()
    train("off", "false")
    assert compiled_modules == []


def test_a_compiler_failure_becomes_a_config_error(monkeypatch):
    def broken_compile(module, *args, **kwargs):
        def run(x):
            raise RuntimeError("C++ compile error: g++ not found")

        return run

    monkeypatch.setattr(compiled.torch, "compile", broken_compile)
    forward = compiled.training_forward(torch.nn.Linear(4, 2), compile_it=True)
    with pytest.raises(ConfigError, match="torch.compile could not compile") as info:
        forward(torch.zeros(3, 4))
    assert "train.compile=false" in info.value.hint


def test_a_model_error_is_not_blamed_on_the_compiler(monkeypatch):
    def broken_compile(module, *args, **kwargs):
        return module  # "compiles" to the module itself, which fails on this input

    monkeypatch.setattr(compiled.torch, "compile", broken_compile)
    forward = compiled.training_forward(torch.nn.Linear(4, 2), compile_it=True)
    with pytest.raises(RuntimeError, match="shapes"):
        forward(torch.zeros(3, 5))  # wrong width: fails eagerly too


def test_compile_off_is_the_module_itself():
    net = torch.nn.Linear(4, 2)
    assert compiled.training_forward(net, compile_it=False) is net
