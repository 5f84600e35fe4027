"""Stability certificates of a Lipschitz recurrent unit, reported as numbers (margins), not asserted.

For ``dh/dt = A h + σ(W h + U x + b)`` with σ L-Lipschitz and monotone (tanh: L = 1):

* spectral abscissa ``max Re λ`` of A and of W, ``λ_max(A_sym)`` with ``A_sym = (A + Aᵀ)/2``,
  ``‖A‖₂`` and ``‖W‖₂``;
* **C1** (Lyapunov / contraction) margin ``m = −λ_max(A_sym) − L‖W‖₂``; ``m > 0`` means any
  two trajectories driven by the same input converge at rate ``m``;
* **C2** (Kalman–Yakubovich–Popov form, where it applies: W symmetric): ``W ≺ 0`` and
  ``AᵀW + WᵀA ≻ 0``, with ``A_sym ≺ 0`` and W non-singular;
* the **Bendixson box** of A and W: every eigenvalue of X lies in
  ``Re λ ∈ [λ_min(X_sym), λ_max(X_sym)]``, ``|Im λ| ≤ ρ(X_skew)``; for ``X = S_{β,γ}(M)`` this is
  ``[(1−β)λ_min(M+Mᵀ) − γ, (1−β)λ_max(M+Mᵀ) − γ] × [−β ρ(M−Mᵀ), β ρ(M−Mᵀ)]``;
* the **discrete check**: the linearised vector field is ``J = A + D W`` with
  ``D = diag(σ′) ∈ [0, L]``; ``max |R(ε λ(J))|`` for the integrator's stability function R,
  at ``D = 0``, ``D = L·I`` and sampled diagonals;
* the **Euler contraction bound** of the whole nonlinear step,
  ``‖I + εA + εDW‖₂ ≤ sqrt(1 − 2εa + ε²n²) + εLw`` with ``a = −λ_max(A_sym)``, ``n = ‖A‖₂``,
  ``w = ‖W‖₂``; below 1 means one Euler step contracts.

Example:
    >>> from lipschitz_rnn import LipschitzRNNCell
    >>> from lipschitz_rnn.stability import stability_report
    >>> report = stability_report(LipschitzRNNCell(1, 16, beta=1.0, gamma=0.5))
    >>> round(report.lambda_max_A_sym, 6)
    -0.5
    >>> sorted(report.to_dict())[:3]
    ['alpha', 'bendixson', 'c1']
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from ._validation import check_eps, check_finite, check_real
from .integrators import METHODS, Method, get_method

__all__ = [
    "StabilityReport",
    "certified_cells",
    "plot_eigenvalues",
    "spectral_numbers",
    "stability_report",
    "stability_reports",
    "step_amplifications",
]


@dataclass
class StabilityReport:
    """Every certificate for one (A, W, ε, method). ``to_dict()`` is JSON-able; ``str()`` reads well."""

    hidden_size: int
    method: Optional[str]
    eps: Optional[float]
    alpha: float
    lipschitz_constant: float
    gated: bool
    spectral_abscissa_A: float
    spectral_abscissa_W: float
    lambda_max_A_sym: float
    norm_A: float
    norm_W: float
    c1: dict[str, Any]
    c2: dict[str, Any]
    bendixson: dict[str, dict[str, Any]]
    discrete: Optional[dict[str, Any]]
    euler_contraction: Optional[dict[str, Any]]
    eigenvalues: dict[str, list[list[float]]] = field(repr=False)

    def to_dict(self, include_eigenvalues: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not include_eigenvalues:
            out.pop("eigenvalues")
        return out

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(**kwargs), indent=2)

    def __str__(self) -> str:
        yes = {True: "yes", False: "no"}
        lines = [
            f"Stability report (N={self.hidden_size}, method={self.method}, eps={self.eps}, alpha={self.alpha}"
            f"{', gated: linearisation ignores the gate' if self.gated else ''})",
            f"  spectral abscissa   A: {self.spectral_abscissa_A:+.6g}   W: {self.spectral_abscissa_W:+.6g}",
            f"  lambda_max(A_sym): {self.lambda_max_A_sym:+.6g}   "
            f"||A||_2: {self.norm_A:.6g}   ||W||_2: {self.norm_W:.6g}",
            f"  C1 contraction margin -lambda_max(A_sym) - L||W||_2 = {self.c1['margin']:+.6g}"
            f"  -> holds: {yes[self.c1['holds']]}",
        ]
        c2 = self.c2
        if c2["applies"]:
            lines.append(
                f"  C2 (KYP): lambda_max(W+W^T) = {c2['lambda_max_W_plus_Wt']:+.6g}, "
                f"lambda_min(A^T W + W^T A) = {c2['lambda_min_AtW_plus_WtA']:+.6g} -> holds: {yes[c2['holds']]}"
            )
        else:
            lines.append(f"  C2 (KYP): does not apply ({c2['reason']})")
        for name, box in self.bendixson.items():
            lines.append(
                f"  Bendixson box {name}: Re in [{box['re_min']:+.6g}, {box['re_max']:+.6g}], "
                f"|Im| <= {box['im_max']:.6g}; spectrum inside: {yes[box['contains_spectrum']]}"
            )
        if self.discrete is not None:
            d = self.discrete
            lines.append(
                f"  discrete max|R(eps*lambda)| ({self.method}):  D=0: {d['D=0']['max_abs_R']:.8g}   "
                f"D=L*I: {d['D=LI']['max_abs_R']:.8g}   sampled D ({d['sampled']['count']}): "
                f"{d['sampled']['max_abs_R']:.8g}  -> all <= 1: {yes[d['stable']]}"
            )
        if self.euler_contraction is not None:
            e = self.euler_contraction
            lines.append(
                f"  Euler contraction bound sqrt(1-2*eps*a+eps^2*n^2)+eps*L*w = {e['bound']:.8g}"
                f"  -> contracts: {yes[e['contracts']]}"
            )
        return "\n".join(lines)

    def plot(self, ax=None, path=None):
        """Shorthand for :func:`plot_eigenvalues`."""
        return plot_eigenvalues(self, ax=ax, path=path)


def _sym(X: Tensor) -> Tensor:
    return (X + X.T) / 2


def _bendixson(X: Tensor, eig: Tensor) -> dict[str, Any]:
    sym = torch.linalg.eigvalsh(_sym(X))
    im_max = float(torch.linalg.matrix_norm((X - X.T) / 2, ord=2))
    tol = 1e-9 * max(1.0, float(torch.linalg.matrix_norm(X, ord=2)))
    inside = (eig.real >= sym[0] - tol) & (eig.real <= sym[-1] + tol) & (eig.imag.abs() <= im_max + tol)
    return {
        "re_min": float(sym[0]),
        "re_max": float(sym[-1]),
        "im_max": im_max,
        "contains_spectrum": bool(inside.all()),
    }


def _as_pairs(eig: Tensor) -> list[list[float]]:
    return [[float(z.real), float(z.imag)] for z in eig]


def _float64_pair(A: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
    """Detached float64 CPU copies of (A, W), checked to be real, finite, square and of one shape."""
    for name, matrix in (("A", A), ("W", W)):
        if not isinstance(matrix, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(matrix).__name__}")
        if matrix.is_complex():  # casting would drop the imaginary part, and the theory is for real weights
            raise TypeError(f"{name} must be real, got dtype {matrix.dtype}")
    A = A.detach().to("cpu", torch.float64)
    W = W.detach().to("cpu", torch.float64)
    if A.dim() != 2 or A.shape[0] != A.shape[1] or A.shape != W.shape:
        raise ValueError(f"A and W must be square and of one shape, got {tuple(A.shape)} and {tuple(W.shape)}")
    for name, matrix in (("A", A), ("W", W)):
        check_finite(name, matrix)  # LAPACK would fail on NaN with a message about conditioning
    return A, W


def _spectra(A: Tensor, W: Tensor) -> tuple[Tensor, Tensor, float, float, float]:
    """``(λ(A), λ(W), λ_max(A_sym), ‖A‖₂, ‖W‖₂)``: what every report and every epoch's numbers start from."""
    return (
        torch.linalg.eigvals(A),
        torch.linalg.eigvals(W),
        float(torch.linalg.eigvalsh(_sym(A))[-1]),
        float(torch.linalg.matrix_norm(A, ord=2)),
        float(torch.linalg.matrix_norm(W, ord=2)),
    )


def _cell_matrices(cell: nn.Module) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """(alpha*A, W, settings) for a Lipschitz or AntisymmetricRNN cell."""
    from .cells.antisymmetric import AntisymmetricRNNCell
    from .cells.lipschitz import LipschitzRNNCell

    if isinstance(cell, LipschitzRNNCell):
        settings = {"eps": cell.eps, "method": cell.method, "alpha": cell.alpha, "gated": cell.gated}
        return cell.alpha * cell.A, cell.W, settings
    if isinstance(cell, AntisymmetricRNNCell):
        settings = {"eps": cell.eps, "method": cell.method, "alpha": 0.0, "gated": cell.gated}
        return torch.zeros_like(cell.W), cell.W, settings
    cells = getattr(cell, "cells", None)
    if cells is not None and len(cells) > 0:
        raise TypeError("pass one cell (e.g. rnn.cells[0]), not a whole layer")
    raise TypeError(
        f"stability_report takes a LipschitzRNNCell, an AntisymmetricRNNCell or matrices (A, W); "
        f"got {type(cell).__name__}"
    )


def _step_amplification(
    rk: Method, A: Tensor, W: Tensor, eps: float, L: float, eig_A: Tensor, eig_J: Tensor
) -> tuple[float, float, Callable[[Tensor], float]]:
    """``(max|R| at D = 0, at D = L·I, as a function of D)`` for one step rule, from λ(A) and λ(A + LW).

    For an explicit Runge–Kutta rule the step linearised at ``D`` is ``R(ε(A + DW))``; for the
    exponential Euler rule it is ``e^{εA} + εφ₁(εA) D W``, not ``R(ε(A + DW))``, so its ``D = L·I``
    value needs its own eigenvalue problem.
    """
    N = A.shape[0]
    if rk.exponential:
        E, P = rk.step_matrices(A, eps)

        def amplification(D: Tensor) -> float:
            return float(torch.linalg.eigvals(E + P @ (D[:, None] * W)).abs().max())

        rI = amplification(torch.full((N,), L, dtype=torch.float64))
    else:

        def amplification(D: Tensor) -> float:
            return float(rk.stability_function(eps * torch.linalg.eigvals(A + D[:, None] * W)).abs().max())

        rI = float(rk.stability_function(eps * eig_J).abs().max())  # D = L I: the spectrum given
    r0 = float(rk.stability_function(eps * eig_A).abs().max())
    return r0, rI, amplification


def stability_report(
    cell_or_A: Union[nn.Module, Tensor],
    W: Optional[Tensor] = None,
    *,
    eps: Optional[float] = None,
    method: Optional[Union[str, Method]] = None,
    lipschitz_constant: float = 1.0,
    num_diagonal_samples: int = 32,
    seed: int = 0,
) -> StabilityReport:
    """Compute every certificate for a cell, or for matrices ``(A, W)`` (column convention).

    For a cell, A is the effective linear part ``alpha * A`` (zero for the AntisymmetricRNN)
    and ``eps``/``method`` default to the cell's. For matrices, the discrete check and the
    Euler bound need ``eps`` (``method`` defaults to ``euler``).
    """
    gated = False
    alpha = 1.0
    if isinstance(cell_or_A, nn.Module):
        if W is not None:
            raise TypeError("pass either a cell or the matrices (A, W), not both")
        A, W, settings = _cell_matrices(cell_or_A)
        eps = settings["eps"] if eps is None else eps
        method = settings["method"] if method is None else method
        alpha, gated = settings["alpha"], settings["gated"]
    else:
        if W is None:
            raise TypeError("stability_report(A, W): W is required with a matrix A")
        A = cell_or_A
        method = "euler" if method is None else method
    A, W = _float64_pair(A, W)
    eps = None if eps is None else check_eps("eps", eps)
    rk = get_method(method)
    L = check_real("lipschitz_constant", lipschitz_constant, low=0.0)  # a negative L would inflate the margin
    N = A.shape[0]

    eig_A, eig_W, lam_max_A_sym, norm_A, norm_W = _spectra(A, W)

    margin = -lam_max_A_sym - L * norm_W
    c1 = {"margin": margin, "holds": margin > 0, "rate": max(margin, 0.0)}

    asym = float(torch.linalg.matrix_norm(W - W.T)) / max(float(torch.linalg.matrix_norm(W)), 1e-300)
    if asym > 1e-8:
        c2: dict[str, Any] = {"applies": False, "reason": f"W is not symmetric (||W-W^T||_F/||W||_F = {asym:.3g})"}
    else:
        lam_W = float(torch.linalg.eigvalsh(W + W.T)[-1])
        lam_kyp = float(torch.linalg.eigvalsh(A.T @ W + W.T @ A)[0])
        nonsingular = float(torch.linalg.svdvals(W)[-1]) > 1e-12 * max(norm_W, 1e-300)
        c2 = {
            "applies": True,
            "lambda_max_W_plus_Wt": lam_W,
            "lambda_min_AtW_plus_WtA": lam_kyp,
            "holds": lam_max_A_sym < 0 and nonsingular and lam_W < 0 and lam_kyp > 0,
        }

    bendixson = {"A": _bendixson(A, eig_A), "W": _bendixson(W, eig_W)}
    eigenvalues = {"A": _as_pairs(eig_A), "W": _as_pairs(eig_W)}

    discrete = None
    euler = None
    if eps is not None:
        eig_J = torch.linalg.eigvals(A + L * W)
        eigenvalues["A+LW"] = _as_pairs(eig_J)
        r0, rI, amplification = _step_amplification(rk, A, W, eps, L, eig_A, eig_J)
        generator = torch.Generator().manual_seed(seed)
        sampled_max = 0.0
        for _ in range(num_diagonal_samples):
            sampled_max = max(sampled_max, amplification(L * torch.rand(N, generator=generator, dtype=torch.float64)))
        discrete = {
            "D=0": {"max_abs_R": r0},
            "D=LI": {"max_abs_R": rI},
            "sampled": {"max_abs_R": sampled_max, "count": num_diagonal_samples, "seed": seed},
            "stable": max(r0, rI, sampled_max) <= 1.0,
        }
        a = -lam_max_A_sym
        bound = max(0.0, 1.0 - 2.0 * eps * a + eps**2 * norm_A**2) ** 0.5 + eps * L * norm_W
        euler = {"a": a, "n": norm_A, "w": norm_W, "bound": bound, "contracts": bound < 1.0}

    return StabilityReport(
        hidden_size=N,
        method=rk.name,
        eps=eps,
        alpha=alpha,
        lipschitz_constant=L,
        gated=gated,
        spectral_abscissa_A=float(eig_A.real.max()),
        spectral_abscissa_W=float(eig_W.real.max()),
        lambda_max_A_sym=lam_max_A_sym,
        norm_A=norm_A,
        norm_W=norm_W,
        c1=c1,
        c2=c2,
        bendixson=bendixson,
        discrete=discrete,
        euler_contraction=euler,
        eigenvalues=eigenvalues,
    )


def step_amplifications(
    cell: nn.Module, methods: Optional[Iterable[Union[str, Method]]] = None, *, lipschitz_constant: float = 1.0
) -> dict[str, dict[str, float]]:
    """Each step rule's ``max |R|`` at ``D = 0`` and ``D = L·I``, at the cell's ε and weights.

    The same numbers as ``stability_report(cell, method=m).discrete`` (``"D=0"`` and ``"D=LI"``) for
    every ``m`` in ``methods`` (all of :data:`lipschitz_rnn.integrators.METHODS` by default), from one
    eigendecomposition of A and one of ``A + LW`` instead of a whole report per rule: what the cell's
    weights would do under another rule, not what training with it would reach.

    Example:
        >>> from lipschitz_rnn import LipschitzRNNCell
        >>> cell = LipschitzRNNCell(1, 8, beta=1.0, gamma=0.5, eps=0.1)  # λ(A) = -0.5 + iy
        >>> rules = step_amplifications(cell, ["euler", "exp_euler"])
        >>> round(rules["exp_euler"]["D=0"], 6)  # |e^{0.1 λ}| = e^{-0.05}
        0.951229
        >>> rules["euler"]["D=0"] > 0.95  # |1 + 0.1 λ| ≥ 0.95
        True
    """
    A, W, settings = _cell_matrices(cell)
    A, W = _float64_pair(A, W)
    L = check_real("lipschitz_constant", lipschitz_constant, low=0.0)
    eps = settings["eps"]
    eig_A = torch.linalg.eigvals(A)
    eig_J = torch.linalg.eigvals(A + L * W)
    result = {}
    for method in METHODS if methods is None else methods:
        rk = get_method(method)
        r0, rI, _ = _step_amplification(rk, A, W, eps, L, eig_A, eig_J)
        result[rk.name] = {"D=0": r0, "D=LI": rI}
    return result


def spectral_numbers(cell: nn.Module) -> dict[str, float]:
    """The few numbers of a cell's :func:`stability_report` that training records every epoch.

    ``max_re_eig_A``, ``max_re_eig_W``, ``lambda_max_A_sym``, ``norm_A``, ``norm_W``, ``c1_margin`` (L = 1) and
    ``max_abs_R_eps_lambda_D0``, the step's amplification ``max |R(ελ)|`` over the eigenvalues λ of A. They equal
    the report's, without the rest of it: no spectrum of ``A + LW``, no linearised exponential step, no Bendixson
    boxes: two non-symmetric eigenvalue problems instead of three (four for exp_euler; ``tests/test_stability.py``,
    ``benchmarks/stability_numbers.py``).

    Example:
        >>> from lipschitz_rnn import LipschitzRNNCell
        >>> numbers = spectral_numbers(LipschitzRNNCell(1, 8, beta=1.0, gamma=0.5))
        >>> round(numbers["lambda_max_A_sym"], 6)
        -0.5
        >>> numbers["c1_margin"] == -numbers["lambda_max_A_sym"] - numbers["norm_W"]
        True
    """
    A, W, settings = _cell_matrices(cell)
    A, W = _float64_pair(A, W)
    eig_A, eig_W, lam_max_A_sym, norm_A, norm_W = _spectra(A, W)
    r0 = get_method(settings["method"]).stability_function(settings["eps"] * eig_A).abs().max()
    return {
        "max_re_eig_A": float(eig_A.real.max()),
        "max_re_eig_W": float(eig_W.real.max()),
        "lambda_max_A_sym": lam_max_A_sym,
        "norm_A": norm_A,
        "norm_W": norm_W,
        "c1_margin": -lam_max_A_sym - norm_W,
        "max_abs_R_eps_lambda_D0": float(r0),
    }


def certified_cells(model: nn.Module) -> dict[str, nn.Module]:
    """The Lipschitz and AntisymmetricRNN cells of a model, by layer: ``{"layer0": cell, ...}``.

    ``model`` is a recurrent layer with ``cells`` (``LipschitzRNN``, ``AntisymmetricRNN``) or a model
    holding one as ``.rnn`` (``SequenceClassifier``); cells of other kinds (an LSTM) are left out. A
    bidirectional layer's reverse cells follow as ``"layer0_reverse", ...`` (``nn.RNN``'s suffix).
    """
    from .cells.antisymmetric import AntisymmetricRNNCell
    from .cells.lipschitz import LipschitzRNNCell

    layer = getattr(model, "rnn", model)
    found = {}
    for attribute, suffix in (("cells", ""), ("reverse_cells", "_reverse")):
        cells = getattr(layer, attribute, [])
        certified = [cell for cell in cells if isinstance(cell, (LipschitzRNNCell, AntisymmetricRNNCell))]
        found.update({f"layer{i}{suffix}": cell for i, cell in enumerate(certified)})
    return found


def stability_reports(model: nn.Module, num_diagonal_samples: int = 32) -> dict[str, StabilityReport]:
    """One report per Lipschitz or AntisymmetricRNN cell of a model: ``{"layer0": report, ...}``.

    ``model`` is a recurrent layer with ``cells`` (``LipschitzRNN``, ``AntisymmetricRNN``) or a
    model holding one as ``.rnn`` (``SequenceClassifier``). Cells of other kinds (an LSTM) have
    no certificates, so such a model gives ``{}``.

    Example:
        >>> from lipschitz_rnn import LipschitzRNN
        >>> reports = stability_reports(LipschitzRNN(1, 8, num_layers=2, beta=1.0, gamma=0.5))
        >>> sorted(reports), round(reports["layer1"].lambda_max_A_sym, 6)
        (['layer0', 'layer1'], -0.5)
    """
    return {
        name: stability_report(cell, num_diagonal_samples=num_diagonal_samples)
        for name, cell in certified_cells(model).items()
    }


def plot_eigenvalues(report: StabilityReport, ax=None, path=None):
    """Plot ``ε λ`` for A, W and ``A + L W`` over the method's stability region ``|R(z)| <= 1``.

    Without ``ax``, draws two panels: the whole region, and a zoom on the eigenvalues
    (at small ε they sit near 0, where the region's boundary decides stability). Needs
    matplotlib (``pip install "lipschitz-rnn[plot]"``). Returns the figure; saves a PNG when
    ``path`` is given.
    """
    try:
        import matplotlib

        if ax is None and path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('plot_eigenvalues needs matplotlib: pip install "lipschitz-rnn[plot]"') from None
    if report.eps is None:
        raise ValueError("the report has no eps; make it with stability_report(..., eps=...)")
    points = {
        name: torch.tensor(pairs, dtype=torch.float64).reshape(-1, 2) * report.eps
        for name, pairs in report.eigenvalues.items()
    }
    largest = max(float(p.abs().max()) for p in points.values())
    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 5))
        _draw_region(axes[0], report, points, max(1.3 * largest, 3.0))
        _draw_region(axes[1], report, points, max(1.5 * largest, 1e-9), zoom=True)
    else:
        fig = ax.figure
        _draw_region(ax, report, points, max(1.5 * largest, 1e-9), zoom=True)
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _draw_region(ax, report: StabilityReport, points: dict[str, Tensor], extent: float, zoom: bool = False) -> None:
    grid = torch.linspace(-extent, extent, 401, dtype=torch.float64)
    re, im = torch.meshgrid(grid, grid, indexing="xy")
    R = get_method(report.method).stability_function(torch.complex(re, im)).abs()
    ax.contourf(re.numpy(), im.numpy(), (R <= 1).double().numpy(), levels=[0.5, 1.5], colors=["#dbe9f6"])
    ax.contour(re.numpy(), im.numpy(), R.numpy(), levels=[1.0], colors=["#4a7ab7"], linewidths=1)
    markers = {"A": ("o", "C0"), "W": ("x", "C1"), "A+LW": ("+", "C3")}
    for name, p in points.items():
        marker, colour = markers.get(name, (".", "k"))
        ax.scatter(p[:, 0].numpy(), p[:, 1].numpy(), s=12, marker=marker, color=colour, label=f"eps*lambda({name})")
    ax.axhline(0, color="0.6", lw=0.5)
    ax.axvline(0, color="0.6", lw=0.5)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_xlabel("Re(eps*lambda)")
    ax.set_ylabel("Im(eps*lambda)")
    where = "zoom on the eigenvalues" if zoom else "stability region shaded"
    ax.set_title(f"{report.method}, eps={report.eps:g}: {where}")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_aspect("equal")
