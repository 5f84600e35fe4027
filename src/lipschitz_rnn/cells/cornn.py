"""coRNN: coupled oscillatory RNN (Rusch & Mishra, ICLR 2021).

Second-order ODE ``y'' = σ(W y + 𝒲 y' + V x + b) − γ y − ε_d y'`` with ``z = y'``,
discretised by the paper's IMEX scheme with step Δt:

    z⁺ = z + Δt (σ(W y + 𝒲 z + V x + b) − γ y − ε_d z)
    y⁺ = y + Δt z⁺

The carried state is ``[y, z]`` (size 2N); the per-step output is ``y``. Arguments map to
the paper's as ``eps`` = Δt, ``gamma`` = γ, ``damping`` = ε_d (its sMNIST defaults:
0.042, 2.7, 4.7). Weights use the ``nn.Linear`` default initialisation.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from .._validation import check_eps, check_real
from ..layer import RecurrentLayer
from ..models import MODELS
from .base import RecurrentCell, StepSize, init_param, linear_init_, register_bias

__all__ = ["CoRNN", "CoRNNCell"]


class CoRNNCell(RecurrentCell):
    """One coRNN step on the state ``[y, z]``."""

    continuous_time = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        eps: float = 0.042,
        gamma: float = 2.7,
        damping: float = 4.7,
        bias: bool = True,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.eps = check_eps("eps", eps)
        self.gamma = check_real("gamma", gamma, low=0.0)
        self.damping = check_real("damping", damping, low=0.0)
        factory = {"device": device, "dtype": dtype}
        N, p = hidden_size, input_size
        self.W = init_param(N, N, factory=factory)
        self.W_z = init_param(N, N, factory=factory)
        self.U = init_param(N, p, factory=factory)
        self.bias = register_bias(self, "b", N, bias, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            linear_init_(self.W, None)
            linear_init_(self.W_z, None)
            linear_init_(self.U, self.b)

    @property
    def state_size(self) -> int:
        return 2 * self.hidden_size

    def project_input(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.U, self.b)

    def recurrent_weights(self) -> tuple[Tensor, Tensor]:
        return self.W, self.W_z

    def step(self, u: Tensor, h: Tensor, weights: tuple[Tensor, ...], eps: Optional[StepSize] = None) -> Tensor:
        W, W_z = weights
        dt = self.eps if eps is None else eps
        y, z = h.chunk(2, dim=-1)
        z = z + dt * (torch.tanh(y @ W.T + z @ W_z.T + u) - self.gamma * y - self.damping * z)
        y = y + dt * z
        return torch.cat([y, z], dim=-1)

    def output(self, state: Tensor) -> Tensor:
        return state[..., : self.hidden_size]

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, eps={self.eps}, gamma={self.gamma}, damping={self.damping}" + (
            "" if self.bias else ", bias=False"
        )


@MODELS.register("cornn", "coupled_oscillatory")
class CoRNN(RecurrentLayer):
    """coRNN layer; ``h0``/``h_n`` hold ``[y, z]`` (state size 2N), ``output`` holds ``y``."""

    cell_class = CoRNNCell
