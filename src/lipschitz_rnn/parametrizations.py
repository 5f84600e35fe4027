"""Hidden-to-hidden matrices built from free parameters, in one place.

Each class is an ``nn.Module`` mapping a free square matrix ``M`` to the constructed
matrix, so it can be called directly (``SymmetricSkew(0.75, 0.001)(M)``) or attached with
``torch.nn.utils.parametrize.register_parametrization``. The cells call them once per
forward pass, never per time step. ``free_parameters(n)`` is how many of the n² entries of
``M`` the map keeps (the rank of its Jacobian): the skew-only maps keep n(n − 1)/2, which is
how the AntisymmetricRNN and expRNN papers count their parameters.

    S_{β,γ}(M) = (1 − β)(M + Mᵀ) + β(M − Mᵀ) − γ I          (Lipschitz RNN, no factor ½)
    β = 1:  M − Mᵀ − γ I, every eigenvalue on Re λ = −γ      (AntisymmetricRNN)
    Cayley:  (I + S)⁻¹ (I − S) D,  S = M − Mᵀ                (orthogonal)
    exp:     exp(M − Mᵀ)                                      (orthogonal)

Example:
    >>> import torch
    >>> A = SymmetricSkew(beta=1.0, gamma=0.5)(torch.randn(4, 4))
    >>> torch.allclose(torch.linalg.eigvals(A).real, torch.full((4,), -0.5), atol=1e-5)
    True
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._validation import check_beta, check_gamma, check_int

__all__ = ["CayleyOrthogonal", "ExpOrthogonal", "SymmetricSkew", "symmetric_skew"]


def symmetric_skew(M: Tensor, beta: float, gamma: float) -> Tensor:
    """``S_{β,γ}(M) = (1 − β)(M + Mᵀ) + β(M − Mᵀ) − γ I``."""
    Mt = M.transpose(-2, -1)
    S = (1.0 - beta) * (M + Mt) + beta * (M - Mt)
    if gamma:
        S = S - gamma * torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)
    return S


class SymmetricSkew(nn.Module):
    """``M ↦ S_{β,γ}(M)``: symmetric part scaled by 2(1 − β), skew part by 2β, shifted by −γ."""

    def __init__(self, beta: float, gamma: float, *, names: tuple[str, str] = ("beta", "gamma")) -> None:
        super().__init__()
        # ``names``: the caller's argument names (``beta_A``, ``gamma_W``, ...), so a range error names them
        self.beta = check_beta(names[0], beta)
        self.gamma = check_gamma(names[1], gamma)

    def forward(self, M: Tensor) -> Tensor:
        return symmetric_skew(M, self.beta, self.gamma)

    def free_parameters(self, n: int) -> int:
        """Dimension of the set of n×n matrices this map reaches: n² for 0 < β < 1; β = 1 keeps only
        the skew part, n(n − 1)/2; β = 0 only the symmetric part, n(n + 1)/2."""
        if self.beta == 1.0:
            return n * (n - 1) // 2
        if self.beta == 0.0:
            return n * (n + 1) // 2
        return n * n

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}"


def _at_least_float32(M: Tensor) -> Tensor:
    """``M`` in float32 when it is float16/bfloat16: the solve and the matrix exponential have no half-precision
    kernels on the CPU (and lose orthogonality in them), so the map runs in float32 and its result is cast back."""
    return M.float() if M.dtype in (torch.float16, torch.bfloat16) else M


class CayleyOrthogonal(nn.Module):
    """``M ↦ (I + S)⁻¹ (I − S) D`` with ``S = M − Mᵀ`` and ``D = diag(±1)``.

    The first ``num_negative`` diagonal entries of ``D`` are −1 (scoRNN); the result is
    orthogonal for every ``M``.
    """

    def __init__(self, size: int, num_negative: int = 0) -> None:
        super().__init__()
        check_int("num_negative", num_negative, minimum=0)
        if num_negative > size:
            raise ValueError(f"num_negative must be <= hidden_size ({size}), got {num_negative}")
        diag = torch.ones(size)
        diag[:num_negative] = -1.0
        self.register_buffer("D", diag, persistent=False)

    def forward(self, M: Tensor) -> Tensor:
        M32 = _at_least_float32(M)
        S = M32 - M32.transpose(-2, -1)
        eye = torch.eye(M.shape[-1], dtype=M32.dtype, device=M.device)
        return (torch.linalg.solve(eye + S, eye - S) * self.D.to(M32.dtype)).to(M.dtype)

    def free_parameters(self, n: int) -> int:
        """n(n − 1)/2: only the skew part of ``M`` reaches the result."""
        return n * (n - 1) // 2


class ExpOrthogonal(nn.Module):
    """``M ↦ exp(M − Mᵀ)``, the matrix exponential of a skew matrix (expRNN)."""

    def forward(self, M: Tensor) -> Tensor:
        M32 = _at_least_float32(M)
        return torch.linalg.matrix_exp(M32 - M32.transpose(-2, -1)).to(M.dtype)

    def free_parameters(self, n: int) -> int:
        """n(n − 1)/2: only the skew part of ``M`` reaches the result."""
        return n * (n - 1) // 2
