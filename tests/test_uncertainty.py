"""TTA, MC dropout, entropy and selective prediction, by hand and on a real trained model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medlens.analyse.uncertainty import (
    dropout_modules,
    mc_dropout_probabilities,
    mutual_information,
    predictive_entropy,
    tta_probabilities,
)
from medlens.config import AugmentConfig
from medlens.data.loader import device_arrays
from medlens.data.sources import load_dataset
from medlens.errors import ConfigError, ModelError
from medlens.evaluate.metrics import medmnist_acc
from medlens.evaluate.selective import selective_curve
from medlens.inference import predict_arrays
from medlens.models.build import build_model
from medlens.models.resnet3d import DropoutLinear
from tests.test_robustness import load_run, trained_breast_run

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, medmnist_dir):
    """(model, plan) of the shared 12-epoch BreastMNIST run with dropout 0.2."""
    return load_run(trained_breast_run(tmp_path_factory.getbasetemp(), medmnist_dir))


@pytest.fixture(scope="module")
def breast_test(medmnist_dir):
    return load_dataset("breastmnist", data_dir=str(medmnist_dir)).splits["test"]


@pytest.fixture(scope="module")
def plain(trained, breast_test) -> np.ndarray:
    """Deterministic test probabilities, as `medlens evaluate` computes them."""
    model, plan = trained
    data = device_arrays(plan, breast_test.images, breast_test.labels, CPU)
    probs, _, _ = predict_arrays(model, data, plan.data.task, plan.train.eval_batch_size)
    return probs


# ---------------------------------------------------------------------------------------------
# selective prediction
# ---------------------------------------------------------------------------------------------


def test_selective_curve_by_hand_binary():
    y = np.array([1, 0, 0, 0, 1])
    p1 = np.array([0.95, 0.1, 0.7, 0.45, 0.6])
    # confidence max(p, 1-p) = .95 .9 .7 .55 .6; predicted 1 0 1 0 1; correct 1 1 0 1 1
    # most confident first: correct 1 1 0 1 1 (order 0, 1, 2, 4, 3) -> accuracy of the top k:
    # 1, 1, 2/3, 3/4, 4/5
    curve = selective_curve(y, np.stack([1 - p1, p1], axis=1), "binary", n_points=5)
    assert curve["coverage"] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    assert curve["accuracy"] == pytest.approx([4 / 5, 3 / 4, 2 / 3, 1.0, 1.0])
    assert curve["threshold"] == pytest.approx([0.55, 0.6, 0.7, 0.9, 0.95])
    assert curve["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 4 + 1 / 5) / 5)
    assert curve["accuracy_at"] == pytest.approx({"0.9": 4 / 5, "0.8": 3 / 4, "0.5": 2 / 3})
    assert curve["n"] == 5
    # P(class 1) alone gives the same curve
    assert selective_curve(y, p1, "binary", n_points=5) == curve


def test_selective_curve_by_hand_multiclass_with_own_confidence():
    y = np.array([0, 1, 2, 2])
    probs = np.array(
        [[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.6, 0.1, 0.3], [0.2, 0.2, 0.6]]
    )  # argmax 0 1 0 2: correct 1 1 0 1
    default = selective_curve(y, probs, "multi-class", n_points=2)
    # max prob .5 .8 .6 .6 -> order 1, 2, 3, 0 (tie .6 kept in input order): correct 1 0 1 1
    assert default["accuracy"] == pytest.approx([3 / 4, 1 / 2])
    assert default["aurc"] == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    own = selective_curve(y, probs, "multi-class", confidence=np.array([4, 3, 1, 2]), n_points=2)
    # order 0, 1, 3, 2: correct 1 1 1 0
    assert own["accuracy"] == pytest.approx([3 / 4, 1.0])
    assert own["threshold"] == pytest.approx([1.0, 3.0])
    assert own["aurc"] == pytest.approx((0 + 0 + 0 + 1 / 4) / 4)


def test_selective_curve_multilabel_uses_mean_label_accuracy():
    y = np.array([[1, 0], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.6, 0.3], [0.45, 0.5]])
    # per case: label accuracy (1 + 1) / 2, (1 + 0) / 2, (1 + 1) / 2; confidence
    # mean of max(p, 1-p): .85, .65, .525
    curve = selective_curve(y, probs, "multi-label", n_points=3)
    assert curve["accuracy"] == pytest.approx([(1 + 0.5 + 1) / 3, 0.75, 1.0])
    assert curve["accuracy"][0] == pytest.approx(medmnist_acc(y, probs, "multi-label"))
    assert curve["threshold"] == pytest.approx([0.525, 0.65, 0.85])


def test_selective_curve_rejects_bad_input():
    y, p = np.array([0, 1]), np.array([[0.8, 0.2], [0.3, 0.7]])
    with pytest.raises(ConfigError, match="unknown task"):
        selective_curve(y, p, "regression")
    with pytest.raises(ConfigError, match="confidence must hold 2"):
        selective_curve(y, p, "binary", confidence=np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ConfigError, match="n_points"):
        selective_curve(y, p, "binary", n_points=0)
    with pytest.raises(ConfigError, match="3 labels but 2"):
        selective_curve(np.array([0, 1, 1]), p, "binary")


def test_selective_prediction_helps_on_the_trained_model(breast_test, plain):
    y = breast_test.labels
    curve = selective_curve(y, plain, "binary")
    assert curve["accuracy"][0] == pytest.approx(medmnist_acc(y, plain, "binary"))
    assert curve["accuracy_at"]["0.5"] >= curve["accuracy"][0]
    assert curve["accuracy_at"]["0.5"] >= 0.85, curve["accuracy_at"]
    rng = np.random.default_rng(0)
    random_aurc = np.mean(
        [
            selective_curve(y, plain, "binary", confidence=rng.random(len(y)))["aurc"]
            for _ in range(50)
        ]
    )
    assert curve["aurc"] < random_aurc - 0.03, (curve["aurc"], random_aurc)


# ---------------------------------------------------------------------------------------------
# entropy and mutual information
# ---------------------------------------------------------------------------------------------


def test_entropy_and_mutual_information_by_hand():
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    h = predictive_entropy(probs)
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    np.testing.assert_allclose(h, [math.log(2), 0.0, expected], atol=1e-12)
    agree = np.stack([probs, probs, probs])
    np.testing.assert_allclose(mutual_information(agree), 0.0, atol=1e-12)
    np.testing.assert_allclose(predictive_entropy(agree), h, atol=1e-12)
    # two confident samples that disagree: all the uncertainty is epistemic
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    np.testing.assert_allclose(mutual_information(disagree), [math.log(2)], atol=1e-12)
    np.testing.assert_allclose(predictive_entropy(disagree), [math.log(2)], atol=1e-12)
    # multi-label: one Bernoulli entropy per label, summed
    ml = np.array([[0.5, 0.5, 1.0]])
    np.testing.assert_allclose(predictive_entropy(ml, task="multi-label"), [2 * math.log(2)])
    with pytest.raises(ConfigError, match="samples"):
        mutual_information(probs)
    with pytest.raises(ConfigError, match="unknown task"):
        predictive_entropy(probs, task="segmentation")


# ---------------------------------------------------------------------------------------------
# test-time augmentation
# ---------------------------------------------------------------------------------------------


def test_tta_with_one_pass_is_the_plain_prediction(trained, breast_test, plain):
    model, plan = trained
    once = tta_probabilities(model, breast_test.images, plan, CPU, n=1)
    assert once.shape == (1, *plain.shape)
    np.testing.assert_allclose(once[0], plain, atol=1e-7)


def test_tta_passes_are_seeded_views_from_the_plan(trained, breast_test, plain):
    model, plan = trained  # the planner's rotate 10 deg, zoom 0.9-1.1, shift 0.05, no flips
    images = breast_test.images[:48]
    a = tta_probabilities(model, images, plan, CPU, n=4, seed=0, batch_size=16)
    b = tta_probabilities(model, images, plan, CPU, n=4, seed=0, batch_size=16)
    c = tta_probabilities(model, images, plan, CPU, n=4, seed=1, batch_size=16)
    assert a.shape == (4, 48, 2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[0], plain[:48], atol=1e-6)  # pass 0 is un-augmented
    np.testing.assert_array_equal(a[0], c[0])
    assert np.abs(a[1:] - a[0]).mean() > 1e-3  # later passes see other views
    assert np.abs(a[1:] - c[1:]).mean() > 1e-3
    np.testing.assert_allclose(a.sum(axis=2), 1.0, atol=1e-6)


def test_tta_uses_only_the_transforms_the_plan_allows(trained, breast_test):
    model, plan = trained
    images = breast_test.images[:48]
    flips_only = plan.model_copy(update={"augment": AugmentConfig(hflip=True)})
    as_is = tta_probabilities(model, images, plan, CPU, n=1)[0]
    mirrored = tta_probabilities(model, np.ascontiguousarray(images[..., ::-1]), plan, CPU, n=1)[0]
    assert np.abs(as_is - mirrored).max() > 1e-3  # the model tells a mirrored image apart
    tta = tta_probabilities(model, images, flips_only, CPU, n=6)
    is_plain = np.isclose(tta[1:], as_is, atol=1e-5).all(axis=2)
    is_mirror = np.isclose(tta[1:], mirrored, atol=1e-5).all(axis=2)
    assert (is_plain | is_mirror).all()  # every view is the image or its mirror, nothing else
    assert is_mirror.mean() > 0.3 and is_plain.mean() > 0.3  # and both occur
    no_geometry = plan.model_copy(update={"augment": AugmentConfig(brightness=0.2)})
    with pytest.raises(ConfigError, match="no geometric transform"):
        tta_probabilities(model, images, no_geometry, CPU, n=2)


# ---------------------------------------------------------------------------------------------
# MC dropout
# ---------------------------------------------------------------------------------------------


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def test_mc_dropout_samples_vary_around_the_plain_prediction(trained, breast_test, plain):
    model, plan = trained
    bn = _bn_state(model)
    rng_before = torch.random.get_rng_state()
    samples = mc_dropout_probabilities(model, breast_test.images, plan, CPU, n=20, seed=0)
    assert samples.shape == (20, *plain.shape)
    spread = samples[:, :, 1].std(axis=0)
    assert (spread > 1e-4).mean() > 0.9, spread  # dropout is on: the passes differ
    assert np.abs(samples.mean(axis=0) - plain).mean() < 0.03  # and centre on the plain one
    assert mutual_information(samples).mean() > 1e-4
    # BatchNorm stayed in eval (running statistics untouched), modes and RNG restored
    for k, v in _bn_state(model).items():
        assert torch.equal(v, bn[k]), k
    assert not any(m.training for m in model.modules())
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    few = breast_test.images[:32]
    first = mc_dropout_probabilities(model, few, plan, CPU, n=3, seed=0)
    again = mc_dropout_probabilities(model, few, plan, CPU, n=3, seed=0)
    other = mc_dropout_probabilities(model, few, plan, CPU, n=3, seed=1)
    np.testing.assert_array_equal(again, first)
    assert np.abs(again - other).mean() > 1e-4


def test_mc_dropout_on_timm_and_functional_dropout_keeps_batchnorm_in_eval(trained):
    _, plan = trained
    images = np.random.default_rng(0).integers(0, 255, (8, 1, 28, 28), dtype=np.uint8)
    timm_plan = plan.model_copy(
        update={"model": plan.model.model_copy(update={"name": "resnet18_medmnist"})}
    )
    resnet = build_model(timm_plan, CPU)  # timm applies dropout with F.dropout in its head
    resnet.train()
    bn = _bn_state(resnet)
    assert dropout_modules(resnet) == [resnet]
    samples = mc_dropout_probabilities(resnet, images, timm_plan, CPU, n=4)
    assert np.abs(samples[1:] - samples[0]).max() > 1e-4
    for k, v in _bn_state(resnet).items():
        assert torch.equal(v, bn[k]), k
    assert all(m.training for m in resnet.modules())  # train mode given back as it was
    head = nn.Sequential(nn.Flatten(), DropoutLinear(28 * 28, 2, drop_rate=0.5))
    assert dropout_modules(head) == [head[1]]
    samples = mc_dropout_probabilities(head, images, plan, CPU, n=4)
    assert np.abs(samples[1:] - samples[0]).max() > 1e-4


def test_mc_dropout_without_dropout_says_how_to_get_it(trained, breast_test):
    _, plan = trained
    no_drop = plan.model_copy(update={"model": plan.model.model_copy(update={"drop_rate": 0.0})})
    model = build_model(no_drop, CPU)
    assert dropout_modules(model) == []
    with pytest.raises(ModelError, match=r"has none.*model\.drop_rate=0\.2"):
        mc_dropout_probabilities(model, breast_test.images[:4], no_drop, CPU)
    zero_p = nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(28 * 28, 2))
    with pytest.raises(ModelError, match="no dropout layer"):
        mc_dropout_probabilities(zero_p, breast_test.images[:4], no_drop, CPU)
