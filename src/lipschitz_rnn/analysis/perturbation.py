"""Test performance under input and parameter noise, averaged over seeded noise draws.

Three perturbations, each at a grid of levels (defaults chosen for MNIST-like inputs in
[0, 1]; the paper's exact levels were not recovered):

* ``"gaussian"``: white Gaussian input noise, ``x + σ·ε``, ε ~ N(0, 1) i.i.d. per entry, not
  clipped. Default σ ∈ ``GAUSSIAN_SIGMAS`` = (0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5).
* ``"salt_pepper"``: each input entry independently, with probability ``p``, is replaced by
  the low or the high end of the clean input range (each with probability ½). The range is
  the min and max over the clean evaluation inputs unless ``input_range`` is given.
  Default p ∈ ``SALT_PEPPER_FRACTIONS`` = (0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3).
* ``"parameter"``: relative Gaussian noise on every trainable weight, element-wise:
  ``w + σ·|w|·ε``, ε ~ N(0, 1). Each weight moves by about ``σ`` of its own size (zero
  weights stay zero; the perturbation is invariant to rescaling a layer); biases and the
  readout included, buffers untouched. The weights are restored bit-exactly afterwards.
  Default σ ∈ ``PARAMETER_SIGMAS`` = (0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3).

Draw ``d`` of a kind uses noise seeded by ``(seed, kind, d)`` from a CPU generator, the same
at every level (common random numbers: curves are smooth in the level, and two models
evaluated on the same data in the same batches see the same noise), on every device, in
every process. The input noise depends on the batch layout: keep ``batch_size`` fixed.
Level 0 reproduces the clean score exactly. Results report the mean, the sample standard
deviation (ddof = 1) and every draw.

Example:
    >>> curves = perturbation_curves(model, test_batches, draws=5, seed=0)   # doctest: +SKIP
    >>> curves["gaussian"].mean                                               # doctest: +SKIP
    [0.985, 0.983, 0.97, ...]
"""

from __future__ import annotations

import math
import statistics
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..data.base import SequenceTask
from ._common import (
    Batch,
    Forward,
    batch_first_forward,
    check_count,
    cpu_generator,
    model_device_dtype,
    model_parameters,
    positive_real,
    reiterable,
    to_model,
)

__all__ = [
    "DEFAULT_LEVELS",
    "GAUSSIAN_SIGMAS",
    "KINDS",
    "PARAMETER_SIGMAS",
    "SALT_PEPPER_FRACTIONS",
    "PerturbationCurve",
    "clean_input_range",
    "evaluate",
    "gaussian_noise",
    "parameter_noise",
    "perturbation_curve",
    "perturbation_curves",
    "salt_and_pepper",
]

GAUSSIAN_SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
SALT_PEPPER_FRACTIONS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
PARAMETER_SIGMAS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
DEFAULT_LEVELS: dict[str, tuple[float, ...]] = {
    "gaussian": GAUSSIAN_SIGMAS,
    "salt_pepper": SALT_PEPPER_FRACTIONS,
    "parameter": PARAMETER_SIGMAS,
}
KINDS = tuple(DEFAULT_LEVELS)
DEFINITIONS = {
    "gaussian": "x + sigma * N(0, 1) per input entry (not clipped)",
    "salt_pepper": "each input entry, with probability p, set to the low or high end (1/2 each) "
    "of the clean input range",
    "parameter": "every trainable weight w -> w + sigma * |w| * N(0, 1), element-wise; restored exactly afterwards",
}

Metric = Union[str, Callable[[Tensor, Tensor], Tensor]]
EvalData = Union[SequenceTask, Iterable[Batch], Batch]


# --------------------------------------------------------------------------- noise


def gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """``x + sigma · ε`` with ε ~ N(0, 1) drawn from the (CPU) ``generator``."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x + sigma * noise.to(x.device)


def salt_and_pepper(x: Tensor, fraction: float, low: float, high: float, generator: torch.Generator) -> Tensor:
    """Each entry, with probability ``fraction``, replaced by ``low`` or ``high`` (½ each)."""
    hit = torch.rand(x.shape, generator=generator).to(x.device) < fraction
    salt = torch.rand(x.shape, generator=generator).to(x.device) < 0.5
    extremes = torch.where(salt, torch.as_tensor(high, dtype=x.dtype), torch.as_tensor(low, dtype=x.dtype))
    return torch.where(hit, extremes.to(x.device), x)


@contextmanager
def parameter_noise(model: nn.Module, sigma: float, generator: torch.Generator) -> Iterator[nn.Module]:
    """Within the block every trainable weight is ``w + sigma·|w|·ε``; restored bit-exactly on exit.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> before = model.weight.clone()
        >>> with parameter_noise(model, 0.1, torch.Generator().manual_seed(0)):
        ...     bool((model.weight != before).any())
        True
        >>> bool(torch.equal(model.weight, before))
        True
    """
    sigma = positive_real("sigma", sigma, allow_zero=True)
    params = model_parameters(model)
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p in params:
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                p.add_(sigma * p.abs() * noise)
        yield model
    finally:
        with torch.no_grad():
            for p, original in zip(params, saved):
                p.copy_(original)


# --------------------------------------------------------------------------- evaluation


def evaluate(
    model: nn.Module,
    data: EvalData,
    *,
    metric: Metric = "accuracy",
    forward: Optional[Forward] = None,
    transform: Optional[Callable[[Tensor], Tensor]] = None,
    split: str = "test",
    batch_size: int = 1000,
) -> float:
    """The mean of ``metric`` over every sample (or target step) of ``data``, in eval mode, without gradients.

    ``metric``: ``"accuracy"`` (fraction of correct argmax predictions), ``"mse"``, ``"bpc"``
    (cross-entropy in bits), or a callable ``(logits, y) -> tensor`` of per-element values.
    ``transform`` is applied to each batch's ``x`` (on the CPU, before the move to the model's
    device). ``data``: a task (its ``split``, in ``batch_size`` batches), batches, or one batch.
    The model's backend is left as it is (fast backends are fine: no double backward here).
    """
    per_element = _metric_fn(metric)
    forward = forward if forward is not None else batch_first_forward(model)
    device, dtype = model_device_dtype(model)
    total, count = 0.0, 0
    training = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            for x, y in reiterable(data, split=split, batch_size=batch_size)():
                if transform is not None:
                    x = transform(x)
                x, y = to_model((x, y), device, dtype)
                values = per_element(forward(x), y)
                total += float(values.sum(dtype=torch.float64))
                count += values.numel()
    finally:
        for module, flag in training.items():
            module.training = flag
    if count == 0:
        raise ValueError("data yielded no samples to evaluate")
    return total / count


def clean_input_range(data: EvalData, *, split: str = "test", batch_size: int = 1000) -> tuple[float, float]:
    """``(min, max)`` over every input entry of ``data``."""
    low, high = math.inf, -math.inf
    for x, _ in reiterable(data, split=split, batch_size=batch_size)():
        low, high = min(low, float(x.min())), max(high, float(x.max()))
    if low > high:
        raise ValueError("data yielded no inputs")
    return low, high


# --------------------------------------------------------------------------- curves


@dataclass
class PerturbationCurve:
    """Score at each noise level: ``mean[i]``, ``std[i]`` (ddof = 1) over ``draws[i]`` (one value per draw)."""

    kind: str
    levels: list[float]
    mean: list[float]
    std: list[float]
    draws: list[list[float]]
    clean: float
    metric: str
    seed: int
    definition: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "levels": self.levels,
            "mean": self.mean,
            "std": self.std,
            "draws": self.draws,
            "clean": self.clean,
            "metric": self.metric,
            "seed": self.seed,
            "definition": self.definition,
        }


def perturbation_curve(
    model: nn.Module,
    data: EvalData,
    kind: str,
    levels: Optional[Sequence[float]] = None,
    *,
    draws: int = 5,
    seed: int = 0,
    metric: Metric = "accuracy",
    forward: Optional[Forward] = None,
    input_range: Optional[tuple[float, float]] = None,
    clean: Optional[float] = None,
    split: str = "test",
    batch_size: int = 1000,
) -> PerturbationCurve:
    """The score under ``kind`` noise (``"gaussian"``, ``"salt_pepper"``, ``"parameter"``) at each level.

    ``levels`` default to ``DEFAULT_LEVELS[kind]``; ``clean`` (the unperturbed score) is
    computed unless given. See the module docstring for the noise definitions.
    """
    if kind not in DEFAULT_LEVELS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    levels = [positive_real("levels", level, allow_zero=True) for level in _or(levels, DEFAULT_LEVELS[kind])]
    if not levels:
        raise ValueError("levels must hold at least one noise level")
    if kind == "salt_pepper" and any(level > 1 for level in levels):
        raise ValueError(f"salt_pepper levels are probabilities in [0, 1], got {levels}")
    draws = check_count("draws", draws)
    data = _Replay(reiterable(data, split=split, batch_size=batch_size))
    common = {"metric": metric, "forward": forward, "split": split, "batch_size": batch_size}
    if clean is None:
        clean = evaluate(model, data, **common)
    if kind == "salt_pepper" and input_range is None:
        input_range = clean_input_range(data)
    scores: list[list[float]] = []
    for level in levels:
        row = []
        for draw in range(draws):
            generator = cpu_generator(seed, kind, draw)  # same noise at every level
            if kind == "parameter":
                with parameter_noise(model, level, generator):
                    row.append(evaluate(model, data, **common))
                continue
            transform = _input_noise(kind, level, generator, input_range)
            row.append(evaluate(model, data, transform=transform, **common))
        scores.append(row)
    return PerturbationCurve(
        kind=kind,
        levels=levels,
        mean=[_mean(row) for row in scores],
        std=[statistics.stdev(row) if len(row) > 1 else 0.0 for row in scores],
        draws=scores,
        clean=clean,
        metric=metric if isinstance(metric, str) else getattr(metric, "__name__", "custom"),
        seed=seed,
        definition=DEFINITIONS[kind],
    )


def perturbation_curves(
    model: nn.Module,
    data: EvalData,
    kinds: Sequence[str] = KINDS,
    *,
    levels: Optional[Mapping[str, Sequence[float]]] = None,
    draws: int = 5,
    seed: int = 0,
    metric: Metric = "accuracy",
    forward: Optional[Forward] = None,
    input_range: Optional[tuple[float, float]] = None,
    split: str = "test",
    batch_size: int = 1000,
) -> dict[str, PerturbationCurve]:
    """``perturbation_curve`` for each kind (the clean score computed once); ``levels`` maps kind -> grid."""
    levels = dict(levels or {})
    unknown = set(levels) - set(KINDS)
    if unknown:
        raise ValueError(f"levels has unknown kinds {sorted(unknown)}; expected some of {', '.join(KINDS)}")
    data = _Replay(reiterable(data, split=split, batch_size=batch_size))
    common = {"metric": metric, "forward": forward, "split": split, "batch_size": batch_size}
    clean = evaluate(model, data, **common)
    return {
        kind: perturbation_curve(
            model,
            data,
            kind,
            levels.get(kind),
            draws=draws,
            seed=seed,
            input_range=input_range,
            clean=clean,
            **common,
        )
        for kind in kinds
    }


def _input_noise(
    kind: str, level: float, generator: torch.Generator, value_range: Optional[tuple[float, float]]
) -> Callable[[Tensor], Tensor]:
    if kind == "gaussian":
        return lambda x: gaussian_noise(x, level, generator)
    low, high = value_range
    return lambda x: salt_and_pepper(x, level, low, high, generator)


def _mean(values: list[float]) -> float:
    """The mean, shifted by the first value: identical values average to exactly themselves."""
    return values[0] + statistics.fmean(v - values[0] for v in values)


def _or(value, default):
    return default if value is None else value


class _Replay:
    """An iterable that replays the same batches each time it is iterated."""

    def __init__(self, make_iterator: Callable[[], Iterator[Batch]]) -> None:
        self._make_iterator = make_iterator

    def __iter__(self) -> Iterator[Batch]:
        return iter(self._make_iterator())


def _metric_fn(metric: Metric) -> Callable[[Tensor, Tensor], Tensor]:
    if callable(metric):
        return metric
    if metric == "accuracy":
        return lambda logits, y: (logits.argmax(dim=-1) == y).to(torch.float64)
    if metric == "mse":
        return lambda out, y: (out.squeeze(-1) - y) ** 2 if out.dim() == y.dim() + 1 else (out - y) ** 2
    if metric == "bpc":
        return lambda logits, y: (
            F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none") / math.log(2)
        )
    raise ValueError(f"metric must be 'accuracy', 'mse', 'bpc' or a callable, got {metric!r}")
