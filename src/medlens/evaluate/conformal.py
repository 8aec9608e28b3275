"""Split-conformal prediction sets: a set of classes that holds the true one at a chosen rate.

Scores are fitted on the validation split and applied to new cases. Three scores:

* ``lac`` (Sadinle et al., 2019): ``1 - p(true class)``; smallest sets on average.
* ``aps`` (Romano et al., 2020): the probability mass of the classes ranked above the true one,
  plus a uniform share ``u`` of its own; sets adapt to how hard a case is.
* ``raps`` (Angelopoulos et al., 2021): APS with a penalty ``lam`` for every class ranked past
  ``k_reg``, which keeps sets small when many classes carry little mass.

The threshold ``qhat`` is the ``ceil((n + 1)(1 - alpha))``-th smallest of the n calibration
scores, the exact finite-sample quantile: coverage is at least ``1 - alpha`` for exchangeable
cases, and (with distinct scores) below ``1 - alpha + 1 / (n + 1)``.

APS and RAPS are randomised as in their papers. A case's ``u`` is a function of the case
itself: a blake2b hash of its key and the run's seed, mapped to (0, 1). The key of an image is
:func:`image_keys` of its uint8 model input (its pixels), so a case gets the same ``u``, and so
the same set, whether it is predicted alone (``medlens predict``, ``serve``) or in any batch,
and on every machine. Probabilities would be no safe key: the batch a case is run in changes
their last bits. Without keys APS and RAPS raise a :class:`ConfigError`; LAC needs none.

A set is never empty: when no class passes the threshold (a very confident validation split
gives a small one), the top class is kept, which can only raise coverage. The guarantee needs
validation and new cases to be exchangeable: a test split drawn differently from val (another
site, another prevalence) can miss the target, which is why :func:`coverage_report` says how
far off it was.

Written here rather than taken from a library: MAPIE wraps scikit-learn estimators and
TorchCP carries its own training stack; what a classifier with fixed probabilities needs is
these few lines of numpy.

>>> import numpy as np
>>> p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
>>> cp = ConformalPredictor.fit(p, np.array([0, 1, 0, 1]), alpha=0.25, method="lac")
>>> cp.qhat  # scores 0.3, 0.2, 0.7, 0.6: the ceil(5 * 0.75) = 4th smallest
0.7
>>> cp.predict_sets(np.array([[0.6, 0.35, 0.05]])).astype(int).tolist()
[[1, 1, 0]]
>>> images = np.zeros((4, 1, 8, 8), dtype=np.uint8)
>>> images[np.arange(4), 0, 0, np.arange(4)] = 255  # four different images
>>> aps = ConformalPredictor.fit(p, np.array([0, 1, 0, 1]), alpha=0.25, method="aps",
...                              keys=image_keys(images))
>>> alone = aps.predict_sets(p[2:3], keys=image_keys(images[2:3]))
>>> bool((alone == aps.predict_sets(p, keys=image_keys(images))[2:3]).all())
True
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medlens.errors import ConfigError
from medlens.evaluate.validation import prepare

METHODS = ("aps", "raps", "lac")
RANDOMISED = ("aps", "raps")


def image_keys(images: np.ndarray) -> np.ndarray:
    """One uint64 key per image: the blake2b digest of its shape, dtype and bytes.

    ``images`` (N, ...) are the model's inputs as stored in a split (uint8, channel first);
    the same pixels give the same key in any batch and on any machine.

    >>> a = np.zeros((2, 1, 4, 4), dtype=np.uint8)
    >>> a[1, 0, 0, 0] = 1
    >>> k = image_keys(a)
    >>> k.dtype.name, bool(k[0] != k[1]), bool(image_keys(a[1:])[0] == k[1])
    ('uint64', True, True)
    """
    x = np.asarray(images)
    if x.ndim < 2 or len(x) == 0:
        raise ConfigError(
            f"image_keys needs a non-empty batch of images (N, ...), got shape {x.shape}",
            hint="pass the model's uint8 inputs, one image per row",
        )
    header = f"{x.dtype.str}{x.shape[1:]}".encode()
    out = np.empty(len(x), dtype=np.uint64)
    for i, image in enumerate(x):
        digest = hashlib.blake2b(header, digest_size=8)
        digest.update(np.ascontiguousarray(image).tobytes())
        out[i] = int.from_bytes(digest.digest(), "little")
    return out


def case_uniforms(keys: np.ndarray, seed: int) -> np.ndarray:
    """The randomisation ``u`` in (0, 1) of each case: a hash of its key and ``seed``.

    >>> u = case_uniforms(np.array([1, 2, 1], dtype=np.uint64), seed=0)
    >>> bool(0 < u.min() and u.max() < 1 and u[0] == u[2] != u[1])
    True
    """
    salt = (int(seed) % 2**64).to_bytes(8, "little")
    out = np.empty(len(keys))
    for i, key in enumerate(np.asarray(keys, dtype=np.uint64)):
        digest = hashlib.blake2b(int(key).to_bytes(8, "little"), digest_size=8, salt=salt)
        top53 = int.from_bytes(digest.digest(), "little") >> 11  # a double's mantissa
        out[i] = (top53 + 0.5) / 2.0**53  # strictly inside (0, 1)
    return out


def case_keys(keys: Any, n: int, method: str) -> np.ndarray | None:
    """``keys`` as uint64 for the randomised methods (a ConfigError when they are missing or
    not one integer per case), None for LAC, which needs none."""
    if method not in RANDOMISED:
        return None
    if keys is None:
        raise ConfigError(
            f"{method.upper()} prediction sets are randomised per case and need one key per case",
            hint="pass keys=image_keys(images) (the model's uint8 inputs), or use method 'lac'",
        )
    k = np.asarray(keys)
    if k.shape != (n,) or not np.issubdtype(k.dtype, np.integer):
        raise ConfigError(
            f"keys must be {n} integers, one per case, got shape {k.shape} of {k.dtype}",
            hint="pass keys=image_keys(images) for the same cases as the probabilities",
        )
    return k.astype(np.uint64)


def conformal_rank(n: int, alpha: float) -> int:
    """The 1-based rank ``ceil((n + 1)(1 - alpha))`` of the calibration score that is the
    threshold (it exceeds ``n`` when ``n`` is too small for ``1 - alpha``).

    >>> conformal_rank(4, 0.25), conformal_rank(19, 0.1), conformal_rank(8, 0.1)
    (4, 18, 9)
    """
    # rounded first: (n + 1) * (1 - alpha) lands a hair above a whole number in floating point
    # for many (n, alpha), and the ceiling would then take one order statistic too many
    return math.ceil(round((n + 1) * (1 - alpha), 9))


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The split-conformal threshold: the :func:`conformal_rank`-th smallest score, or +inf
    (every class in every set) when that rank exceeds the number of scores.

    >>> conformal_quantile(np.array([0.3, 0.2, 0.7, 0.6]), 0.25)
    0.7
    >>> conformal_quantile(np.array([0.3, 0.2]), 0.25)
    inf
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))
    rank = conformal_rank(len(s), alpha)
    return float(s[rank - 1]) if rank <= len(s) else math.inf


def _sorted_mass(probs: np.ndarray, lam: float, k_reg: int) -> tuple[np.ndarray, np.ndarray]:
    """Classes by descending probability, and the mass up to and including each plus the
    RAPS penalty ``lam * max(rank - k_reg, 0)`` of its rank (1-based)."""
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
    """Non-conformity of each true label (higher: the label looks less likely).

    APS/RAPS: the mass ranked above the label, plus ``u`` times its own probability, plus the
    RAPS penalty; ``u = None`` counts the whole of its own (not randomised).
    """
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
        keys: np.ndarray | None = None,
    ) -> ConformalPredictor:
        """Calibrate on held-out probabilities ``probs`` (N, K) and their labels ``y``.

        ``keys`` (APS/RAPS): one integer per case, e.g. :func:`image_keys` of its images.
        Raises :class:`ConfigError` when ``n`` cases are too few for ``1 - alpha`` (the
        threshold would be +inf: every class in every set).
        """
        if method not in METHODS:
            raise ConfigError(f"unknown conformal method {method!r}", hint=f"use one of {METHODS}")
        if not 0 < alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {alpha}", hint="e.g. 0.1 for 90%")
        yy, s = prepare(y, probs, "multi-class" if np.ndim(probs) == 2 else "binary")
        n = len(yy)
        if conformal_rank(n, alpha) > n:
            need = next(m for m in itertools.count(n) if conformal_rank(m, alpha) <= m)
            raise ConfigError(
                f"{n} calibration cases cannot give {1 - alpha:.0%} coverage",
                hint=f"use at least {need} validation cases or a larger alpha",
            )
        k = case_keys(keys, n, method)
        k_reg = k_reg if k_reg is not None else max(1, s.shape[1] // 3)
        u = None if k is None else case_uniforms(k, seed)
        scores = conformity_scores(s, yy, method, lam=lam, k_reg=k_reg, u=u)
        qhat = conformal_quantile(scores, alpha)
        return cls(method, float(alpha), qhat, n, float(lam), int(k_reg), int(seed))

    def predict_sets(self, probs: Any, keys: np.ndarray | None = None) -> np.ndarray:
        """(N, K) boolean membership of each class in each case's prediction set.

        ``keys`` (APS/RAPS): one integer per case, as given to :meth:`fit`; a case's set
        depends only on its own probabilities and key.
        """
        s = np.asarray(probs, dtype=np.float64)
        n, k = s.shape
        if self.method == "lac":
            sets = 1.0 - s <= self.qhat  # the score as fit computed it, bit for bit
            empty = ~sets.any(axis=1)
            sets[empty, s[empty].argmax(axis=1)] = True  # never empty, as for APS below
            return sets
        u = case_uniforms(case_keys(keys, n, self.method), self.seed)
        order, mass = _sorted_mass(s, self.lam if self.method == "raps" else 0.0, self.k_reg)
        p_sorted = np.take_along_axis(s, order, axis=1)
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
    keys: np.ndarray | None = None,
    n_splits: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """Mean coverage and set size over random halves of pooled cases (calibrate on one half,
    measure on the other): what the guarantee promises when cases are exchangeable.

    Split ``i`` seeds the case randomisation with ``seed + i``, so the splits' ``u`` differ.
    """
    rng = np.random.default_rng(seed)
    yy = np.asarray(y).ravel().astype(int)
    k = case_keys(keys, len(yy), method)
    cover, size = [], []
    for i in range(n_splits):
        perm = rng.permutation(len(yy))
        cal, new = perm[: len(yy) // 2], perm[len(yy) // 2 :]
        cp = ConformalPredictor.fit(
            probs[cal],
            yy[cal],
            alpha=alpha,
            method=method,
            seed=seed + i,
            keys=None if k is None else k[cal],
        )
        sets = cp.predict_sets(probs[new], keys=None if k is None else k[new])
        cover.append(sets[np.arange(len(new)), yy[new]].mean())
        size.append(sets.sum(axis=1).mean())
    return {
        "n_splits": n_splits,
        "mean_coverage": float(np.mean(cover)),
        "coverage_std": float(np.std(cover)),
        "mean_set_size": float(np.mean(size)),
    }
