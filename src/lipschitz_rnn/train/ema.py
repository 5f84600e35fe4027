"""An exponential moving average of a model's weights (Polyak averaging), the weights a run evaluates.

    average = WeightAverage(model, decay=0.999)
    for x, y in batches:
        ...
        optimizer.step()
        average.update(model)
    evaluate(average.synced(model), ...)

After every optimizer step each averaged parameter moves towards the trained one,

    θ̄ ← decay · θ̄ + (1 − decay) · θ,        θ̄ = θ at the start,

so θ̄ averages roughly the last ``1 / (1 − decay)`` steps (1,000 for 0.999, about two epochs of
pMNIST). At a high learning rate the trained weights rattle around a minimum; their average
sits nearer its centre. Buffers (a permutation, running statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """A copy of ``model`` whose parameters are the exponential moving average of ``model``'s.

    Args:
        model: the trained model; its parameters at construction start the average.
        decay: weight of the old average at each update, in (0, 1).

    Example:
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> _ = torch.nn.init.zeros_(model.weight)
        >>> average = WeightAverage(model, decay=0.75)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(1.0)
        >>> average.update(model)
        >>> average.model.weight.item()  # 0.75 * 0 + 0.25 * 1
        0.25
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards ``model``'s current parameters."""
        for averaged, current in zip(self.model.parameters(), model.parameters(), strict=True):
            averaged.lerp_(current.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def synced(self, model: nn.Module) -> nn.Module:
        """The averaged model, with ``model``'s buffers and train/eval mode: the model to evaluate."""
        for averaged, current in zip(self.model.buffers(), model.buffers(), strict=True):
            averaged.copy_(current)
        return self.model.train(model.training)

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state)
