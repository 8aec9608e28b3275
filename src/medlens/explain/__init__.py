"""Explanations: Grad-CAM, Grad-CAM++ and attention rollout maps, their faithfulness, overlays.

- :func:`saliency_maps` / :func:`default_method` (``saliency.py``): maps of a normalised batch;
- :func:`faithfulness_scores` / :func:`deletion_insertion` (``faithfulness.py``): RISE's
  deletion and insertion scores, with a random map as the chance level;
- :func:`overlay_image` / :func:`save_side_by_side` (``overlay.py``): heat-map overlays;
- :func:`explain` (``run.py``): all of it for files, with a trained run (``medlens explain``).
"""

from medlens.explain.faithfulness import deletion_insertion, faithfulness_scores
from medlens.explain.overlay import overlay_image, save_side_by_side
from medlens.explain.run import explain
from medlens.explain.saliency import METHODS, default_method, saliency_maps

__all__ = [
    "METHODS",
    "default_method",
    "deletion_insertion",
    "explain",
    "faithfulness_scores",
    "overlay_image",
    "saliency_maps",
    "save_side_by_side",
]
