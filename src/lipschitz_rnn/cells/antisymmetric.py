"""AntisymmetricRNN (Chang, Chen, Haber & Chi, ICLR 2019).

    W = M − Mᵀ − γ I                                   (= S_{1,γ}(M))
    plain:  h⁺ = h + ε tanh(W h + U x + b)
    gated:  h⁺ = h + ε sigmoid(W h + U_g x + b_g) ⊙ tanh(W h + U x + b)

One shared matrix W for the candidate and the gate. Initialisation as in the paper:
input weights N(0, 1/p), M ~ N(0, σ_w²/N) with σ_w = ``init_std``, biases 0. ``method``
defaults to forward Euler (the paper's); other Runge–Kutta methods integrate the same
vector field. The gate's stability argument is heuristic (its Jacobian's diagonal can be
negative).

Example:
    >>> import torch
    >>> from lipschitz_rnn import AntisymmetricRNN
    >>> rnn = AntisymmetricRNN(1, 128, eps=0.01, gamma=0.1, gated=True)
    >>> rnn(torch.randn(100, 2, 1))[0].shape
    torch.Size([100, 2, 128])
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from .._validation import check_bool, check_real
from ..integrators import ExplicitRK
from ..layer import RecurrentLayer
from ..models import MODELS
from ..parametrizations import SymmetricSkew
from .base import ODECell, init_param, joined, register_bias

__all__ = ["AntisymmetricRNN", "AntisymmetricRNNCell"]


class AntisymmetricRNNCell(ODECell):
    """One AntisymmetricRNN step. Analysis API: ``W``, ``U``, ``b``, ``eps`` (gated: ``U_g``, ``b_g``).

    Args:
        eps: step size ε (paper grid 0.01, 0.1, 1).
        gamma: diffusion γ ≥ 0 (paper grid 0.001, 0.01, 0.1, 1).
        init_std: σ_w; M entries are N(0, σ_w²/N) (paper grid 0, 1, 2, 4, 8, 16).
        gated: the gated variant.
        method: integrator for ``dh/dt = f(h)``; ``euler`` is the paper's update.
        bias: ``False`` drops ``b`` and ``b_g`` (they are then ``None``), as ``nn.RNN(bias=False)``.

    Defaults (ε = 0.01, γ = 0.1, σ_w = 1) are from the paper's grids and keep Euler stable
    for the initial W: an eigenvalue ``−γ + iω`` needs ``ε ω² < 2γ − ε γ²``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        eps: float = 0.01,
        gamma: float = 0.1,
        init_std: float = 1.0,
        gated: bool = False,
        method: Union[str, ExplicitRK] = "euler",
        bias: bool = True,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(input_size, hidden_size, eps=eps, method=method)
        self.parametrize_W = SymmetricSkew(beta=1.0, gamma=gamma)
        self.init_std = check_real("init_std", init_std, low=0.0)
        self.gated = check_bool("gated", gated)
        factory = {"device": device, "dtype": dtype}
        N, p = hidden_size, input_size
        self.M = init_param(N, N, factory=factory)
        self.U = init_param(N, p, factory=factory)
        self.bias = register_bias(self, "b", N, bias, factory)
        if self.gated:
            self.U_g = init_param(N, p, factory=factory)
            register_bias(self, "b_g", N, self.bias, factory)
        self.reset_parameters()
        self.warn_if_step_unstable(self.W, "W")

    def reset_parameters(self) -> None:
        with torch.no_grad():
            nn.init.normal_(self.M, 0.0, self.init_std / self.hidden_size**0.5)
            for U, b in [(self.U, self.b)] + ([(self.U_g, self.b_g)] if self.gated else []):
                nn.init.normal_(U, 0.0, 1.0 / self.input_size**0.5)
                if b is not None:
                    nn.init.zeros_(b)

    @property
    def gamma(self) -> float:
        return self.parametrize_W.gamma

    @property
    def W(self) -> Tensor:
        """``M − Mᵀ − γ I``, N×N, column convention."""
        return self.parametrize_W(self.M)

    def project_input(self, x: Tensor) -> Tensor:
        if self.gated:
            return nn.functional.linear(x, torch.cat([self.U, self.U_g]), joined(self.b, self.b_g))
        return nn.functional.linear(x, self.U, self.b)

    def recurrent_weights(self) -> tuple[Tensor]:
        return (self.W,)

    def parametrized_matrices(self) -> list[tuple[nn.Parameter, nn.Module]]:
        return [(self.M, self.parametrize_W)]

    def vector_field(self, h: Tensor, u: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        (W,) = weights
        z = h @ W.T
        if not self.gated:
            return torch.tanh(z + u)
        u, u_gate = u.chunk(2, dim=-1)
        return torch.sigmoid(z + u_gate) * torch.tanh(z + u)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}, gated={self.gated}" + ("" if self.bias else ", bias=False")


@MODELS.register("antisymmetric", "antisymmetric_rnn", "asymrnn", "asr")
class AntisymmetricRNN(RecurrentLayer):
    """AntisymmetricRNN layer with the ``torch.nn.RNN`` contract; ``gated=True`` for the gated unit.

    Cell arguments (``eps``, ``gamma``, ``init_std``, ``gated``, ``method``, ``bias``): see
    :class:`AntisymmetricRNNCell`; layer arguments: see :class:`LipschitzRNN`.
    """

    cell_class = AntisymmetricRNNCell


@MODELS.register("antisymmetric_gated", "gated_antisymmetric", "gated_asr")
class GatedAntisymmetricRNN(AntisymmetricRNN):
    """``AntisymmetricRNN(..., gated=True)``, registered under its own name for configs."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, **kwargs) -> None:
        if kwargs.pop("gated", True) is not True:
            raise ValueError("GatedAntisymmetricRNN is always gated; use AntisymmetricRNN for gated=False")
        super().__init__(input_size, hidden_size, num_layers, gated=True, **kwargs)
