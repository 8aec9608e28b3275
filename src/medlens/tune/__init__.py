"""``medlens tune``: hyperparameter search with Optuna, scored on validation AUC only.

Optuna comes with the ``tune`` extra (``pip install "medlens[tune]"``) and is imported only
here, when a search starts. Modules: :mod:`.space` (what is searched), :mod:`.study` (storage,
sampler, pruner), :mod:`.objective` (one trial = one run), :mod:`.records` (trials.csv and
best_plan.yaml), :mod:`.search` (the whole search).
"""

from __future__ import annotations

from medlens.errors import ConfigError

# no "medlens[tune]" here: the CLI prints errors as rich markup, which eats "[tune]"
INSTALL_HINT = "pip install optuna (medlens' tune extra)"


def require_optuna():
    """The optuna module, or a ConfigError naming the extra that provides it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "medlens tune needs optuna, which is not installed", hint=INSTALL_HINT
        ) from None
    return optuna
