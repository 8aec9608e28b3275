"""Dataset shift between the training distribution and another site, measured on arrays.

The feature-space score is a domain classifier (a "classifier two-sample test", Lopez-Paz and
Oquab, 2017): a linear classifier (shrunk LDA on the leading principal components) tells
internal from external cases by the model's penultimate features; its cross-validated ROC
AUC is 0.5 when the two look alike to the model and near 1 when they are plainly different.
scikit-learn's ``permutation_test_score`` gives the p-value (the AUC again with the domain
labels shuffled).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> a, b = rng.normal(0, 1, (80, 3)), rng.normal(3, 1, (80, 3))
>>> s = domain_shift(a, b, n_permutations=19)
>>> s["domain_auc"] > 0.95, s["p_value"]
(True, 0.05)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import StratifiedKFold, permutation_test_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from medlens.errors import ConfigError

MAX_PER_DOMAIN = 500  # cases drawn from each side: balanced, and seconds of fitting
PCA_DIMS = 32


def _balanced(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, cap: int):
    n = min(len(a), len(b), cap)
    pick = [x[np.sort(rng.choice(len(x), n, replace=False))] for x in (a, b)]
    return np.concatenate(pick), np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)]


def domain_shift(
    internal: np.ndarray,
    external: np.ndarray,
    *,
    n_permutations: int = 99,
    folds: int = 5,
    seed: int = 0,
    cap: int = MAX_PER_DOMAIN,
) -> dict[str, Any]:
    """Cross-validated AUC of a classifier telling ``external`` features from ``internal``
    ones, with its permutation p-value and a sentence that says what it means."""
    a, b = np.asarray(internal, dtype=np.float64), np.asarray(external, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ConfigError(f"feature arrays must be (N, D) alike, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    x, y = _balanced(a, b, rng, cap)
    folds = min(folds, len(x) // 2)
    if folds < 2:
        raise ConfigError(
            f"{min(len(a), len(b))} cases on one side are too few for a domain classifier",
            hint="an external set needs at least two images",
        )
    # a shrunk linear discriminant (a linear classifier like logistic regression, in closed
    # form) on the leading principal components, on one BLAS thread: 99 permutations x 5 folds
    # of an iterative fit on 512 features take minutes on two busy cores, these take seconds.
    # PCA sees no domain labels, so fitting it once on the pooled cases keeps the test valid.
    dims = min(PCA_DIMS, x.shape[1], len(x) // 2)
    with threadpool_limits(1):
        z = PCA(dims, random_state=seed).fit_transform(StandardScaler().fit_transform(x))
        model = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        auc, _, p = permutation_test_score(
            model, z, y, cv=cv, scoring="roc_auc", n_permutations=n_permutations,
            random_state=seed,
        )  # fmt: skip
    return {
        "method": "domain classifier: shrunk linear discriminant on the first "
        f"{dims} principal components of the model's penultimate features, {folds}-fold "
        "cross-validated ROC AUC, permutation p-value",
        "domain_auc": float(auc),
        "p_value": float(p),
        "n_permutations": int(n_permutations),
        "n_per_domain": int(len(x) // 2),
        "statement": shift_statement(float(auc), float(p)),
    }


def shift_statement(auc: float, p: float) -> str:
    """The domain AUC in words.

    >>> shift_statement(0.97, 0.01)
    "this site's images differ from training: domain AUC 0.97 (p = 0.01)"
    """
    if p > 0.05 or auc < 0.6:
        verdict = "this site's images look like training to the model"
    elif auc < 0.8:
        verdict = "this site's images differ somewhat from training"
    else:
        verdict = "this site's images differ from training"
    return f"{verdict}: domain AUC {auc:.2f} (p = {p:.2g})"


def intensity_difference(
    internal: dict[str, list[float]], external: dict[str, list[float]]
) -> dict[str, Any]:
    """Per-channel differences (external - internal) of intensity statistics (mean, std, p01,
    p99 on 0..1), as the fingerprint records them."""
    keys = [k for k in ("mean", "std", "p01", "p99") if k in internal and k in external]
    return {
        k: [round(float(e) - float(i), 5) for i, e in zip(internal[k], external[k], strict=False)]
        for k in keys
    }
