"""The planner's choices, YAML round trips and command-line overrides."""

from __future__ import annotations

import pytest

from medlens.config import apply_overrides, dump_plan, load_plan, parse_set_options, save_plan
from medlens.data.fingerprint import fingerprint
from medlens.data.sources import load_dataset
from medlens.errors import ConfigError
from medlens.plan import make_plan


@pytest.fixture(scope="module")
def breast_fp(medmnist_dir):
    return fingerprint(load_dataset("breastmnist", data_dir=str(medmnist_dir)))


def test_gpu_plan_for_28px_is_the_medmnist_resnet(breast_fp):
    plan = make_plan(breast_fp, device="cuda")
    assert plan.model.name == "resnet18_medmnist"
    assert plan.data.task == "binary" and plan.data.n_classes == 2
    assert plan.loss.name == "cross_entropy"  # 27% minority: not imbalanced enough for focal
    assert plan.train.epochs == 100  # 4 steps/epoch: the epoch cap
    assert plan.data.mean == breast_fp.intensity.mean
    assert not plan.augment.hflip  # ultrasound anatomy keeps its orientation


def test_cpu_plan_is_lighter(breast_fp):
    plan = make_plan(breast_fp, device="cpu")
    assert plan.model.name == "small_cnn" and plan.train.epochs <= 40
    assert any("CPU" in note for note in plan.notes)


def test_imbalance_picks_focal_loss_and_multilabel_picks_bce(breast_fp, multilabel_npz):
    skewed = breast_fp.model_copy(update={"minority_fraction": 0.04})
    assert make_plan(skewed, device="cpu").loss.name == "focal"
    ml = make_plan(fingerprint(load_dataset(str(multilabel_npz))), device="cpu")
    assert ml.loss.name == "bce" and ml.data.task == "multi-label"


def test_orientation_free_modalities_get_flips(breast_fp):
    pathology = breast_fp.model_copy(update={"modality": "colon pathology"})
    aug = make_plan(pathology, device="cpu").augment
    assert aug.hflip and aug.vflip and aug.rot90


def test_3d_plan(volume_npz):
    fp = fingerprint(load_dataset(str(volume_npz)))
    assert make_plan(fp, device="cuda").model.name == "resnet18_3d"
    assert make_plan(fp, device="cpu").model.name == "small_cnn_3d"


def test_yaml_round_trip(breast_fp, tmp_path):
    plan = make_plan(breast_fp, device="cpu", data_dir="/data")
    save_plan(plan, tmp_path / "plan.yaml")
    again = load_plan(tmp_path / "plan.yaml")
    assert again == plan
    assert dump_plan(again) == dump_plan(plan)


def test_every_field_can_be_overridden(breast_fp):
    plan = make_plan(breast_fp, device="cpu")
    new = apply_overrides(
        plan,
        parse_set_options(
            [
                "train.epochs=7",
                "loss.name=focal",
                "augment.scale=[0.8, 1.2]",
                "optim.lr=3e-4",
                "model.name=resnet18_medmnist",
                "augment.hflip=true",
            ]
        ),
    )
    assert new.train.epochs == 7 and new.loss.name == "focal" and new.augment.scale == (0.8, 1.2)
    assert new.optim.lr == pytest.approx(3e-4) and new.augment.hflip
    assert plan.train.epochs != 7  # the original is untouched


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"train.epochs": "-1"}, "train.epochs"),
        ({"train.batch_size": "0"}, "train.batch_size"),
        ({"trian.epochs": "3"}, "did you mean train.epochs"),
        ({"loss.name": "bce"}, "binary task needs cross_entropy or focal"),
        ({"augment.scale": "[1.2, 0.8]"}, "0 < lo <= hi"),
    ],
)
def test_impossible_overrides_name_the_field(breast_fp, override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(make_plan(breast_fp, device="cpu"), override)


def test_bad_plan_files(tmp_path, breast_fp):
    with pytest.raises(ConfigError, match="does not exist"):
        load_plan(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_plan(bad)
    plan_text = dump_plan(make_plan(breast_fp, device="cpu")).replace("epochs: 40", "epochs: zero")
    bad.write_text(plan_text)
    with pytest.raises(ConfigError, match="train.epochs"):
        load_plan(bad)


def test_an_unset_section_takes_several_set_keys(breast_run):
    from medlens.config import apply_overrides, load_plan

    plan = load_plan(breast_run / "plan.yaml")
    assert plan.distill is None
    both = apply_overrides(plan, {"distill.teacher": str(breast_run), "distill.alpha": "0.7"})
    assert both.distill.teacher == str(breast_run) and both.distill.alpha == 0.7
