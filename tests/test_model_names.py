"""Model names without torch: the static table, timm's cached names, and the parameter counts
``medlens models`` lists (cached too)."""

from __future__ import annotations

import json
from importlib import metadata

import pytest
import timm

from medlens.errors import ModelError
from medlens.models import catalogue, names, registry


def _write_timm_cache(version: str, models: list[str]) -> None:
    path = names.cache_dir() / names.TIMM_NAMES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    key = {"timm": version}
    path.write_text(json.dumps({"key": key, "value": {"models": models, "deprecated": []}}))


def test_a_cached_timm_list_is_read_not_timm():
    _write_timm_cache(metadata.version("timm"), ["fakenet_9000", "resnet18"])
    names.check_model_name("fakenet_9000")  # only the cache file knows this name
    assert names.timm_models("fake*") == ["fakenet_9000"]
    with pytest.raises(ModelError, match="unknown model 'resnet50'"):
        names.check_model_name("resnet50")  # a real timm model, absent from the cache


def test_a_cache_of_another_timm_version_is_filled_again():
    _write_timm_cache("0.0.1", ["fakenet_9000"])
    assert names.timm_name("fakenet_9000") is None
    assert names.timm_name("resnet50") == "resnet50"
    stored = json.loads((names.cache_dir() / names.TIMM_NAMES_FILE).read_text())
    assert stored["key"] == {"timm": timm.__version__}
    assert stored["value"]["models"] == timm.list_models()


def test_an_unreadable_cache_is_filled_again():
    path = names.cache_dir() / names.TIMM_NAMES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert names.timm_name("resnet18") == "resnet18"
    assert json.loads(path.read_text())["key"] == {"timm": timm.__version__}


@pytest.mark.parametrize("pattern", ["resnet1*", "efficientnet_b*", "*", "nothing*"])
def test_cached_listing_equals_timms(pattern):
    assert names.timm_models(pattern) == timm.list_models(pattern)


@pytest.mark.parametrize(
    "name",
    ["resnet18", "ResNet18", " resnet18 ", "resnet18.a1_in1k", "resnet81", "", "vgg16", "vit_tiny"],
)
def test_timm_name_agrees_with_timm_is_model(name):
    found = names.timm_name(name)
    expected = next(
        (c for c in (name.strip(), name.strip().lower()) if c and timm.is_model(c)), None
    )
    assert found == expected


def test_deprecated_timm_names_are_accepted_as_timm_accepts_them():
    deprecated = next(iter(timm.models.get_deprecated_models()))
    assert timm.is_model(deprecated) and names.timm_name(deprecated) == deprecated


def test_own_models_are_the_registrys():
    assert [m["name"] for m in registry.list_models()] == list(names.OWN_MODELS)
    assert {m["name"]: m["spatial_dims"] for m in registry.list_models()} == {
        n: own.spatial_dims for n, own in names.OWN_MODELS.items()
    }


def test_one_message_for_an_unknown_model():
    with pytest.raises(ModelError) as checked:
        names.check_model_name("efficientnet_bo")
    with pytest.raises(ModelError) as built:
        registry.create_model("efficientnet_bo", in_chans=1, num_classes=2)
    assert str(checked.value) == str(built.value)
    assert "did you mean efficientnet_b0" in str(checked.value)


def test_cache_dir_follows_the_data_cache(monkeypatch, tmp_path):
    from medlens.data.labelled import default_cache_dir

    assert names.cache_dir() == default_cache_dir()  # $MEDLENS_CACHE (set by conftest)
    monkeypatch.delenv("MEDLENS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert names.cache_dir() == default_cache_dir() == tmp_path / "xdg" / "medlens"


def test_parameter_counts_are_counted_once_per_key(monkeypatch):
    calls = []

    def count_all():
        calls.append(1)
        return dict.fromkeys([*names.OWN_MODELS, *names.LITERATURE], 7)

    monkeypatch.setattr(catalogue, "_count_all", count_all)
    assert catalogue.parameter_counts()["vgg16"] == 7
    rows = catalogue.model_catalogue()
    assert len(calls) == 1  # the second listing read the cache
    assert [r.name for r in rows] == [*names.OWN_MODELS, *names.LITERATURE]
    monkeypatch.setattr(catalogue, "_code_digest", lambda: "changed model code")
    catalogue.parameter_counts()
    assert len(calls) == 2  # another key: counted again
