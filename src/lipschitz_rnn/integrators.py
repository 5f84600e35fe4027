"""Explicit Runge–Kutta steps for ``dh/dt = f(h)`` with the input held constant over a step.

Each method is a Butcher tableau; the step and its linear stability function
``R(z) = 1 + z bᵀ (I − z 𝔄)⁻¹ 𝟙`` both come from that one table, so the stability tools and
the recurrences cannot disagree.

    euler     h⁺ = h + ε f(h)
    midpoint  h⁺ = h + ε f(h + ε/2 · f(h))                 (alias rk2: what the reference code runs)
    heun      h⁺ = h + ε/2 · (f(h) + f(h + ε f(h)))         (explicit trapezoid)
    rk4       the classical fourth-order method

and one exponential method, for semilinear fields ``f(h) = L h + g(h)`` with ``L`` fixed:

    exp_euler h⁺ = e^{εL} h + ε φ₁(εL) g(h),   φ₁(z) = (e^z − 1) / z

It integrates the linear part exactly, so ``R(z) = e^z`` and the step is stable wherever the
ODE is (``|e^{ελ}| <= 1`` iff ``Re λ <= 0``, for every ε): no step size leaves its region.

Example:
    >>> m = get_method("rk2")
    >>> m.name, m.order, m.stability_coefficients
    ('midpoint', 2, (1.0, 1.0, 0.5))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence, Union

import torch
from torch import Tensor

from ._validation import check_eps
from .registry import Registry

__all__ = ["METHODS", "ExplicitRK", "ExponentialEuler", "Method", "get_method"]

StepSize = Union[float, Tensor]


@dataclass(frozen=True)
class ExplicitRK:
    """An explicit Runge–Kutta method given by its Butcher tableau (``a`` strictly lower)."""

    name: str
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    #: whether the step needs the field's linear part apart (``ExponentialEuler``); never for these
    exponential: ClassVar[bool] = False

    @property
    def stages(self) -> int:
        return len(self.b)

    def step(self, f: Callable[[Tensor], Tensor], h: Tensor, eps: StepSize) -> Tensor:
        """One step ``h -> h⁺`` of size ``eps`` (a float, or a tensor broadcasting against h)."""
        ks: list[Tensor] = []
        for row in self.a:
            stage = h
            for a_ij, k_j in zip(row, ks):
                if a_ij:
                    stage = stage + (eps * a_ij) * k_j
            ks.append(f(stage))
        increment = None
        for b_i, k_i in zip(self.b, ks):
            if b_i:
                term = k_i if b_i == 1.0 else b_i * k_i
                increment = term if increment is None else increment + term
        return h + eps * increment

    @property
    def stability_coefficients(self) -> tuple[float, ...]:
        """Coefficients ``c_k`` of ``R(z) = Σ_k c_k z^k`` (a polynomial for explicit methods).

        ``c_0 = 1`` and ``c_{k+1} = bᵀ 𝔄ᵏ 𝟙``, since ``(I − z𝔄)⁻¹ = Σ_k zᵏ 𝔄ᵏ`` for nilpotent 𝔄.
        """
        s = self.stages
        full = [[0.0] * s for _ in range(s)]
        for i, row in enumerate(self.a):
            for j, a_ij in enumerate(row):
                full[i][j] = float(a_ij)
        coeffs = [1.0]
        vec = [1.0] * s  # 𝔄ᵏ 𝟙, starting at k = 0
        for _ in range(s):
            coeffs.append(sum(b_i * v_i for b_i, v_i in zip(self.b, vec)))
            vec = [sum(full[i][j] * vec[j] for j in range(s)) for i in range(s)]
        while len(coeffs) > 1 and coeffs[-1] == 0.0:
            coeffs.pop()
        return tuple(coeffs)

    def stability_function(self, z: Union[complex, Sequence[complex], Tensor]) -> Tensor:
        """``R(z)`` evaluated elementwise (complex128 tensor). Stable where ``|R(z)| <= 1``."""
        z = torch.as_tensor(z, dtype=torch.complex128)
        out = torch.zeros_like(z)
        for c in reversed(self.stability_coefficients):  # Horner
            out = out * z + c
        return out


#: ``step_matrices`` halves the step until ``‖δL‖₁ <= 1/2``, where the Taylor series of φ₁ converges fast
_TAYLOR_RADIUS = 0.5


@dataclass(frozen=True)
class ExponentialEuler:
    """The exponential Euler method for ``dh/dt = L h + g(h)``: ``h⁺ = e^{εL} h + ε φ₁(εL) g(h)``.

    Exact for the linear part (and for constant ``g``), so the linear stability function is
    ``R(z) = e^z``: a mode of ``L`` is damped by the step exactly when it is damped by the ODE.
    A cell computes ``step_matrices(L, ε)`` once per sequence and, at every time step, for row-vector
    batches, ``h⁺ = h E.T + g(h) P.T`` (:meth:`LipschitzRNNCell.exponential_step`).

        >>> import torch
        >>> m = get_method("exp_euler")
        >>> E, P = m.step_matrices(torch.tensor([[-2.0]], dtype=torch.float64), 0.5)
        >>> round(float(E), 6), round(float(P), 6)  # e^{-1}, (1 - e^{-1}) / 2
        (0.367879, 0.31606)
    """

    name: str = "exp_euler"
    order: int = 1
    stages: int = 1
    exponential: ClassVar[bool] = True

    def step_matrices(self, L: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        """``(e^{εL}, ε φ₁(εL))`` by scaling and squaring the Taylor series of ``φ₁``.

        With ``δ = ε / 2^s`` and ``s`` the fewest halvings that bring ``‖δL‖₁`` to at most 1/2:

            φ₁(δL) ≈ Σ_{k ≤ m} (δL)^k / (k + 1)!          (Horner; m = 12 in float64, 8 otherwise)
            E(δ) = I + δL φ₁(δL),   P(δ) = δ φ₁(δL)
            E(2δ) = E(δ)²,          P(2δ) = P(δ) + E(δ) P(δ)     (s times: the flow's semigroup law)

        The truncated terms are below ``0.5^{m+1} / (m+1)!`` of the sum (2e-14, 5e-9), under the
        dtype's rounding. No inverse of ``L`` (which may be singular), and only N × N products:
        ``torch.linalg.matrix_exp`` of the augmented ``[[εL, εI], [0, 0]]`` gives the same two blocks,
        at 8 times the cost per product and, in the backward, a 4N × 4N exponential (8.6 and 10.4 times
        slower forward and backward at N = 128 and 256 on 2 CPU cores, ``benchmarks/step_matrices.py``).
        Differentiable by autograd.
        """
        if L.dim() != 2 or L.shape[0] != L.shape[1]:
            raise ValueError(f"L must be a square matrix, got shape {tuple(L.shape)}")
        eps = check_eps("eps", eps)
        n = L.shape[-1]
        Z = eps * L
        with torch.no_grad():
            norm = float(torch.linalg.matrix_norm(Z, 1))
        # a non-finite L (a diverged run) gives non-finite matrices, as matrix_exp would, not an exception here
        halvings = max(0, math.ceil(math.log2(norm / _TAYLOR_RADIUS))) if 0 < norm < math.inf else 0
        Z = Z / 2**halvings
        identity = torch.eye(n, dtype=L.dtype, device=L.device)
        degree = 12 if L.dtype == torch.float64 else 8
        phi = identity
        for k in range(degree + 1, 1, -1):  # φ₁ = I + Z/2 (I + Z/3 (I + …))
            phi = torch.addmm(identity, Z, phi, alpha=1.0 / k)
        E = torch.addmm(identity, Z, phi)
        P = phi * (eps / 2**halvings)
        for _ in range(halvings):
            P = torch.addmm(P, E, P)
            E = E @ E
        return E, P

    def stability_function(self, z: Union[complex, Sequence[complex], Tensor]) -> Tensor:
        """``R(z) = e^z`` elementwise (complex128 tensor): ``|R(z)| <= 1`` exactly where ``Re z <= 0``."""
        return torch.exp(torch.as_tensor(z, dtype=torch.complex128))


#: an integration method: an explicit Runge–Kutta tableau, or the exponential Euler method
Method = Union[ExplicitRK, ExponentialEuler]

METHODS: Registry[Method] = Registry("integration method")
METHODS.add("euler", ExplicitRK("euler", a=((),), b=(1.0,), order=1), "forward_euler")
METHODS.add("midpoint", ExplicitRK("midpoint", a=((), (0.5,)), b=(0.0, 1.0), order=2), "rk2")
METHODS.add("heun", ExplicitRK("heun", a=((), (1.0,)), b=(0.5, 0.5), order=2), "trapezoid")
METHODS.add(
    "rk4",
    ExplicitRK(
        "rk4",
        a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        b=(1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0),
        order=4,
    ),
)


METHODS.add("exp_euler", ExponentialEuler(), "exponential_euler")


def get_method(name: Union[str, Method]) -> Method:
    """Look up an integration method by name or alias (``euler``, ``midpoint``/``rk2``, ``heun``, ``rk4``,
    ``exp_euler``)."""
    if isinstance(name, (ExplicitRK, ExponentialEuler)):
        return name
    if not isinstance(name, str):
        raise TypeError(f"method must be a str, got {type(name).__name__}")
    return METHODS.get(name)
