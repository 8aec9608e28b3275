"""What needs a trained model to measure: robustness to corruptions, uncertainty (test-time
augmentation, MC dropout), and explanations (Grad-CAM, Grad-CAM++, attention rollout, their
faithfulness, overlays). The array statistics these feed live in :mod:`medlens.evaluate`.
"""
