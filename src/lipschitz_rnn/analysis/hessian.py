"""Curvature of the loss: Hessian spectra with respect to the parameters and to the input.

**Parameter Hessian.** ``H = ∇²_θ L(θ)`` of the loss over a *fixed* dataset,

    L(θ) = Σ_b (n_b / n) · loss_fn(f_θ(x_b), y_b),

(the sample-weighted mean of per-batch losses; ``n_b`` samples in batch b, ``n`` in all),
over all trainable parameters θ flattened in ``model.parameters()`` order. ``H`` is applied
to vectors by double backward (Pearlmutter's trick); it is never formed. A task as ``data``
becomes its first ``samples`` (default 4,096) training samples in the seeded order
(``fixed_batches``), and every product uses the same samples.

**Input Hessian.** For one batch ``(x, y)``, the Hessian of each sample's loss
``ℓ_i = loss_fn`` on sample i with respect to its whole input sequence ``x_i`` (``T·p``
numbers), for all samples at once. This assumes ``loss_fn`` is a mean over the batch (as
the default is) and the model treats samples independently (no batch norm), so that
``B · loss_fn(batch)`` is ``Σ_i ℓ_i`` and its input Hessian is block-diagonal.

**Deterministic and twice differentiable.** Every product runs under ``hessian_mode``: the
model in ``eval()`` mode (dropout off: the Hessian of a fixed function), every
``RecurrentLayer`` on the ``"reference"`` backend (the fast backends' custom autograd
functions cannot double-backward), cuDNN off (cuDNN's RNN/LSTM/GRU kernels have no double
backward and refuse backward in eval mode; without cuDNN PyTorch runs differentiable
kernels on the GPU) and TF32 matmuls off; all restored afterwards.

**Quantities.**

* ``hessian_eigenvalues``: k extreme eigenvalues by Lanczos with full reorthogonalisation.
  ``which="largest"`` gives the algebraically largest, ``"smallest"`` the algebraically
  smallest (most negative) ones. Converged when every wanted Ritz pair's residual
  ``‖H y − θ y‖`` (a bound on the eigenvalue's error) is ``<= tol · max|θ|``.
* ``hessian_trace``: Hutchinson, ``tr H ≈ mean_j z_jᵀ H z_j`` with Rademacher ``z_j``;
  standard error ``std(samples, ddof=1) / sqrt(num_probes)``.
* ``hessian_density``: stochastic Lanczos quadrature (Ghorbani, Krishnan & Xiao 2019):
  ``num_runs`` Lanczos runs from normalised Rademacher vectors; each gives Ritz nodes θ_i
  and weights ``τ_i`` (squared first components of T's eigenvectors, summing to 1); the
  density is ``mean_runs Σ_i τ_i N(t; θ_i, σ²)``, integrating to 1, with mean ≈ ``tr H / n``.
* ``condition_number``: ``κ = max(|λ_max|, |λ_min|) / min(|λ_max|, |λ_min|)`` from the two
  extreme eigenvalues. For a definite Hessian this is the usual ``λ_max / λ_min``; for an
  indefinite one (the usual case at a trained network, where the smallest-magnitude
  eigenvalue is ~0 and the textbook ratio is meaningless) it is the ratio of the dominant
  to the opposite extreme curvature. Infinite (``None`` in JSON) when either is 0.

Example:
    >>> import torch, lipschitz_rnn as lr
    >>> from lipschitz_rnn.analysis import hessian_eigenvalues, hessian_trace
    >>> model = lr.SequenceClassifier(lr.build_model("lipschitz", 1, 4), num_classes=3)
    >>> batch = (torch.rand(16, 10, 1), torch.randint(0, 3, (16,)))
    >>> top = hessian_eigenvalues(model, None, batch, k=1, which="largest")
    >>> top.eigenvalues.shape, top.converged
    (torch.Size([1]), True)
    >>> trace = hessian_trace(model, None, batch, num_probes=16)
    >>> trace.stderr > 0
    True
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..layer import RecurrentLayer
from ._common import (
    Batch,
    Data,
    Forward,
    LossFn,
    as_batches,
    batch_first_forward,
    check_count,
    cpu_generator,
    default_loss,
    finite_or_none,
    is_single_batch,
    model_device_dtype,
    model_parameters,
    positive_real,
    to_model,
)
from .lanczos import LanczosRun, gaussian_density, lanczos

__all__ = [
    "ConditionNumber",
    "DensityResult",
    "EigenResult",
    "InputHessian",
    "ParameterHessian",
    "TraceResult",
    "condition_number",
    "condition_number_from",
    "density_from_quadrature",
    "hessian_density",
    "hessian_eigenvalues",
    "hessian_extreme_eigenvalues",
    "hessian_mode",
    "hessian_trace",
    "input_hessian_eigenvalues",
    "input_hessian_trace",
    "reference_backend",
]

CONDITION_NUMBER_DEFINITION = (
    "kappa = max(|lambda_max|, |lambda_min|) / min(|lambda_max|, |lambda_min|) from the algebraically "
    "largest and smallest Hessian eigenvalues; lambda_max / lambda_min for a definite Hessian"
)


# --------------------------------------------------------------------------- modes


@contextmanager
def reference_backend(model: nn.Module) -> Iterator[nn.Module]:
    """Run every ``RecurrentLayer`` inside ``model`` on the ``"reference"`` backend; restore afterwards.

    Example:
        >>> import lipschitz_rnn as lr
        >>> rnn = lr.build_model("lipschitz", 1, 4)
        >>> with reference_backend(rnn):
        ...     rnn.backend
        'reference'
        >>> rnn.backend
        'auto'
    """
    layers = [module for module in model.modules() if isinstance(module, RecurrentLayer)]
    saved = [layer.backend for layer in layers]
    try:
        for layer in layers:
            layer.backend = "reference"
        yield model
    finally:
        for layer, name in zip(layers, saved):
            layer.backend = name


@contextmanager
def hessian_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, reference backend, cuDNN and TF32 off, gradients on: a twice-differentiable, deterministic model.

    Every module's ``training`` flag, every layer's backend and the global flags are restored on exit.
    """
    training = {module: module.training for module in model.modules()}
    tf32 = bool(torch.backends.cuda.matmul.allow_tf32)
    try:
        model.eval()
        if tf32:  # 10-bit mantissas would put a floor of ~1e-3 under every residual
            torch.backends.cuda.matmul.allow_tf32 = False
        with reference_backend(model), torch.backends.cudnn.flags(enabled=False), torch.enable_grad():
            yield model
    finally:
        for module, flag in training.items():
            module.training = flag
        if tf32:
            torch.backends.cuda.matmul.allow_tf32 = True


# --------------------------------------------------------------------------- operators


class ParameterHessian:
    """The Hessian of the loss over a fixed dataset w.r.t. all trainable parameters, as an operator.

    ``matvec(v)`` takes and returns float64 vectors of length ``dim`` (parameters flattened in
    ``model.parameters()`` order, trainable ones only), on the model's device.

    Example:
        >>> H = ParameterHessian(model, batches)                          # doctest: +SKIP
        >>> Hv = H.matvec(torch.randn(H.dim, dtype=torch.float64))        # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        data: Data,
        loss_fn: Optional[LossFn] = None,
        *,
        forward: Optional[Forward] = None,
        samples: int = 4096,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.forward = forward if forward is not None else batch_first_forward(model)
        self.loss_fn = loss_fn if loss_fn is not None else default_loss
        self.batches: list[Batch] = as_batches(data, samples=samples, batch_size=batch_size, seed=seed)
        self.params = model_parameters(model)
        self.shapes = [p.shape for p in self.params]
        self.dim = sum(p.numel() for p in self.params)
        self.num_samples = sum(len(x) for x, _ in self.batches)
        self.device, self.dtype = model_device_dtype(model)

    def matvec(self, v: Tensor) -> Tensor:
        """``H v`` for a vector ``v`` of length ``dim`` (float64 result, accumulated over all batches)."""
        if v.shape != (self.dim,):
            raise ValueError(
                f"v must have shape ({self.dim},) (the number of trainable parameters), got {tuple(v.shape)}"
            )
        pieces = self._unflatten(v.to(device=self.device, dtype=self.dtype))
        out = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        with hessian_mode(self.model):
            for x, y in self.batches:
                x, y = to_model((x, y), self.device, self.dtype)
                loss = self.loss_fn(self.forward(x), y) * (len(x) / self.num_samples)
                grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
                terms = [(g * u).sum() for g, u in zip(grads, pieces) if g is not None and g.requires_grad]
                if not terms:  # the gradient does not depend on the parameters: zero curvature
                    continue
                hv = torch.autograd.grad(torch.stack(terms).sum(), self.params, allow_unused=True)
                out += self._flatten(hv).to(torch.float64)
        return out

    def rows(self, vectors: Tensor) -> Tensor:
        """``matvec`` on each row of ``(b, dim)``; the batched form ``lanczos`` calls."""
        return torch.stack([self.matvec(v) for v in vectors])

    def loss_and_gradient_norm(self) -> tuple[float, float]:
        """``L(θ)`` and ``‖∇L(θ)‖`` on the fixed dataset (a Hessian means most at a stationary point)."""
        total = 0.0
        grad = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        with hessian_mode(self.model):
            for x, y in self.batches:
                x, y = to_model((x, y), self.device, self.dtype)
                loss = self.loss_fn(self.forward(x), y) * (len(x) / self.num_samples)
                grad += self._flatten(torch.autograd.grad(loss, self.params, allow_unused=True)).to(torch.float64)
                total += float(loss.detach())
        return total, float(grad.norm())

    def dense(self) -> Tensor:
        """The full ``(dim, dim)`` Hessian from ``dim`` products with basis vectors (small models only)."""
        eye = torch.eye(self.dim, dtype=torch.float64, device=self.device)
        return torch.stack([self.matvec(e) for e in eye], dim=1)

    def _unflatten(self, v: Tensor) -> list[Tensor]:
        return [piece.view(shape) for piece, shape in zip(v.split([s.numel() for s in self.shapes]), self.shapes)]

    def _flatten(self, tensors: Sequence[Optional[Tensor]]) -> Tensor:
        return torch.cat(
            [(t if t is not None else torch.zeros_like(p)).reshape(-1) for t, p in zip(tensors, self.params)]
        )


class InputHessian:
    """Per-sample Hessians of the loss w.r.t. each input sequence of one batch, as a batched operator.

    ``matvec(V)`` maps ``(B, dim)`` to ``(B, dim)``, ``dim = T·p``: row i is ``∇²_{x_i} ℓ_i · V_i``.
    """

    def __init__(
        self, model: nn.Module, batch: Batch, loss_fn: Optional[LossFn] = None, *, forward: Optional[Forward] = None
    ) -> None:
        if not is_single_batch(batch):
            raise TypeError("batch must be one (x, y) pair of tensors")
        self.model = model
        self.forward = forward if forward is not None else batch_first_forward(model)
        self.loss_fn = loss_fn if loss_fn is not None else default_loss
        self.device, self.dtype = model_device_dtype(model)
        self.x, self.y = to_model(batch, self.device, self.dtype)
        if not self.x.is_floating_point():
            raise TypeError(f"x must be floating point to differentiate w.r.t. it, got {self.x.dtype}")
        self.batch = self.x.shape[0]
        self.dim = self.x[0].numel()

    def matvec(self, vectors: Tensor) -> Tensor:
        if vectors.shape != (self.batch, self.dim):
            raise ValueError(
                f"vectors must have shape ({self.batch}, {self.dim}) (batch, T*p), got {tuple(vectors.shape)}"
            )
        with hessian_mode(self.model):
            x = self.x.detach().requires_grad_(True)
            # B * (batch mean) = sum of per-sample losses: the block of sample i is ∇²ℓ_i
            loss = self.loss_fn(self.forward(x), self.y) * self.batch
            (grad,) = torch.autograd.grad(loss, x, create_graph=True)
            if not grad.requires_grad:
                return torch.zeros_like(vectors, dtype=torch.float64)
            direction = vectors.to(device=self.device, dtype=self.dtype).view_as(x)
            (hv,) = torch.autograd.grad((grad * direction).sum(), x, allow_unused=True)
        if hv is None:
            return torch.zeros_like(vectors, dtype=torch.float64)
        return hv.reshape(self.batch, self.dim).to(torch.float64)

    def dense(self) -> Tensor:
        """``(B, dim, dim)``: every sample's input Hessian (small inputs only)."""
        eye = torch.eye(self.dim, dtype=torch.float64, device=self.device)
        return torch.stack([self.matvec(e.expand(self.batch, -1)) for e in eye], dim=2)


# --------------------------------------------------------------------------- results


@dataclass
class EigenResult:
    """Extreme eigenvalues, most extreme first: descending for ``largest``, ascending for ``smallest``.

    Parameter Hessian: ``eigenvalues``/``residuals`` ``(k,)``, ``eigenvectors`` ``(dim, k)``.
    Input Hessian: a leading batch dimension, ``(B, k)`` and ``(B, dim, k)``.
    """

    which: str
    eigenvalues: Tensor
    residuals: Tensor  # ‖H y − θ y‖ per Ritz pair: bounds the eigenvalue's error
    converged: bool  # every wanted pair (in every row) within tol
    iterations: int  # Lanczos steps = Hessian-vector products (per row)
    tol: float
    dim: int
    eigenvectors: Optional[Tensor] = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "which": self.which,
            "eigenvalues": self.eigenvalues.tolist(),
            "residuals": self.residuals.tolist(),
            "converged": self.converged,
            "iterations": self.iterations,
            "tol": self.tol,
            "dim": self.dim,
        }


@dataclass
class TraceResult:
    """Hutchinson estimate ± standard error; ``samples`` holds every probe's ``zᵀ H z``.

    Parameter Hessian: floats and ``samples`` ``(num_probes,)``; input Hessian: per sample,
    ``(B,)`` tensors and ``samples`` ``(num_probes, B)``.
    """

    estimate: Union[float, Tensor]
    stderr: Union[float, Tensor]
    samples: Tensor
    num_probes: int
    dim: int

    def to_dict(self) -> dict[str, Any]:
        as_json = (lambda v: v.tolist()) if isinstance(self.estimate, Tensor) else float
        return {
            "estimate": as_json(self.estimate),
            "stderr": as_json(self.stderr),
            "samples": self.samples.tolist(),
            "num_probes": self.num_probes,
            "dim": self.dim,
        }


@dataclass
class DensityResult:
    """Stochastic Lanczos quadrature: a Gaussian-broadened eigenvalue density and its quadrature rule."""

    grid: Tensor  # (G,)
    density: Tensor  # (G,)
    nodes: Tensor  # (runs, m): Ritz values
    weights: Tensor  # (runs, m): each row sums to 1
    sigma: float
    dim: int

    @property
    def mean(self) -> float:
        """``∫ t φ(t) dt``: an estimate of ``tr H / dim``."""
        return float((self.nodes * self.weights).sum(dim=1).mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": self.grid.tolist(),
            "density": self.density.tolist(),
            "nodes": self.nodes.tolist(),
            "weights": self.weights.tolist(),
            "sigma": self.sigma,
            "dim": self.dim,
            "mean": self.mean,
        }


@dataclass
class ConditionNumber:
    value: float  # inf when an extreme eigenvalue is 0
    lambda_max: float
    lambda_min: float
    largest: EigenResult
    smallest: EigenResult
    definition: str = CONDITION_NUMBER_DEFINITION

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": finite_or_none(self.value),
            "lambda_max": self.lambda_max,
            "lambda_min": self.lambda_min,
            "definition": self.definition,
            "converged": self.largest.converged and self.smallest.converged,
        }


# --------------------------------------------------------------------------- parameter Hessian


def hessian_eigenvalues(
    model: nn.Module,
    loss_fn: Optional[LossFn],
    data: Data,
    k: int = 1,
    which: str = "largest",
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    forward: Optional[Forward] = None,
    samples: int = 4096,
    return_eigenvectors: bool = False,
) -> EigenResult:
    """The ``k`` largest or smallest (most negative) eigenvalues of the parameter Hessian, by Lanczos.

    ``loss_fn`` ``(logits, y) -> scalar`` (None: cross-entropy, or MSE for float targets);
    ``data`` a task (its first ``samples`` training samples, seeded), a list of ``(x, y)``
    batches or one batch. Stops after ``max_iter`` Hessian-vector products or when the
    wanted eigenvalues' residuals are ``<= tol · ‖H‖``; ``converged`` says which.
    """
    operator = ParameterHessian(model, data, loss_fn, forward=forward, samples=samples, seed=seed)
    wanted = _check_which(which)
    run = _lanczos_extremes(operator, k, wanted, max_iter, tol, seed)
    return _extreme(run, k, which, tol, operator.dim, return_eigenvectors)


def hessian_extreme_eigenvalues(
    model: nn.Module,
    loss_fn: Optional[LossFn],
    data: Data,
    k: int = 1,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    forward: Optional[Forward] = None,
    samples: int = 4096,
) -> tuple[EigenResult, EigenResult]:
    """``(largest, smallest)`` from one Lanczos run, iterated until both ends converge."""
    operator = ParameterHessian(model, data, loss_fn, forward=forward, samples=samples, seed=seed)
    run = _lanczos_extremes(operator, k, ("largest", "smallest"), max_iter, tol, seed)
    return (
        _extreme(run, k, "largest", tol, operator.dim, False),
        _extreme(run, k, "smallest", tol, operator.dim, False),
    )


def condition_number_from(lambda_max: float, lambda_min: float) -> float:
    """``max(|λ_max|, |λ_min|) / min(|λ_max|, |λ_min|)`` (``inf`` when the smaller is 0).

    Example:
        >>> condition_number_from(100.0, 2.0), condition_number_from(10.0, -0.5)
        (50.0, 20.0)
    """
    big, small = max(abs(lambda_max), abs(lambda_min)), min(abs(lambda_max), abs(lambda_min))
    return math.inf if small == 0 else big / small


def ritz_value_resolved(value: float, residual: float) -> bool:
    """Whether a Ritz value is pinned down by its residual ``‖H y − θ y‖`` (an eigenvalue lies within it).

    Lanczos stops once every residual is ``<= tol · ‖H‖``; when ‖H‖ is large that bound can
    exceed a small extreme Ritz value itself. The smallest Ritz value is then only an upper bound
    on λ_min (Ritz values lie inside the spectrum), and a condition number built on it means nothing.

    Example:
        >>> ritz_value_resolved(-0.557, 0.0077), ritz_value_resolved(0.03, 0.6)
        (True, False)
    """
    return residual <= abs(value)


def condition_number(
    model: nn.Module,
    loss_fn: Optional[LossFn],
    data: Data,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    forward: Optional[Forward] = None,
    samples: int = 4096,
) -> ConditionNumber:
    """The condition number ``κ`` (see ``condition_number_from``) of the parameter Hessian, with both extremes."""
    largest, smallest = hessian_extreme_eigenvalues(
        model, loss_fn, data, 1, max_iter=max_iter, tol=tol, seed=seed, forward=forward, samples=samples
    )
    lam_max, lam_min = float(largest.eigenvalues[0]), float(smallest.eigenvalues[0])
    return ConditionNumber(condition_number_from(lam_max, lam_min), lam_max, lam_min, largest, smallest)


def hessian_trace(
    model: nn.Module,
    loss_fn: Optional[LossFn],
    data: Data,
    num_probes: int = 64,
    seed: int = 0,
    *,
    forward: Optional[Forward] = None,
    samples: int = 4096,
) -> TraceResult:
    """Hutchinson's estimate of ``tr H`` with ``num_probes`` Rademacher probes (seeded), ± standard error."""
    num_probes = check_count("num_probes", num_probes, minimum=2)
    operator = ParameterHessian(model, data, loss_fn, forward=forward, samples=samples, seed=seed)
    generator = cpu_generator(seed, "hutchinson")
    values = []
    for _ in range(num_probes):
        z = _rademacher((operator.dim,), generator).to(operator.device)
        values.append(torch.dot(z, operator.matvec(z)))
    values = torch.stack(values).cpu()
    return TraceResult(float(values.mean()), _stderr(values), values, num_probes, operator.dim)


def hessian_density(
    model: nn.Module,
    loss_fn: Optional[LossFn],
    data: Data,
    *,
    num_runs: int = 4,
    lanczos_steps: int = 64,
    sigma: Optional[float] = None,
    grid: Optional[Tensor] = None,
    num_points: int = 1000,
    seed: int = 0,
    forward: Optional[Forward] = None,
    samples: int = 4096,
) -> DensityResult:
    """The eigenvalue density of the parameter Hessian by stochastic Lanczos quadrature.

    ``num_runs`` runs of ``lanczos_steps`` steps (``num_runs · lanczos_steps`` products).
    ``sigma`` (Gaussian broadening) defaults to 1% of the Ritz values' range; ``grid``
    defaults to ``num_points`` points from 5σ below the smallest to 5σ above the largest
    Ritz value. Pass a common ``grid`` and ``sigma`` to compare models on one axis.
    """
    num_runs = check_count("num_runs", num_runs)
    lanczos_steps = check_count("lanczos_steps", lanczos_steps)
    num_points = check_count("num_points", num_points, minimum=2)
    operator = ParameterHessian(model, data, loss_fn, forward=forward, samples=samples, seed=seed)
    generator = cpu_generator(seed, "slq")
    start = _rademacher((num_runs, operator.dim), generator).to(operator.device)
    run = lanczos(operator.rows, start, max_steps=lanczos_steps, generator=generator)
    theta, s, _ = run.ritz()
    nodes, weights = theta.cpu(), (s[:, 0, :] ** 2).cpu()
    return density_from_quadrature(nodes, weights, operator.dim, sigma=sigma, grid=grid, num_points=num_points)


def density_from_quadrature(
    nodes: Tensor,
    weights: Tensor,
    dim: int,
    *,
    sigma: Optional[float] = None,
    grid: Optional[Tensor] = None,
    num_points: int = 1000,
) -> DensityResult:
    """Broaden Ritz nodes/weights ``(runs, m)`` into a density on a grid (defaults as in ``hessian_density``)."""
    width = float(nodes.max() - nodes.min())
    if sigma is None:
        sigma = 0.01 * width if width > 0 else 0.01 * max(float(nodes.abs().max()), 1e-12)
    sigma = positive_real("sigma", sigma)
    if grid is None:
        grid = torch.linspace(float(nodes.min()) - 5 * sigma, float(nodes.max()) + 5 * sigma, num_points)
    grid = torch.as_tensor(grid, dtype=torch.float64)
    if grid.dim() != 1 or len(grid) < 2:
        raise ValueError(f"grid must be a 1-D tensor of at least 2 points, got shape {tuple(grid.shape)}")
    density = gaussian_density(nodes.double(), weights.double(), grid, sigma)
    return DensityResult(grid, density, nodes, weights, sigma, dim)


# --------------------------------------------------------------------------- input Hessian


def input_hessian_eigenvalues(
    model: nn.Module,
    loss_fn: Optional[LossFn],
    batch: Batch,
    k: int = 1,
    which: str = "largest",
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    forward: Optional[Forward] = None,
    return_eigenvectors: bool = False,
) -> EigenResult:
    """Each sample's ``k`` extreme input-Hessian eigenvalues, ``(B, k)``, by batched Lanczos."""
    operator = InputHessian(model, batch, loss_fn, forward=forward)
    run = _lanczos_extremes(operator, k, _check_which(which), max_iter, tol, seed, batched=True)
    return _extreme(run, k, which, tol, operator.dim, return_eigenvectors, batched=True)


def input_hessian_trace(
    model: nn.Module,
    loss_fn: Optional[LossFn],
    batch: Batch,
    num_probes: int = 64,
    seed: int = 0,
    *,
    forward: Optional[Forward] = None,
) -> TraceResult:
    """Each sample's input-Hessian trace by Hutchinson (Rademacher probes), ``(B,)`` ± ``(B,)``."""
    num_probes = check_count("num_probes", num_probes, minimum=2)
    operator = InputHessian(model, batch, loss_fn, forward=forward)
    generator = cpu_generator(seed, "input-hutchinson")
    values = []
    for _ in range(num_probes):
        z = _rademacher((operator.batch, operator.dim), generator).to(operator.device)
        values.append((z * operator.matvec(z)).sum(dim=1))
    values = torch.stack(values).cpu()
    return TraceResult(values.mean(dim=0), _stderr(values), values, num_probes, operator.dim)


# --------------------------------------------------------------------------- helpers


def _check_which(which: str) -> tuple[str, ...]:
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}")
    return (which,)


def _lanczos_extremes(operator, k, wanted, max_iter, tol, seed, batched=False) -> LanczosRun:
    k = check_count("k", k)
    max_iter = check_count("max_iter", max_iter)
    tol = positive_real("tol", tol)
    rows = operator.batch if batched else 1
    if k > operator.dim:
        raise ValueError(f"k must be <= the Hessian's dimension {operator.dim}, got {k}")
    if max_iter < min(len(wanted) * k, operator.dim):
        raise ValueError(f"max_iter must be >= {min(len(wanted) * k, operator.dim)} to find {k} eigenvalue(s)")
    generator = cpu_generator(seed, "lanczos")
    start = torch.randn(rows, operator.dim, generator=generator, dtype=torch.float64).to(operator.device)
    matvec = operator.matvec if batched else operator.rows
    return lanczos(
        matvec,
        start,
        max_steps=max_iter,
        tol=tol,
        k_largest=k if "largest" in wanted else 0,
        k_smallest=k if "smallest" in wanted else 0,
        generator=generator,
    )


def _extreme(
    run: LanczosRun, k: int, which: str, tol: float, dim: int, vectors: bool, batched: bool = False
) -> EigenResult:
    theta, s, residuals = run.ritz()
    index = torch.arange(run.steps - 1, run.steps - 1 - k, -1) if which == "largest" else torch.arange(k)
    values, res = theta[:, index], residuals[:, index]
    norm = theta.abs().amax(dim=1, keepdim=True)
    converged = run.steps == dim or bool((res <= tol * norm).all())
    eigenvectors = run.ritz_vectors(s[:, :, index]) if vectors else None
    if not batched:
        values, res = values[0], res[0]
        eigenvectors = eigenvectors[0] if eigenvectors is not None else None
    return EigenResult(which, values.cpu(), res.cpu(), converged, run.steps, tol, dim, eigenvectors)


def _rademacher(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.randint(0, 2, shape, generator=generator).to(torch.float64) * 2 - 1


def _stderr(values: Tensor) -> Union[float, Tensor]:
    """Standard error of the mean over dim 0 (``std`` with ``ddof=1``)."""
    err = values.std(dim=0, unbiased=True) / math.sqrt(values.shape[0])
    return float(err) if err.dim() == 0 else err
