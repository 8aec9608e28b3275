"""Smaller models: knowledge distillation and structured pruning.

- :func:`medlens.compress.distill.distill_run` trains a small student on a teacher run's data
  with the teacher's soft targets (``medlens distill``); the student run is an ordinary run.
- :func:`medlens.compress.prune.prune_run` removes whole conv channels by filter norm and
  fine-tunes (``medlens prune``); the pruned structure is kept in ``plan.prune.shapes``, so
  every stage rebuilds the slim model from the plan.

Both write ``compression.json`` into the new run: the original against the compressed model
(parameters, MACs, test AUC/ACC, CPU latency).
"""
