"""Lanczos with full reorthogonalisation on a symmetric operator given only by its products.

Everything is batched over rows: ``matvec`` maps ``(b, d)`` to ``(b, d)``, one independent
symmetric operator per row (``b = 1`` for the parameter Hessian; one row per sample for
the input Hessian; one row per random start for stochastic Lanczos quadrature). All
arithmetic is float64.

After ``m`` steps, ``H Q = Q T + r e_mᵀ`` with ``Q`` orthonormal ``(d, m)`` and ``T``
tridiagonal. Ritz values θ (eigenvalues of T) approximate H's extreme eigenvalues first;
the Ritz pair ``(θ_i, Q s_i)`` has residual ``‖H y − θ y‖ = ‖r‖·|s_{m,i}|``, a bound on the
distance from θ_i to H's spectrum. When ``r`` vanishes (an invariant subspace: a low-rank or
repeated spectrum) the run continues from a fresh random vector orthogonal to ``Q``, so
repeated eigenvalues show up with their multiplicity and ``d`` steps are exact.

Example:
    >>> import torch
    >>> H = torch.diag(torch.tensor([-2.0, 1.0, 3.0], dtype=torch.float64))
    >>> run = lanczos(lambda v: v @ H, torch.ones(1, 3, dtype=torch.float64), max_steps=3)
    >>> [round(t, 6) for t in run.ritz()[0][0].tolist()]
    [-2.0, 1.0, 3.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = ["LanczosRun", "gaussian_density", "lanczos"]

MatVec = Callable[[Tensor], Tensor]


@dataclass
class LanczosRun:
    """The tridiagonal matrices and basis of a (batched) Lanczos run."""

    alphas: Tensor  # (b, m): T's diagonal
    offdiag: Tensor  # (b, m - 1): T's off-diagonal (0 where the run restarted)
    residual_norm: Tensor  # (b,): ‖r‖ after the last step
    basis: Tensor  # (m, b, d): the Lanczos vectors
    matvecs: int  # operator applications (each one (b, d) product)

    @property
    def steps(self) -> int:
        return self.alphas.shape[1]

    def tridiagonal(self) -> Tensor:
        """``T``, ``(b, m, m)``."""
        return (
            torch.diag_embed(self.alphas)
            + torch.diag_embed(self.offdiag, offset=1)
            + torch.diag_embed(self.offdiag, offset=-1)
        )

    def ritz(self) -> tuple[Tensor, Tensor, Tensor]:
        """Ritz values ``(b, m)`` ascending, T's eigenvectors ``(b, m, m)``, residual bounds ``(b, m)``."""
        theta, s = torch.linalg.eigh(self.tridiagonal())
        residuals = self.residual_norm[:, None] * s[:, -1, :].abs()
        return theta, s, residuals

    def ritz_vectors(self, s: Tensor) -> Tensor:
        """``Q s`` for coefficient columns ``s`` ``(b, m, k)`` -> ``(b, d, k)``."""
        return torch.einsum("mbd,bmk->bdk", self.basis, s)


def lanczos(
    matvec: MatVec,
    start: Tensor,
    *,
    max_steps: int,
    tol: Optional[float] = None,
    k_largest: int = 0,
    k_smallest: int = 0,
    generator: Optional[torch.Generator] = None,
    breakdown_tol: float = 1e-10,
) -> LanczosRun:
    """Run up to ``max_steps`` Lanczos steps from the rows of ``start`` ``(b, d)``.

    With ``tol``, stop as soon as, in every row, the ``k_largest`` largest and ``k_smallest``
    smallest Ritz values have residual bounds ``<= tol * max|θ|`` (relative to the estimated
    spectral norm, so eigenvalues near zero are judged on the operator's scale). Without
    ``tol`` run exactly ``min(max_steps, d)`` steps (quadrature). ``breakdown_tol`` (relative
    to the norm estimate) decides when the Krylov space is exhausted and a restart is due.
    """
    if start.dim() != 2:
        raise ValueError(f"start must have shape (rows, dim), got {tuple(start.shape)}")
    start = start.to(torch.float64)
    rows, dim = start.shape
    steps_limit = min(max_steps, dim)
    if steps_limit < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    q = _normalise(start)
    if not bool(torch.isfinite(q).all()) or bool((start.norm(dim=1) == 0).any()):
        raise ValueError("start vectors must be finite and non-zero")

    basis = torch.empty(steps_limit, rows, dim, dtype=torch.float64, device=q.device)
    basis[0] = q
    alphas: list[Tensor] = []
    offdiag: list[Tensor] = []
    beta_prev = torch.zeros(rows, dtype=torch.float64, device=q.device)
    q_prev = torch.zeros_like(q)
    scale = torch.zeros(rows, dtype=torch.float64, device=q.device)
    for step in range(steps_limit):
        w = matvec(q).to(torch.float64)
        if w.shape != q.shape:
            raise ValueError(f"matvec must map {tuple(q.shape)} to the same shape, got {tuple(w.shape)}")
        alpha = (q * w).sum(dim=1)
        w = w - alpha[:, None] * q - beta_prev[:, None] * q_prev
        w = _orthogonalise(w, basis[: step + 1])
        beta = w.norm(dim=1)
        alphas.append(alpha)
        scale = torch.maximum(scale, torch.maximum(alpha.abs(), beta))
        run = LanczosRun(
            torch.stack(alphas, 1), _stack_or_empty(offdiag, rows, q), beta, basis[: step + 1], matvecs=step + 1
        )
        if step + 1 == steps_limit or (tol is not None and _wanted_converged(run, tol, k_largest, k_smallest)):
            return run
        # An exhausted Krylov space (beta ~ 0): continue from a random vector orthogonal to
        # everything so far, decoupled in T (off-diagonal 0), instead of dividing by ~0.
        exhausted = beta <= breakdown_tol * torch.clamp(scale, min=torch.finfo(torch.float64).tiny)
        next_q = w / torch.where(exhausted, torch.ones_like(beta), beta)[:, None]
        coupling = beta
        if bool(exhausted.any()):
            fresh = torch.randn(rows, dim, generator=generator, dtype=torch.float64).to(q.device)
            fresh = _normalise(_orthogonalise(_normalise(fresh), basis[: step + 1]))
            next_q = torch.where(exhausted[:, None], fresh, next_q)
            coupling = torch.where(exhausted, torch.zeros_like(beta), beta)
        offdiag.append(coupling)
        q_prev, q, beta_prev = q, next_q, coupling
        basis[step + 1] = q
    raise AssertionError("unreachable")


def _wanted_converged(run: LanczosRun, tol: float, k_largest: int, k_smallest: int) -> bool:
    if run.steps < k_largest + k_smallest:
        return False
    theta, _, residuals = run.ritz()
    norm = theta.abs().amax(dim=1, keepdim=True)
    ok = residuals <= tol * norm
    wanted = []
    if k_smallest:
        wanted.append(ok[:, :k_smallest])
    if k_largest:
        wanted.append(ok[:, -k_largest:])
    return bool(torch.cat(wanted, dim=1).all()) if wanted else False


def _orthogonalise(w: Tensor, q: Tensor) -> Tensor:
    """Classical Gram–Schmidt against all Lanczos vectors ``q`` ``(j, b, d)``, twice ("twice is enough")."""
    for _ in range(2):
        w = w - torch.einsum("jb,jbd->bd", torch.einsum("jbd,bd->jb", q, w), q)
    return w


def _normalise(v: Tensor) -> Tensor:
    return v / v.norm(dim=1, keepdim=True)


def _stack_or_empty(values: list[Tensor], rows: int, like: Tensor) -> Tensor:
    if values:
        return torch.stack(values, 1)
    return torch.zeros(rows, 0, dtype=torch.float64, device=like.device)


def gaussian_density(nodes: Tensor, weights: Tensor, grid: Tensor, sigma: float) -> Tensor:
    """``φ(t) = mean_r Σ_i w_ri · N(t; θ_ri, σ²)`` on ``grid``; nodes, weights ``(runs, m)``.

    Each run's weights sum to one, so φ integrates to one (up to the grid's coverage).
    """
    if sigma <= 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be > 0 and finite, got {sigma}")
    z = (grid[:, None, None] - nodes[None]) / sigma
    kernel = torch.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))
    return (kernel * weights[None]).sum(dim=2).mean(dim=1)
