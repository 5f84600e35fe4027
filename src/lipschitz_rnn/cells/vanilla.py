"""Baselines without structure on W: the vanilla RNN and the residual RNN.

    vanilla:   h⁺ = σ(W h + U x + b)
    residual:  h⁺ = h + ε tanh(W h + U x + b)      (forward Euler on dh/dt = tanh(W h + U x + b))

All weights use PyTorch's ``nn.RNN`` initialisation, uniform(±1/√N).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from ..integrators import ExplicitRK
from ..layer import RecurrentLayer
from ..models import MODELS
from .base import ACTIVATIONS, ODECell, RecurrentCell, StepSize, init_param, register_bias

__all__ = ["ResidualRNN", "ResidualRNNCell", "VanillaRNN", "VanillaRNNCell"]


class _FreeMatrixWeights(nn.Module):
    """Shared parameters of the two cells: free W (N×N), U (N×p), b (N)."""

    def _make_parameters(self, input_size: int, hidden_size: int, bias: bool, device, dtype) -> None:
        factory = {"device": device, "dtype": dtype}
        self.W = init_param(hidden_size, hidden_size, factory=factory)
        self.U = init_param(hidden_size, input_size, factory=factory)
        self.bias = register_bias(self, "b", hidden_size, bias, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = self.hidden_size**-0.5
        with torch.no_grad():
            for p in (self.W, self.U, self.b):
                if p is not None:
                    nn.init.uniform_(p, -bound, bound)

    def project_input(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.U, self.b)

    def recurrent_weights(self) -> tuple[Tensor]:
        return (self.W,)


class VanillaRNNCell(_FreeMatrixWeights, RecurrentCell):
    """``h⁺ = σ(W h + U x + b)`` (Elman RNN), σ = tanh by default."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        nonlinearity: str = "tanh",
        bias: bool = True,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        RecurrentCell.__init__(self, input_size, hidden_size)
        self.nonlinearity = ACTIVATIONS.canonical(nonlinearity)
        self._sigma = ACTIVATIONS.get(nonlinearity)
        self._make_parameters(input_size, hidden_size, bias, device, dtype)

    def step(self, u: Tensor, h: Tensor, weights: tuple[Tensor, ...], eps: Optional[StepSize] = None) -> Tensor:
        (W,) = weights
        return self._sigma(h @ W.T + u)


class ResidualRNNCell(_FreeMatrixWeights, ODECell):
    """``h⁺ = h + ε tanh(W h + U x + b)``: a continuous-time RNN with no structure on W."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        eps: float = 0.03,
        method: Union[str, ExplicitRK] = "euler",
        bias: bool = True,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        ODECell.__init__(self, input_size, hidden_size, eps=eps, method=method)
        self._make_parameters(input_size, hidden_size, bias, device, dtype)

    def vector_field(self, h: Tensor, u: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        (W,) = weights
        return torch.tanh(h @ W.T + u)


@MODELS.register("vanilla", "rnn", "simple_rnn", "tanh_rnn")
class VanillaRNN(RecurrentLayer):
    """Elman RNN through this library's recurrence (compare ``torch.nn.RNN``)."""

    cell_class = VanillaRNNCell


@MODELS.register("residual", "residual_rnn", "resrnn")
class ResidualRNN(RecurrentLayer):
    """Residual (forward-Euler) RNN with an unconstrained W."""

    cell_class = ResidualRNNCell
