"""The planner's choices, YAML round trips and command-line overrides."""

from __future__ import annotations

import pytest

from medlens.config import apply_overrides, dump_plan, load_plan, parse_set_options, save_plan
from medlens.data.fingerprint import fingerprint
from medlens.data.sources import load_dataset
from medlens.errors import ConfigError
from medlens.plan import make_plan
from medlens.plan.scaling import DeviceFacts, fits_memory, scale_lr
from medlens.stages.planning import describe


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


def test_sampler_follows_the_class_balance(breast_fp, multilabel_npz):
    assert breast_fp.minority_fraction == pytest.approx(0.27, abs=0.01)
    plan = make_plan(breast_fp, device="cpu")
    assert plan.train.sampler == "sqrt"
    [note] = [n for n in plan.notes if n.startswith("sampler:")]
    assert "27% of train" in note and "train.sampler=none" in note
    for share, expected in ((0.04, "none"), (0.1, "sqrt"), (0.34, "sqrt"), (0.35, "none")):
        fp = breast_fp.model_copy(update={"minority_fraction": share})
        assert make_plan(fp, device="cpu").train.sampler == expected, share
    large = breast_fp.model_copy(update={"n_images": {**breast_fp.n_images, "train": 4708}})
    assert make_plan(large, device="cpu").train.sampler == "none"  # not measured that large
    multilabel = make_plan(fingerprint(load_dataset(str(multilabel_npz))), device="cpu")
    assert multilabel.train.sampler == "none"
    off = make_plan(breast_fp, device="cpu", overrides={"train.sampler": "none"})
    assert off.train.sampler == "none"
    # the summary printed before training says so
    assert "loss cross_entropy, sqrt sampling, augment" in describe(breast_fp, plan)[1]
    assert "sampling" not in describe(breast_fp, off)[1]


def test_orientation_free_modalities_get_flips(breast_fp):
    pathology = breast_fp.model_copy(update={"modality": "colon pathology"})
    aug = make_plan(pathology, device="cpu").augment
    assert aug.hflip and aug.vflip and aug.rot90


def test_crops_from_64_px_and_gamma_and_elastic_opt_in(breast_fp):
    assert breast_fp.image_shape == [28, 28]
    plain = make_plan(breast_fp, device="cpu").augment
    assert plain.gamma == 0 and plain.crop_scale is None and plain.elastic == 0
    xray = breast_fp.model_copy(update={"modality": "chest x-ray"})
    assert make_plan(xray, device="cpu").augment.gamma == 0  # measured to hurt: opt-in
    big = xray.model_copy(update={"image_shape": [64, 64]})
    aug = make_plan(big, device="cpu").augment
    assert aug.crop_scale == (0.75, 1.0) and aug.gamma == 0 and aug.elastic == 0
    opted = make_plan(big, device="cpu", overrides={"augment.gamma": 0.2}).augment
    assert opted.gamma == 0.2 and opted.crop_scale == (0.75, 1.0)


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


# --- device-aware batch size, lr and compile (fake device facts, no GPU needed) ---

H100 = DeviceFacts(kind="cuda", name="NVIDIA H100 80GB HBM3", total_memory=85_045_870_592)
SMALL_GPU = DeviceFacts(kind="cuda", name="small GPU", total_memory=4 * 2**30)
CPU = DeviceFacts(kind="cpu", name="cpu")


def _like(fp, n_train: int, shape: tuple[int, ...], chans: int = 1):
    return fp.model_copy(
        update={
            "n_images": {**fp.n_images, "train": n_train},
            "image_shape": list(shape),
            "in_chans": chans,
            "intensity": fp.intensity.model_copy(
                update={"mean": fp.intensity.mean * chans, "std": fp.intensity.std * chans}
            ),
        }
    )


def test_h100_takes_large_batches_at_28px_with_sqrt_lr_and_compile(breast_fp):
    path_like = _like(breast_fp, 89_996, (28, 28), chans=3)
    plan = make_plan(path_like, device=H100)
    assert plan.model.name == "resnet18_medmnist"
    assert plan.train.batch_size == 1024
    assert plan.optim.lr == pytest.approx(1e-3 * (1024 / 128) ** 0.5)
    assert plan.train.compile and plan.schedule.warmup_epochs >= 1.0
    assert plan.train.epochs == make_plan(path_like, device="cuda").train.epochs  # same epochs
    notes = " ".join(plan.notes)
    assert "H100" in notes and "sqrt(1024/128)" in notes and "compile on" in notes


def test_h100_at_224px_takes_a_smaller_batch(breast_fp):
    big = make_plan(_like(breast_fp, 89_996, (224, 224)), device=H100)
    assert big.model.name == "resnet18" and big.train.batch_size == 512
    assert big.optim.lr == pytest.approx(0.5e-3 * (512 / 64) ** 0.5)


def test_small_datasets_keep_the_reference_batch_on_a_big_gpu(breast_fp):
    plan = make_plan(breast_fp, device=H100)  # 546 images: 128 keeps 4 steps per epoch
    assert plan.train.batch_size == 128 and plan.optim.lr == pytest.approx(1e-3)
    assert not plan.train.compile  # 100 short epochs do not repay compiling
    assert any("compile off" in note for note in plan.notes)


def test_a_small_gpu_goes_below_the_reference_batch_when_memory_forces_it(breast_fp):
    fp = _like(breast_fp, 89_996, (224, 224))
    plan = make_plan(fp, device=SMALL_GPU)
    assert plan.train.batch_size == 16  # reference 64 does not fit in 40% of 4 GiB
    assert plan.optim.lr == pytest.approx(0.5e-3 * (16 / 64) ** 0.5)
    assert fits_memory(16, "resnet18", 224 * 224, SMALL_GPU)
    assert not fits_memory(32, "resnet18", 224 * 224, SMALL_GPU)


def test_cpu_facts_give_the_unchanged_cpu_plan(breast_fp):
    fp = _like(breast_fp, 89_996, (28, 28), chans=3)
    for data in (breast_fp, fp):
        with_facts, plain = make_plan(data, device=CPU), make_plan(data, device="cpu")
        assert with_facts == plain
        assert plain.train.batch_size == 128 and plain.optim.lr == pytest.approx(1e-3)
        assert not plain.train.compile


@pytest.mark.parametrize("facts", [H100, SMALL_GPU, DeviceFacts("cuda", "24 GiB", 24 * 2**30)])
@pytest.mark.parametrize(
    ("model", "shape"),
    [("resnet18_medmnist", (28, 28)), ("resnet18", (64, 64)), ("resnet18", (224, 224))],
)
def test_the_chosen_batch_fits_the_memory_budget(breast_fp, facts, model, shape):
    """Rule: 2 x batch x saved activations + 4 x weights <= 40% of the GPU's memory, and the
    batch is the largest power of two that fits, unless a cap (1024, 20 steps) stops it."""
    fp = _like(breast_fp, 200_000, shape)
    plan = make_plan(fp, device=facts)
    pixels = shape[0] * shape[1]
    batch = plan.train.batch_size
    assert plan.model.name == model
    assert fits_memory(batch, model, pixels, facts)
    assert batch == 1024 or not fits_memory(2 * batch, model, pixels, facts)


def test_the_global_batch_is_split_over_ranks_for_the_memory_rule(breast_fp):
    fp = _like(breast_fp, 200_000, (224, 224))
    one = make_plan(fp, device=SMALL_GPU).train.batch_size
    eight = DeviceFacts("cuda", "small GPU", SMALL_GPU.total_memory, count=8)
    assert make_plan(fp, device=eight).train.batch_size == 8 * one


def test_lr_scaling_rules():
    assert scale_lr(0.1, 512, 128, "sgd") == pytest.approx(0.4)  # linear
    assert scale_lr(1e-3, 512, 128, "adamw") == pytest.approx(2e-3)  # square root


def test_compile_is_a_plan_field(breast_fp):
    plan = apply_overrides(make_plan(breast_fp, device="cpu"), {"train.compile": "true"})
    assert plan.train.compile
