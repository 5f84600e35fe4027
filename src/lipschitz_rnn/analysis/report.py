"""``run_analysis``: every curvature and robustness number of one trained model, as a JSON-able dict."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
from torch import nn

from ..data.base import SequenceTask
from ..stability import stability_reports
from ._common import (
    Batch,
    Forward,
    LossFn,
    check_count,
    finite_or_none,
    fixed_batches,
    model_device_dtype,
    model_parameters,
)
from .hessian import (
    CONDITION_NUMBER_DEFINITION,
    ParameterHessian,
    condition_number_from,
    hessian_density,
    hessian_extreme_eigenvalues,
    hessian_trace,
    input_hessian_eigenvalues,
    input_hessian_trace,
    ritz_value_resolved,
)
from .perturbation import DEFAULT_LEVELS, DEFINITIONS, KINDS, perturbation_curves

__all__ = ["PARTS", "run_analysis"]

PARTS = ("hessian", "input_hessian", "perturbation", "stability")
_METRICS = {"accuracy": "accuracy", "bpc": "bpc", "mse": "mse"}


def run_analysis(
    model: nn.Module,
    task: SequenceTask,
    *,
    samples: int = 4096,
    seed: int = 0,
    parts: Sequence[str] = PARTS,
    lanczos_steps: int = 100,
    tol: float = 1e-3,
    num_probes: int = 32,
    density_runs: int = 3,
    density_steps: int = 48,
    input_samples: int = 128,
    draws: int = 5,
    levels: Optional[Mapping[str, Sequence[float]]] = None,
    eval_samples: Optional[int] = None,
    batch_size: int = 256,
    loss_fn: Optional[LossFn] = None,
    forward: Optional[Forward] = None,
    log: Optional[Callable[[str], None]] = None,
) -> dict[str, Any]:
    """Curvature of the training loss and robustness of the test score, for one model on one task.

    Args:
        model: the trained model, e.g. a ``SequenceClassifier`` (batch-first or not).
        task: the task it was trained on.
        samples: training samples in the fixed Hessian dataset (``fixed_batches(task, samples,
            seed=seed)``: the first ``samples`` of the seeded training order; the same for
            every model compared with the same ``seed``).
        seed: seeds the Hessian subset, every random start and probe, and the noise draws.
        parts: any of ``"hessian"`` (parameter Hessian), ``"input_hessian"``, ``"perturbation"``,
            ``"stability"`` (the certificates of :mod:`lipschitz_rnn.stability` for each Lipschitz or
            AntisymmetricRNN cell at the trained weights; cheap, no data).
        lanczos_steps, tol: Lanczos budget and relative residual tolerance for λ_max and λ_min
            (one shared run, until both ends converge).
        num_probes: Hutchinson probes, for the parameter and the input Hessian traces.
        density_runs, density_steps: stochastic Lanczos quadrature runs and steps per run.
        input_samples: samples (the first of the Hessian dataset) whose input Hessians are analysed.
        draws, levels: noise draws per level, and ``{kind: levels}`` overriding ``DEFAULT_LEVELS``.
        eval_samples: test samples for the perturbation curves (None: the whole test split).
        batch_size: batch size for every pass over data.
        loss_fn, forward: override the loss (default: cross-entropy, MSE for float targets) and
            the model call (default: ``batch_first_forward(model)``).
        log: called with a line of progress text per step (e.g. ``print``).

    Returns:
        ``{"task", "model", "settings", "definitions", "caveats", "hessian", "input_hessian",
        "perturbation", "stability", "seconds"}``; only the requested parts. Highlights:
        ``hessian["lambda_max"]``, ``["lambda_min"]``, ``["condition_number"]``,
        ``["trace"]["estimate"]`` ± ``["trace"]["stderr"]``, ``["density"]`` (grid, density,
        nodes, weights); ``input_hessian["lambda_max"]["mean"]``, ``["trace"]["mean"]``;
        ``perturbation["curves"][kind]`` (levels, mean, std, draws); ``stability["layer0"]["c1"]["margin"]``,
        ``["discrete"]["D=0"]["max_abs_R"]`` (``StabilityReport.to_dict()`` per layer). Non-finite numbers are
        ``None``, and so is ``condition_number`` when λ_min is not resolved (a caveat says so).

    Cost: one parameter Hessian-vector product is a forward pass and two backward passes
    over all ``samples`` on the reference backend (roughly three training epochs' worth of
    compute over that many samples, at eager speed). The defaults spend at most
    ``lanczos_steps + num_probes + density_runs · density_steps`` = 276 of them.

    Example:
        >>> result = run_analysis(model, build_task("smnist"), samples=4096, seed=0)  # doctest: +SKIP
        >>> result["hessian"]["lambda_max"], result["hessian"]["trace"]["estimate"]   # doctest: +SKIP
    """
    if not isinstance(task, SequenceTask):
        raise TypeError(f"task must be a SequenceTask, got {type(task).__name__}")
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"parts has unknown entries {sorted(unknown)}; expected some of {', '.join(PARTS)}")
    if not parts:
        raise ValueError(f"parts is empty; expected some of {', '.join(PARTS)}")
    samples = check_count("samples", samples)
    input_samples = check_count("input_samples", input_samples)
    # every part's options before any part runs: a bad one must not cost a finished Hessian
    lanczos_steps = check_count("lanczos_steps", lanczos_steps)
    num_probes = check_count("num_probes", num_probes, minimum=2)
    density_runs = check_count("density_runs", density_runs)
    density_steps = check_count("density_steps", density_steps)
    draws = check_count("draws", draws)
    batch_size = check_count("batch_size", batch_size)
    if eval_samples is not None:
        eval_samples = check_count("eval_samples", eval_samples)
    say = log if log is not None else (lambda line: None)
    device, dtype = model_device_dtype(model)

    result: dict[str, Any] = {
        "task": {"name": task.name, "source": task.source, "metric": task.metric, "info": dict(task.info)},
        "model": {
            "class": type(model).__name__,
            "num_parameters": sum(p.numel() for p in model_parameters(model)),
            "dtype": str(dtype).replace("torch.", ""),
            "device": str(device),
        },
        "settings": {
            "samples": samples,
            "seed": seed,
            "hessian_split": "train",
            "lanczos_steps": lanczos_steps,
            "tol": tol,
            "num_probes": num_probes,
            "density_runs": density_runs,
            "density_steps": density_steps,
            "input_samples": input_samples,
            "draws": draws,
            "levels": {kind: list((levels or {}).get(kind, DEFAULT_LEVELS[kind])) for kind in KINDS},
            "eval_split": "test",
            "eval_samples": eval_samples,
            "batch_size": batch_size,
            "loss": "custom" if loss_fn is not None else "cross-entropy (MSE for float targets), mean over samples",
        },
        "definitions": {
            "hessian": "Hessian of the mean training loss over the fixed samples w.r.t. all trainable parameters, "
            "model in eval mode on the reference backend",
            "condition_number": CONDITION_NUMBER_DEFINITION,
            "trace": "Hutchinson with Rademacher probes; stderr = std(ddof=1)/sqrt(num_probes)",
            "density": "stochastic Lanczos quadrature, Gaussian broadening sigma = 1% of the Ritz range",
            "stability": "lipschitz_rnn.stability.stability_report of each Lipschitz/AntisymmetricRNN cell, in model "
            "order (layer0, layer1, ...); no entry for cells without certificates",
            "input_hessian": "per-sample Hessian of the sample's loss w.r.t. its whole input sequence (T*p)",
            **{f"noise_{kind}": text for kind, text in DEFINITIONS.items()},
        },
        "caveats": [],
        "seconds": {},
    }
    if task.stateful:
        result["caveats"].append("stateful task: every batch is run from a zero initial state")

    batches: list[Batch] = []
    if "hessian" in parts or "input_hessian" in parts:
        batches = fixed_batches(task, samples, batch_size=batch_size, seed=seed)
        if sum(len(x) for x, _ in batches) < samples:
            result["caveats"].append(f"the training split has fewer than {samples} samples; used all of them")
    common = {"forward": forward, "seed": seed}

    if "hessian" in parts:
        start = time.perf_counter()
        say("parameter Hessian: loss and gradient")
        loss, grad_norm = ParameterHessian(model, batches, loss_fn, forward=forward).loss_and_gradient_norm()
        say(f"parameter Hessian: extreme eigenvalues (Lanczos, up to {lanczos_steps} steps)")
        largest, smallest = hessian_extreme_eigenvalues(
            model, loss_fn, batches, max_iter=lanczos_steps, tol=tol, **common
        )
        say(f"parameter Hessian: trace ({num_probes} probes)")
        trace = hessian_trace(model, loss_fn, batches, num_probes, **common)
        say(f"parameter Hessian: density ({density_runs} x {density_steps} Lanczos steps)")
        density = hessian_density(model, loss_fn, batches, num_runs=density_runs, lanczos_steps=density_steps, **common)
        lam_max, lam_min = float(largest.eigenvalues[0]), float(smallest.eigenvalues[0])
        min_residual = float(smallest.residuals[0])
        resolved = ritz_value_resolved(lam_min, min_residual)
        result["hessian"] = {
            "samples": sum(len(x) for x, _ in batches),
            "dim": largest.dim,
            "loss": loss,
            "grad_norm": grad_norm,
            "lambda_max": lam_max,
            "lambda_min": lam_min,
            # an unresolved lambda_min is only an upper bound: no condition number from it
            "condition_number": finite_or_none(condition_number_from(lam_max, lam_min)) if resolved else None,
            "largest": largest.to_dict(),
            "smallest": smallest.to_dict(),
            "trace": trace.to_dict(),
            "density": density.to_dict(),
        }
        if not (largest.converged and smallest.converged):
            result["caveats"].append(
                f"Lanczos did not reach tol={tol} within {lanczos_steps} steps "
                f"(largest converged: {largest.converged}, smallest: {smallest.converged}); see residuals"
            )
        if not resolved:
            result["caveats"].append(
                f"lambda_min not resolved: its Ritz value {lam_min:.4g} has residual {min_residual:.4g}, larger than "
                "itself, so it only bounds lambda_min from above; condition_number is left out (raise lanczos_steps "
                "or lower tol)"
            )
        result["seconds"]["hessian"] = time.perf_counter() - start

    if "input_hessian" in parts:
        start = time.perf_counter()
        batch = _first_samples(batches, input_samples)
        say(f"input Hessian: {len(batch[0])} samples")
        top = input_hessian_eigenvalues(model, loss_fn, batch, max_iter=lanczos_steps, tol=tol, **common)
        trace = input_hessian_trace(model, loss_fn, batch, num_probes, **common)
        result["input_hessian"] = {
            "samples": len(batch[0]),
            "dim": top.dim,
            "lambda_max": _summary(top.eigenvalues[:, 0].tolist()),
            "lambda_max_converged": top.converged,
            "trace": {
                **_summary(trace.estimate.tolist()),
                "stderr_of_mean": float((trace.stderr**2).sum().sqrt() / len(trace.stderr)),
                "stderr": trace.stderr.tolist(),
            },
        }
        result["seconds"]["input_hessian"] = time.perf_counter() - start

    if "perturbation" in parts:
        start = time.perf_counter()
        say(f"perturbation: {', '.join(KINDS)} x {draws} draws")
        metric = _METRICS.get(task.metric, "accuracy")
        data = _Truncated(task, "test", batch_size, eval_samples)
        curves = perturbation_curves(model, data, levels=levels, draws=draws, seed=seed, metric=metric, forward=forward)
        result["perturbation"] = {
            "metric": metric,
            "clean": next(iter(curves.values())).clean,
            "curves": {kind: curve.to_dict() for kind, curve in curves.items()},
        }
        result["seconds"]["perturbation"] = time.perf_counter() - start

    if "stability" in parts:
        start = time.perf_counter()
        say("stability certificates")
        result["stability"] = {name: report.to_dict() for name, report in stability_reports(model).items()}
        if not result["stability"]:
            result["caveats"].append("no Lipschitz or AntisymmetricRNN cell: no stability certificates")
        result["seconds"]["stability"] = time.perf_counter() - start
    return result


def _first_samples(batches: list[Batch], count: int) -> Batch:
    x = torch.cat([x for x, _ in batches])[:count]
    y = torch.cat([y for _, y in batches])[:count]
    return x, y


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "per_sample": values,
    }


class _Truncated:
    """A task split's batches in their fixed order, cut after ``limit`` samples (None: all)."""

    def __init__(self, task: SequenceTask, split: str, batch_size: int, limit: Optional[int]) -> None:
        self.task, self.split, self.batch_size = task, split, batch_size
        self.limit = None if limit is None else check_count("eval_samples", limit)

    def __iter__(self) -> Iterator[Batch]:
        taken = 0
        for x, y in self.task.batches(self.split, self.batch_size):
            if self.limit is not None:
                x, y = x[: self.limit - taken], y[: self.limit - taken]
            if len(x) == 0:
                return
            taken += len(x)
            yield x, y
