"""``medlens compare``: several models trained on the same data, splits, preprocessing and
budget over a few seeds, ranked in a leaderboard, with paired tests against the best model.

::

    <output>/
      base_plan.yaml        the shared recipe (each run changes only model.name and train.seed)
      runs/<model>-seed<k>/ ordinary run directories (resumable, never retrained once done)
      cost.json             parameters, GFLOPs and CPU latency per model (measured once)
      comparison.json       settings, the leaderboard rows and the paired tests
      leaderboard.md / leaderboard.csv / leaderboard.png

Modules: :mod:`.comparison` runs it, :mod:`.members` trains and reads the runs, :mod:`.cost`
measures the models, :mod:`.leaderboard` and :mod:`.plot` write the results, :mod:`.delong` and
:mod:`.paired` hold the paired AUC tests.
"""
