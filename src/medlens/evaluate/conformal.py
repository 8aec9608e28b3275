"""Split-conformal prediction sets: a set of classes that holds the true one at a chosen rate.

Scores are fitted on the validation split and applied to new cases. Three scores:

* ``lac`` (Sadinle et al., 2019): ``1 - p(true class)``; smallest sets on average.
* ``aps`` (Romano et al., 2020): the probability mass of the classes ranked above the true one,
  plus a uniform share of its own; sets adapt to how hard a case is.
* ``raps`` (Angelopoulos et al., 2021): APS with a penalty ``lam`` for every class ranked past
  ``k_reg``, which keeps sets small when many classes carry little mass.

APS and RAPS are randomised as in their papers (exact coverage); the random numbers come from
``seed``, so the same case always gets the same set. A set is never empty: when no class passes
the threshold (a very confident validation split gives a small one), the top class is kept,
which can only raise coverage. The guarantee needs validation and new
cases to be exchangeable: a test split drawn differently from val (another site, another
prevalence) can miss the target, which is why :func:`coverage_report` says how far off it was.

Written here rather than taken from a library: MAPIE wraps scikit-learn estimators and
TorchCP carries its own training stack; what a classifier with fixed probabilities needs is
these few lines of numpy.

>>> import numpy as np
>>> p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
>>> cp = ConformalPredictor.fit(p, np.array([0, 1, 0, 1]), alpha=0.25, method="lac")
>>> cp.predict_sets(np.array([[0.6, 0.35, 0.05]])).astype(int).tolist()
[[1, 1, 0]]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medlens.errors import ConfigError
from medlens.evaluate.metrics import _prepare

METHODS = ("aps", "raps", "lac")


def _uniform(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(n)


def _sorted_mass(probs: np.ndarray, lam: float, k_reg: int) -> tuple[np.ndarray, np.ndarray]:
    """Classes by descending probability, and the (penalised) mass up to and including each."""
    order = np.argsort(-probs, axis=1, kind="stable")
    p_sorted = np.take_along_axis(probs, order, axis=1)
    rank = np.arange(1, probs.shape[1] + 1)
    penalty = lam * np.maximum(rank - k_reg, 0)
    return order, np.cumsum(p_sorted, axis=1) + penalty[None, :]


def conformity_scores(
    probs: np.ndarray,
    y: np.ndarray,
    method: str,
    *,
    lam: float = 0.0,
    k_reg: int = 1,
    u: np.ndarray | None = None,
) -> np.ndarray:
    """Non-conformity of each true label (higher: the label looks less likely)."""
    n = len(y)
    if method == "lac":
        return 1.0 - probs[np.arange(n), y]
    order, mass = _sorted_mass(probs, lam if method == "raps" else 0.0, k_reg)
    pos = np.argmax(order == y[:, None], axis=1)
    own = probs[np.arange(n), y]
    u = np.ones(n) if u is None else u
    return mass[np.arange(n), pos] - (1.0 - u) * own


@dataclass
class ConformalPredictor:
    """A fitted split-conformal threshold; ``predict_sets`` turns probabilities into sets."""

    method: str
    alpha: float
    qhat: float
    n_calibration: int
    lam: float = 0.0
    k_reg: int = 1
    seed: int = 0

    @classmethod
    def fit(
        cls,
        probs: Any,
        y: Any,
        *,
        alpha: float = 0.1,
        method: str = "aps",
        lam: float = 0.01,
        k_reg: int | None = None,
        seed: int = 0,
    ) -> ConformalPredictor:
        """Calibrate on held-out probabilities ``probs`` (N, K) and their labels ``y``."""
        if method not in METHODS:
            raise ConfigError(f"unknown conformal method {method!r}", hint=f"use one of {METHODS}")
        if not 0 < alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {alpha}", hint="e.g. 0.1 for 90%")
        yy, s = _prepare(y, probs, "multi-class" if np.ndim(probs) == 2 else "binary")
        n = len(yy)
        if n < np.ceil(1 / alpha) - 1:
            raise ConfigError(
                f"{n} calibration cases cannot give {1 - alpha:.0%} coverage",
                hint=f"use at least {int(np.ceil(1 / alpha))} validation cases or a larger alpha",
            )
        k_reg = k_reg if k_reg is not None else max(1, s.shape[1] // 3)
        scores = conformity_scores(
            s, yy, method, lam=lam, k_reg=k_reg, u=_uniform(n, seed) if method != "lac" else None
        )
        level = min(1.0, np.ceil((n + 1) * (1 - alpha)) / n)
        qhat = float(np.quantile(scores, level, method="higher"))
        return cls(method, float(alpha), qhat, n, float(lam), int(k_reg), int(seed))

    def predict_sets(self, probs: Any, seed: int | None = None) -> np.ndarray:
        """(N, K) boolean membership of each class in each case's prediction set."""
        s = np.asarray(probs, dtype=np.float64)
        n, k = s.shape
        if self.method == "lac":
            sets = s >= 1.0 - self.qhat
            empty = ~sets.any(axis=1)
            sets[empty, s[empty].argmax(axis=1)] = True  # never empty, as for APS below
            return sets
        order, mass = _sorted_mass(s, self.lam if self.method == "raps" else 0.0, self.k_reg)
        p_sorted = np.take_along_axis(s, order, axis=1)
        u = _uniform(n, self.seed + 1 if seed is None else seed)
        # a class is in the set when its (randomised) score is within qhat
        keep_sorted = mass - (1.0 - u[:, None]) * p_sorted <= self.qhat
        keep_sorted[:, 0] |= ~keep_sorted.any(axis=1)  # never an empty set
        sets = np.zeros((n, k), dtype=bool)
        np.put_along_axis(sets, order, keep_sorted, axis=1)
        return sets

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def coverage_report(sets: np.ndarray, y: Any, label_names: list[str]) -> dict[str, Any]:
    """Empirical coverage, mean set size, sizes seen, and coverage per true class."""
    yy = np.asarray(y).ravel().astype(int)
    hit = sets[np.arange(len(yy)), yy]
    sizes = sets.sum(axis=1)
    size_values, size_counts = np.unique(sizes, return_counts=True)
    per_class = {
        name: float(hit[yy == j].mean()) if (yy == j).any() else None
        for j, name in enumerate(label_names)
    }
    return {
        "coverage": float(hit.mean()),
        "mean_set_size": float(sizes.mean()),
        "set_size_counts": {int(v): int(c) for v, c in zip(size_values, size_counts, strict=True)},
        "singleton_share": float((sizes == 1).mean()),
        "coverage_per_class": per_class,
    }


def random_split_coverage(
    probs: np.ndarray,
    y: np.ndarray,
    *,
    alpha: float,
    method: str,
    n_splits: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """Mean coverage and set size over random halves of pooled cases (calibrate on one half,
    measure on the other): what the guarantee promises when cases are exchangeable."""
    rng = np.random.default_rng(seed)
    yy = np.asarray(y).ravel().astype(int)
    cover, size = [], []
    for i in range(n_splits):
        perm = rng.permutation(len(yy))
        cal, new = perm[: len(yy) // 2], perm[len(yy) // 2 :]
        cp = ConformalPredictor.fit(probs[cal], yy[cal], alpha=alpha, method=method, seed=i)
        sets = cp.predict_sets(probs[new], seed=10_000 + i)
        cover.append(sets[np.arange(len(new)), yy[new]].mean())
        size.append(sets.sum(axis=1).mean())
    return {
        "n_splits": n_splits,
        "mean_coverage": float(np.mean(cover)),
        "coverage_std": float(np.std(cover)),
        "mean_set_size": float(np.mean(size)),
    }
