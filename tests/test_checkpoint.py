"""Safetensors weights and training state: exact round trips, clear errors on bad files."""

from __future__ import annotations

import pytest
import torch

from medlens.errors import CheckpointError
from medlens.models.checkpoint import load_weights, save_weights
from medlens.models.registry import create_model
from medlens.train.checkpoint import load_training_state, save_training_state


def _model(classes=2):
    return create_model("small_cnn", in_chans=1, num_classes=classes)


def test_weights_round_trip_exactly(tmp_path):
    a, b = _model(), _model()
    torch.nn.init.normal_(a.get_classifier().weight)
    save_weights(tmp_path / "w.safetensors", a, {"epoch": 3})
    assert load_weights(tmp_path / "w.safetensors", b) == {"epoch": 3}
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_training_state_restores_optimizer(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        loss = model(torch.randn(4, 1, 28, 28)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_training_state(tmp_path / "s.safetensors", model, opt, {"epoch": 1, "best": -1e9})
    model2 = _model()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    info = load_training_state(tmp_path / "s.safetensors", model2, opt2)
    assert info == {"epoch": 1, "best": -1e9}
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid, slots in s1["state"].items():
        for name, value in slots.items():
            assert torch.equal(value, s2["state"][pid][name])


def test_shape_mismatch_names_the_layers(tmp_path):
    save_weights(tmp_path / "w.safetensors", _model(2))
    with pytest.raises(CheckpointError, match=r"shapes differ: fc.weight \(2, 256\) vs \(5, 256\)"):
        load_weights(tmp_path / "w.safetensors", _model(5))


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage that is not a safetensors header")
    with pytest.raises(CheckpointError, match="bad.safetensors is not a readable safetensors"):
        load_weights(bad, _model())
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(tmp_path / "none.safetensors", _model())


def test_a_pickle_is_never_loaded(tmp_path):
    evil = tmp_path / "evil.safetensors"
    torch.save(_model().state_dict(), evil)  # a pickle under a safetensors name
    with pytest.raises(CheckpointError):
        load_weights(evil, _model())
