"""Several trained models as one: the (weighted) mean of their probabilities, as logits.

The output is ``log(mean p)`` for softmax tasks (its softmax is the mean itself) and
``logit(mean p)`` for multi-label ones (its sigmoid is the mean), so temperature scaling,
conformal sets, predict, serve and ONNX export treat an ensemble as they treat one model.

>>> model = EnsembleModel([fold0, fold1, fold2], multi_label=False)  # doctest: +SKIP
>>> torch.softmax(model(x), 1)  # == mean of the folds' softmax  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# probabilities are clamped away from 0 and 1 before the log, so that logits stay finite
EPS = 1e-7


class EnsembleModel(nn.Module):
    """Members' probabilities averaged with ``weights`` (default equal), returned as logits."""

    def __init__(
        self,
        members: Sequence[nn.Module],
        *,
        multi_label: bool,
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        w = torch.ones(len(members)) if weights is None else torch.tensor(list(weights))
        if w.shape != (len(members),) or not bool((w >= 0).all()) or float(w.sum()) <= 0:
            raise ValueError(f"{len(members)} members need as many non-negative weights")
        self.members = nn.ModuleList(members)
        # not persistent: ensemble.json holds the weights, the weights file only the members
        self.register_buffer("weights", (w / w.sum()).float(), persistent=False)
        self.multi_label = multi_label

    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(members, N, K) each member's probabilities."""
        act = torch.sigmoid if self.multi_label else lambda z: torch.softmax(z, dim=1)
        return torch.stack([act(m(x).float()) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = (self.member_probabilities(x) * self.weights[:, None, None]).sum(0)
        probs = probs.clamp(EPS, 1.0 - EPS)
        return torch.logit(probs) if self.multi_label else torch.log(probs)
