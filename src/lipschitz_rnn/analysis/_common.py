"""Plumbing shared by the Hessian and perturbation analyses: model calls, data, losses, seeds.

Data everywhere is batch-first, as ``SequenceTask.batches`` yields it: ``x`` of shape
``(B, T, p)``, ``y`` of shape ``(B,)`` (class labels or regression targets) or ``(B, T)``
(per-step targets). ``batch_first_forward`` adapts a model to that layout.
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..data.base import SequenceTask

Batch = tuple[Tensor, Tensor]
Forward = Callable[[Tensor], Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
#: what the analyses accept as data: a task, a list of ``(x, y)`` batches, or one ``(x, y)`` batch
Data = Union[SequenceTask, Sequence[Batch], Batch]


def batch_first_forward(model: nn.Module) -> Forward:
    """``forward(x) -> logits`` for batch-first ``x`` ``(B, T, p)``, whatever the model's layout.

    A model with ``batch_first == False`` (a ``SequenceClassifier`` over a time-major RNN, or
    such an RNN's wrapper) gets ``x`` transposed to ``(T, B, p)``, and per-step logits
    ``(T, B, C)`` come back transposed to ``(B, T, C)``. A model without a ``batch_first``
    attribute (an MLP, a custom module) gets ``x`` as it is.

    Example:
        >>> import torch, lipschitz_rnn as lr
        >>> model = lr.SequenceClassifier(lr.build_model("lipschitz", 1, 8), num_classes=10)
        >>> batch_first_forward(model)(torch.rand(4, 28, 1)).shape   # model is time-major
        torch.Size([4, 10])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    time_major = hasattr(model, "batch_first") and not bool(model.batch_first)
    if not time_major:
        return model

    def forward(x: Tensor) -> Tensor:
        if x.dim() != 3:
            return model(x)
        out = model(x.transpose(0, 1))
        return out.transpose(0, 1) if out.dim() == 3 else out

    return forward


def default_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy for integer targets (``(B,)`` or per-step ``(B, T)``), mean squared error for float ones.

    Classification logits are ``(B, C)`` or ``(B, T, C)``; regression outputs ``(B, 1)`` or
    ``(B,)`` against ``y`` ``(B,)``.
    """
    if y.is_floating_point():
        out = logits.squeeze(-1) if logits.dim() == y.dim() + 1 and logits.shape[-1] == 1 else logits
        return F.mse_loss(out, y)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def model_parameters(model: nn.Module) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    return params


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in model.parameters():
        return tensor.device, tensor.dtype
    raise ValueError("model has no parameters")


def to_model(batch: Batch, device: torch.device, dtype: torch.dtype) -> Batch:
    """Move a batch to the model's device; floating inputs take the model's dtype."""
    x, y = batch
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"a batch must be a pair of tensors (x, y), got ({type(x).__name__}, {type(y).__name__})")
    x = x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)
    y = y.to(device=device, dtype=dtype if y.is_floating_point() else y.dtype)
    return x, y


def is_single_batch(data: object) -> bool:
    return isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)


def fixed_batches(
    task: SequenceTask, samples: int = 4096, *, split: str = "train", batch_size: int = 256, seed: int = 0
) -> list[Batch]:
    """The first ``samples`` samples of ``task``'s ``split`` in the order of ``(seed, epoch 0)``, as batches.

    A pure function of its arguments, so every Hessian-vector product (and every model
    compared) sees the same samples. For the training split the order is the task's seeded
    shuffle, so this is a seeded random subset; evaluation splits come in their fixed order.

    Example:
        >>> batches = fixed_batches(task, samples=4096, seed=0)          # doctest: +SKIP
        >>> sum(len(y) for _, y in batches)                               # doctest: +SKIP
        4096
    """
    if not isinstance(task, SequenceTask):
        raise TypeError(f"task must be a SequenceTask, got {type(task).__name__}")
    samples = check_count("samples", samples)
    batch_size = check_count("batch_size", batch_size)
    batches: list[Batch] = []
    taken = 0
    for x, y in task.batches(split, batch_size, epoch=0, seed=seed):
        keep = min(len(x), samples - taken)
        batches.append((x[:keep], y[:keep]))
        taken += keep
        if taken >= samples:
            break
    if not batches:
        raise ValueError(f"task {task.name!r} yielded no {split!r} batches")
    return batches


def as_batches(data: Data, *, samples: int = 4096, split: str = "train", batch_size: int = 256, seed: int = 0):
    """A list of batches from a task (``fixed_batches``), a sequence of batches, or one batch."""
    if isinstance(data, SequenceTask):
        return fixed_batches(data, samples, split=split, batch_size=batch_size, seed=seed)
    if is_single_batch(data):
        return [data]
    if isinstance(data, (str, bytes, Tensor)) or not isinstance(data, Iterable):
        raise TypeError(f"data must be a SequenceTask, a list of (x, y) batches or one (x, y) batch; got {type(data)}")
    batches = list(data)
    if not batches:
        raise ValueError("data must hold at least one (x, y) batch")
    for batch in batches:
        if not is_single_batch(batch):
            raise TypeError(f"every element of data must be an (x, y) pair of tensors, got {type(batch).__name__}")
    return batches


def reiterable(data: Union[SequenceTask, Iterable[Batch]], *, split: str, batch_size: int) -> Callable[[], Iterator]:
    """A function returning a fresh iterator over the same batches, in the same order, every call."""
    if isinstance(data, SequenceTask):
        return lambda: data.batches(split, batch_size)
    if is_single_batch(data):
        return lambda: iter([data])
    if isinstance(data, (str, bytes, Tensor)) or not isinstance(data, Iterable):
        raise TypeError(f"data must be a SequenceTask or an iterable of (x, y) batches, got {type(data).__name__}")
    if iter(data) is data:  # a one-shot iterator: keep its batches
        data = list(data)
    return lambda: iter(data)


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from ``seed`` and ``keys``; stable across processes (no ``hash()``)."""
    digest = hashlib.sha256(repr((int(seed), *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def cpu_generator(seed: int, *keys: object) -> torch.Generator:
    """Noise drawn from a CPU generator is the same on every device."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


def check_count(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def positive_real(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value}")
    return value


def finite_or_none(value: float) -> Optional[float]:
    """JSON has no inf/nan: report them as ``None``."""
    value = float(value)
    return value if math.isfinite(value) else None
