"""A run's wall time from measured unit costs, and a recipe that fits a time budget.

Pure arithmetic (no torch): :func:`medlens.train.probe.measure_costs` measures the costs on the
machine at hand. A run's time is

    setup + epochs x (train images x t_train + val images x t_eval + checkpoint saves)
          + (val + test images) x t_eval + trust analysis

where the training images per epoch are the whole batches the loop takes.

>>> costs = StepCosts(train_s_per_image=0.01, eval_s_per_image=0.002, save_s=0.5,
...                   trust_s=3.0, setup_s=2.0)
>>> e = estimate_run(costs, epochs=10, n_train=1000, n_val=100, n_test=200, batch_size=100)
>>> round(e.seconds, 1), round(e.epoch_s, 1)
(114.8, 10.7)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from medlens.config.preprocess import STANDARD_SIDES
from medlens.errors import ConfigError
from medlens.progress import format_seconds

SIDES = STANDARD_SIDES
MIN_EPOCHS_SCRATCH, MIN_EPOCHS_FINETUNE = 6, 3
LONG_CPU_RUN_S = 3600.0  # above this, a CPU plan without --budget says so
# the OOD guard, fitted when a run is evaluated, reads the features of at most this many
# training images (a random subset) and of val: one more inference pass, part of evaluation
OOD_FIT_IMAGES = 5000


@dataclass(frozen=True)
class StepCosts:
    """What one unit of a run's work costs on this machine (seconds)."""

    train_s_per_image: float
    eval_s_per_image: float
    save_s: float
    trust_s: float
    setup_s: float


@dataclass(frozen=True)
class Estimate:
    """A run's predicted wall time and its parts (seconds)."""

    seconds: float
    epoch_s: float
    evaluate_s: float
    epochs: int

    def text(self) -> str:
        """``"about 12 min (10 epochs of 1 min 5 s, evaluation 40 s)"``."""
        return (
            f"about {format_seconds(self.seconds)} ({self.epochs} epochs of "
            f"{format_seconds(self.epoch_s)}, evaluation {format_seconds(self.evaluate_s)})"
        )


def images_per_epoch(n_train: int, batch_size: int) -> int:
    """The training images an epoch takes: whole batches (the loop drops the last partial one
    when there is more than one batch)."""
    return n_train - n_train % batch_size if n_train > batch_size else n_train


def estimate_run(
    costs: StepCosts, *, epochs: int, n_train: int, n_val: int, n_test: int, batch_size: int
) -> Estimate:
    """The wall time of training ``epochs`` and evaluating, from ``costs``."""
    epoch_s = (
        images_per_epoch(n_train, batch_size) * costs.train_s_per_image
        + n_val * costs.eval_s_per_image
        + costs.save_s
    )
    guard_images = min(n_train, OOD_FIT_IMAGES) + n_val
    evaluate_s = (n_val + n_test + guard_images) * costs.eval_s_per_image + costs.trust_s
    return Estimate(
        seconds=costs.setup_s + epochs * epoch_s + evaluate_s,
        epoch_s=epoch_s,
        evaluate_s=evaluate_s,
        epochs=epochs,
    )


def epochs_within(
    budget: float, costs: StepCosts, *, n_train: int, n_val: int, n_test: int, batch_size: int
) -> int:
    """The most epochs that, with evaluation, fit in ``budget`` seconds (0 when none does)."""
    one = estimate_run(
        costs, epochs=1, n_train=n_train, n_val=n_val, n_test=n_test, batch_size=batch_size
    )
    spare = budget - (one.seconds - one.epoch_s)
    return max(0, math.floor(spare / one.epoch_s)) if one.epoch_s > 0 else 0


def candidate_sides(current: int, allow_larger: bool) -> list[int]:
    """Sides to try, largest first: the standard ones not above ``current`` (the data's own
    size: a CPU recipe does not upsample), plus 224 when ``allow_larger``."""
    sides = [s for s in SIDES if s <= current] or [current]
    if allow_larger and current < 224:
        sides = [224, *sides]
    return sides


def check_budget(budget: float | None) -> None:
    if budget is not None and budget <= 0:
        raise ConfigError(
            f"the budget must be a positive time, got {budget:g} s", hint="e.g. --budget 20m"
        )


def too_small(budget: float, smallest: Estimate, what: str) -> ConfigError:
    """The error for a budget below even one epoch of the cheapest recipe."""
    one = smallest.seconds - (smallest.epochs - 1) * smallest.epoch_s
    return ConfigError(
        f"a budget of {format_seconds(budget)} is too small for even one epoch: {what} needs "
        f"{format_seconds(one)} for one epoch and its evaluation on this machine",
        hint=f"give at least --budget {math.ceil(one / 60)}m, or drop --budget",
    )
