"""The Lipschitz recurrent unit (Erichson et al., ICLR 2021).

Continuous time, column convention (h is a column vector):

    dh/dt = α A h + σ(W h + U x + b)
    A = S_{β_A,γ_A}(M_A),   W = S_{β_W,γ_W}(M_W)
    S_{β,γ}(M) = (1 − β)(M + Mᵀ) + β(M − Mᵀ) − γ I

discretised with step ε by ``method``; forward Euler reads

    h⁺ = h + ε (α A h + σ(W h + U x + b)),

and the exponential Euler method (``method="exp_euler"``, ungated cells), which integrates the
linear part exactly, so that the step is stable wherever the ODE is (``|e^{ελ}| <= 1`` for every
eigenvalue λ of αA with ``Re λ <= 0``, whatever ε and however large ``‖A‖``),

    h⁺ = e^{εαA} h + ε φ₁(εαA) σ(W h + U x + b),   φ₁(z) = (e^z − 1) / z.

Gated variant (reference code): ``f(h) = (α A h + σ(W h + U x + b)) ⊙ sigmoid(W h + U_g x + b_g)``.
``α`` is the reference code's ablation factor: ``α = 0`` with ``β_W = 1`` is the
AntisymmetricRNN. Initialisation follows the reference: every entry of ``M_A`` and
``M_W`` is N(0, std = init_std / N) (divided by N, not √N); ``U`` and ``b`` use the
``nn.Linear`` default.

Example:
    >>> import torch
    >>> from lipschitz_rnn import LipschitzRNN
    >>> rnn = LipschitzRNN(1, 64, eps=0.03, beta=0.75, gamma=0.001, method="midpoint")
    >>> output, h_n = rnn(torch.randn(784, 8, 1))
    >>> output.shape, h_n.shape
    (torch.Size([784, 8, 64]), torch.Size([1, 8, 64]))
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from .._validation import check_bool, check_real
from ..integrators import Method
from ..layer import RecurrentLayer
from ..models import MODELS
from ..parametrizations import SymmetricSkew
from .base import ACTIVATIONS, ODECell, init_param, joined, linear_init_, register_bias

__all__ = ["LipschitzRNN", "LipschitzRNNCell"]


def _symmetric_skew(
    matrix: str, beta: float, gamma: float, own_beta: Optional[float], own_gamma: Optional[float]
) -> SymmetricSkew:
    """``S_{β,γ}`` for A or W: its own ``beta_A``/``gamma_A`` where given (named in errors), else the shared pair."""
    return SymmetricSkew(
        beta if own_beta is None else own_beta,
        gamma if own_gamma is None else own_gamma,
        names=("beta" if own_beta is None else f"beta_{matrix}", "gamma" if own_gamma is None else f"gamma_{matrix}"),
    )


class LipschitzRNNCell(ODECell):
    """One step of the Lipschitz recurrent unit: ``h_next = cell(x_t, h)``.

    Args:
        input_size: features per step, p.
        hidden_size: state size, N.
        eps: step size ε (> 0). Reference default 0.03.
        beta, gamma: β ∈ [0, 1] and γ ≥ 0 shared by A and W (reference: 0.75, 0.001).
        beta_A, gamma_A, beta_W, gamma_W: separate values; each overrides the shared one.
        method: ``euler``, ``midpoint`` (alias ``rk2``, what the reference runs), ``heun``, ``rk4``,
            or ``exp_euler`` (ungated cells, fixed step: no ``dt``; its two N×N step matrices are computed
            once per sequence; backends ``reference``, ``cpu`` and ``cuda-bptt``).
        init_std: M_A, M_W entries are N(0, (init_std / N)²). Reference default 0.1.
        alpha: factor on the linear term ``A h`` (ablation; 0 removes it).
        gated: multiply the vector field by ``sigmoid(W h + U_g x + b_g)``.
        nonlinearity: ``tanh`` (default), ``relu`` or ``identity`` (1-Lipschitz, monotone).
        bias: ``False`` drops ``b`` (and ``b_g``): the input enters as ``U x``, as with ``nn.RNN(bias=False)``.

    Read-only analysis API: ``A``, ``W`` (constructed N×N matrices), ``U`` (N×p), ``b`` (N, or ``None``
    without bias), ``eps``; gated cells also ``U_g``, ``b_g``.
    """

    semilinear = True  # dh/dt = αA h + σ(W h + U x + b): exp_euler applies (ungated cells)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        eps: float = 0.03,
        beta: float = 0.75,
        gamma: float = 0.001,
        beta_A: Optional[float] = None,
        gamma_A: Optional[float] = None,
        beta_W: Optional[float] = None,
        gamma_W: Optional[float] = None,
        method: Union[str, Method] = "euler",
        init_std: float = 0.1,
        alpha: float = 1.0,
        gated: bool = False,
        nonlinearity: str = "tanh",
        bias: bool = True,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(input_size, hidden_size, eps=eps, method=method)
        self.parametrize_A = _symmetric_skew("A", beta, gamma, beta_A, gamma_A)
        self.parametrize_W = _symmetric_skew("W", beta, gamma, beta_W, gamma_W)
        self.init_std = check_real("init_std", init_std, low=0.0)
        self.alpha = check_real("alpha", alpha)
        self.gated = check_bool("gated", gated)
        if self.gated and self.method.exponential:
            raise ValueError(
                f"method {self.method.name!r} needs dh/dt = L h + g(h); the gated cell multiplies the whole field "
                "by its gate (use euler, midpoint, heun or rk4)"
            )
        self.nonlinearity = ACTIVATIONS.canonical(nonlinearity)
        self._sigma = ACTIVATIONS.get(nonlinearity)

        factory = {"device": device, "dtype": dtype}
        N, p = hidden_size, input_size
        self.M_A = init_param(N, N, factory=factory)
        self.M_W = init_param(N, N, factory=factory)
        self.U = init_param(N, p, factory=factory)
        self.bias = register_bias(self, "b", N, bias, factory)
        if self.gated:
            self.U_g = init_param(N, p, factory=factory)
            register_bias(self, "b_g", N, self.bias, factory)
        self.reset_parameters()
        self.warn_if_step_unstable(self.alpha * self.A, "alpha*A")

    def reset_parameters(self) -> None:
        std = self.init_std / self.hidden_size
        with torch.no_grad():
            nn.init.normal_(self.M_A, 0.0, std)
            nn.init.normal_(self.M_W, 0.0, std)
            linear_init_(self.U, self.b)
            if self.gated:
                linear_init_(self.U_g, self.b_g)

    # -- analysis API ------------------------------------------------------------------
    @property
    def A(self) -> Tensor:
        """``S_{β_A,γ_A}(M_A)``, N×N, column convention."""
        return self.parametrize_A(self.M_A)

    @property
    def W(self) -> Tensor:
        """``S_{β_W,γ_W}(M_W)``, N×N, column convention."""
        return self.parametrize_W(self.M_W)

    @property
    def beta_A(self) -> float:
        return self.parametrize_A.beta

    @property
    def gamma_A(self) -> float:
        return self.parametrize_A.gamma

    @property
    def beta_W(self) -> float:
        return self.parametrize_W.beta

    @property
    def gamma_W(self) -> float:
        return self.parametrize_W.gamma

    # -- recurrence ----------------------------------------------------------------------
    def project_input(self, x: Tensor) -> Tensor:
        if self.gated:
            return nn.functional.linear(x, torch.cat([self.U, self.U_g]), joined(self.b, self.b_g))
        return nn.functional.linear(x, self.U, self.b)

    def recurrent_weights(self) -> tuple[Tensor, ...]:
        """``(A, W)``, built once per sequence; with ``exp_euler`` also ``[e^{εαA}; W]`` (2N × N) and ``εφ₁(εαA)``."""
        A, W = self.A, self.W
        if self.method.exponential:
            E, P = self.method.step_matrices(self.alpha * A, self.eps)
            return A, W, torch.cat([E, W]), P  # stacked: both products with h in one GEMM per step
        return A, W

    def parametrized_matrices(self) -> list[tuple[nn.Parameter, nn.Module]]:
        return [(self.M_A, self.parametrize_A), (self.M_W, self.parametrize_W)]

    def vector_field(self, h: Tensor, u: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        A, W = weights[:2]
        if self.gated:
            u, u_gate = u.chunk(2, dim=-1)
        z = h @ W.T
        f = self._sigma(z + u)
        if self.alpha:
            linear = h @ A.T
            f = f + (linear if self.alpha == 1.0 else self.alpha * linear)
        if self.gated:
            f = f * torch.sigmoid(z + u_gate)
        return f

    def exponential_step(self, u: Tensor, h: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        """``h⁺ = e^{εαA} h + εφ₁(εαA) σ(W h + u)``, with ``e^{εαA} h`` and ``W h`` from one GEMM."""
        stacked, P = weights[2:]
        linear, z = (h @ stacked.T).split(self.hidden_size, dim=-1)
        return linear + self._sigma(z + u) @ P.T

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, beta_A={self.beta_A}, gamma_A={self.gamma_A}, "
            f"beta_W={self.beta_W}, gamma_W={self.gamma_W}, alpha={self.alpha}, gated={self.gated}"
            + ("" if self.bias else ", bias=False")
        )


@MODELS.register("lipschitz", "lipschitz_rnn", "lipschitzrnn")
class LipschitzRNN(RecurrentLayer):
    """Lipschitz RNN layer with the ``torch.nn.RNN`` contract: ``output, h_n = rnn(x, h0)``.

    ``rnn.cells[l]`` is layer ``l``'s :class:`LipschitzRNNCell`; cell keyword arguments
    (``eps``, ``beta``, ``gamma``, ``beta_A`` ... ``method``, ``init_std``, ``alpha``,
    ``gated``, ``nonlinearity``, ``bias``) are documented there. Layer arguments: ``num_layers``,
    ``batch_first``, ``dropout`` (between layers), ``bidirectional`` (a reverse direction with cells of its
    own, ``rnn.reverse_cells``, as in ``nn.RNN``; see :mod:`lipschitz_rnn.layer`), ``backend``
    (``auto``, ``reference``, ...), ``check_inputs`` (reject NaN/Inf; turn off for CUDA-graph capture).
    Under ``torch.autocast`` the layer computes in its parameters' dtype (see :mod:`lipschitz_rnn._autocast`).

    Example:
        >>> import torch
        >>> rnn = LipschitzRNN(3, 32, num_layers=2, batch_first=True)
        >>> out, h_n = rnn(torch.randn(4, 50, 3), lengths=[50, 20, 7, 1])
        >>> out.shape, h_n.shape
        (torch.Size([4, 50, 32]), torch.Size([2, 4, 32]))

    ``x`` may be a ``torch.nn.utils.rnn.PackedSequence``, as for ``nn.RNN``: ``output`` is then
    packed like ``x``, and ``h0``/``h_n`` are in the original batch order (``batch_first``
    does not apply; see :mod:`lipschitz_rnn.layer`):

        >>> from torch.nn.utils.rnn import pack_padded_sequence
        >>> packed = pack_padded_sequence(torch.randn(4, 50, 3), [20, 50, 1, 7], batch_first=True, enforce_sorted=False)
        >>> out, h_n = rnn(packed)
        >>> out.data.shape, h_n.shape
        (torch.Size([78, 32]), torch.Size([2, 4, 32]))

    Bidirectional: outputs side by side, ``h_n`` as layer 0 forward, layer 0 reverse, layer 1 forward, ...

        >>> out, h_n = LipschitzRNN(3, 32, num_layers=2, bidirectional=True)(torch.randn(50, 4, 3))
        >>> out.shape, h_n.shape
        (torch.Size([50, 4, 64]), torch.Size([4, 4, 32]))
    """

    cell_class = LipschitzRNNCell
