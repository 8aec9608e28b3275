"""The planner: a training recipe chosen from the dataset's fingerprint and the device at hand.

``planner`` holds the rules (model, epochs, augmentation, loss, evaluation settings);
``scaling`` the device-aware ones (GPU batch size, learning-rate scaling, compile).
"""

from medlens.plan.planner import make_plan

__all__ = ["make_plan"]
