"""Orthogonal RNNs: W constrained to the orthogonal group through a skew matrix.

    h⁺ = σ(W h + U x + b)
    Cayley (scoRNN):          W = (I + S)⁻¹ (I − S) D,   S = M − Mᵀ,  D = diag(±1)
    exponential (expRNN):     W = exp(M − Mᵀ)

σ is ``tanh`` or ``modrelu`` (σ(z) = sign(z) · relu(|z| + c), c learned per unit, as in
expRNN and scoRNN). The skew parameter starts block-diagonal with 2×2 rotations of random
angle (Henaff et al. 2016), so W starts as a random rotation.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .._validation import check_int
from ..layer import RecurrentLayer
from ..models import MODELS
from ..parametrizations import CayleyOrthogonal, ExpOrthogonal
from .base import RecurrentCell, StepSize, init_param, linear_init_, register_bias

__all__ = ["CayleyRNN", "CayleyRNNCell", "ExpRNN", "ExpRNNCell"]

_NONLINEARITIES = ("tanh", "modrelu")


class _OrthogonalRNNCell(RecurrentCell):
    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        parametrize_W: nn.Module,
        max_angle: float,
        nonlinearity: str,
        bias: bool,
        device: Optional[Union[str, torch.device]],
        dtype: Optional[torch.dtype],
    ) -> None:
        super().__init__(input_size, hidden_size)
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {_NONLINEARITIES}, got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.parametrize_W = parametrize_W
        self._max_angle = max_angle
        factory = {"device": device, "dtype": dtype}
        N, p = hidden_size, input_size
        self.M = init_param(N, N, factory=factory)
        self.U = init_param(N, p, factory=factory)
        self.bias = register_bias(self, "b", N, bias, factory)
        if nonlinearity == "modrelu":
            self.modrelu_bias = init_param(N, factory=factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.M.zero_()
            angles = torch.empty(self.hidden_size // 2).uniform_(-self._max_angle, self._max_angle)
            index = torch.arange(0, 2 * angles.numel(), 2)
            self.M[index, index + 1] = self._skew_entry(angles).to(self.M)
            linear_init_(self.U, self.b)
            if self.nonlinearity == "modrelu":
                nn.init.uniform_(self.modrelu_bias, -0.01, 0.01)

    def _skew_entry(self, angles: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def W(self) -> Tensor:
        return self.parametrize_W(self.M)

    def project_input(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.U, self.b)

    def recurrent_weights(self) -> tuple[Tensor]:
        return (self.W,)

    def parametrized_matrices(self) -> list[tuple[nn.Parameter, nn.Module]]:
        return [(self.M, self.parametrize_W)]

    def step(self, u: Tensor, h: Tensor, weights: tuple[Tensor, ...], eps: Optional[StepSize] = None) -> Tensor:
        (W,) = weights
        z = h @ W.T + u
        if self.nonlinearity == "tanh":
            return torch.tanh(z)
        return torch.sign(z) * torch.relu(z.abs() + self.modrelu_bias)


class CayleyRNNCell(_OrthogonalRNNCell):
    """Orthogonal RNN step with the scaled Cayley transform (scoRNN).

    ``num_negative``: how many diagonal entries of D are −1.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        num_negative: int = 0,
        nonlinearity: str = "tanh",
        bias: bool = True,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        check_int("hidden_size", hidden_size)
        super().__init__(
            input_size,
            hidden_size,
            CayleyOrthogonal(hidden_size, num_negative),
            math.pi / 2,
            nonlinearity,
            bias,
            device,
            dtype,
        )

    def _skew_entry(self, angles: Tensor) -> Tensor:
        # A 2×2 block [[0, s], [-s, 0]] maps to a rotation by 2·atan(s) under Cayley.
        return torch.tan(angles / 2)


class ExpRNNCell(_OrthogonalRNNCell):
    """Orthogonal RNN step with W = exp(M − Mᵀ) (expRNN)."""

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
        super().__init__(input_size, hidden_size, ExpOrthogonal(), math.pi, nonlinearity, bias, device, dtype)

    def _skew_entry(self, angles: Tensor) -> Tensor:
        # exp([[0, θ], [-θ, 0]]) is a rotation by θ; S = M − Mᵀ puts θ there when M[i, i+1] = θ.
        return angles


@MODELS.register("cayley", "cayley_rnn", "scornn", "calrnn")
class CayleyRNN(RecurrentLayer):
    """Orthogonal RNN with the Cayley parametrisation; see :class:`CayleyRNNCell`."""

    cell_class = CayleyRNNCell


@MODELS.register("exprnn", "exp_rnn", "exponential", "exponential_rnn")
class ExpRNN(RecurrentLayer):
    """Orthogonal RNN with the matrix-exponential parametrisation; see :class:`ExpRNNCell`."""

    cell_class = ExpRNNCell
