"""Synthetic long-memory probes: the adding problem and the copy-memory task.

Sample ``i`` of split ``s`` is a pure function of ``(data_seed, s, i)`` (a counter-based
generator), so nothing is stored, any split size costs nothing, and a sample is the same
in every batch, order and rank.

* ``adding`` (Hochreiter & Schmidhuber; Arjovsky et al.): ``length`` steps of
  ``(value ~ U[0, 1], marker in {0, 1})``; one marker in each half; target = sum of the two
  marked values, float ``(B,)``; metric MSE (predicting 1 always scores about 0.167).
* ``copy`` (Arjovsky et al., 2016): 10 symbols from {1..8}, ``length - 1`` blanks (0), the
  delimiter 9, then 10 blanks during which the model must output the 10 symbols; inputs
  one-hot over 10 categories, ``length + 20`` steps; targets ``(B, length + 20)``: blank
  (0) everywhere except the symbols at the last 10 steps; 9 output classes. Metric:
  accuracy over every step of the sequence (readout ``all``), the convention that goes with
  the per-step cross-entropy; the memoryless baseline's cross-entropy is
  ``10 log 8 / (length + 20)``, recorded in ``task.info``. The copied symbols alone are
  scored by looking at the last 10 steps.

    >>> from lipschitz_rnn.data import build_task
    >>> task = build_task("adding", length=50, train_size=1000)
    >>> x, y = next(task.batches("train", batch_size=4, epoch=0, seed=0))
    >>> tuple(x.shape), tuple(y.shape), x[..., 1].sum(dim=1).tolist()
    ((4, 50, 2), (4,), [2.0, 2.0, 2.0, 2.0])
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .base import TASKS, Batch
from .batching import IndexedTask, hashed_uniform, mix_seed

__all__ = ["SyntheticTask"]

COPY_SYMBOLS = 10
COPY_ALPHABET = 8
COPY_DELIMITER = 9


def _positive_int(name: str, value: Any, default: int) -> int:
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


class SyntheticTask(IndexedTask):
    """Samples generated on demand from ``(data_seed, split, index)``."""

    def __init__(self, kind: str, *, length: int, sizes: dict[str, int], data_seed: int) -> None:
        if kind == "adding":
            spec = dict(input_size=2, num_classes=1, seq_len=length, metric="mse", readout="last")
            source = "synthetic: adding problem"
        else:
            spec = dict(input_size=COPY_DELIMITER + 1, num_classes=COPY_ALPHABET + 1, seq_len=length + 2 * COPY_SYMBOLS)
            spec.update(metric="accuracy", readout="all")
            source = "synthetic: copy memory"
        super().__init__(name=kind, source=source, sizes=dict(sizes), **spec)
        self._kind, self._length, self._data_seed = kind, length, data_seed
        self._index = {split: torch.arange(size) for split, size in sizes.items()}
        self.info = {"length": length, "data_seed": data_seed, "generator": "counter-based: (data_seed, split, index)"}

    def make_batch(self, split: str, index: Tensor, key: Optional[tuple[int, int, int]], position: Tensor) -> Batch:
        stream = mix_seed(self._kind, self._data_seed, split)
        if self._kind == "adding":
            return self._adding(stream, index)
        return self._copy(stream, index)

    def _adding(self, stream: int, index: Tensor) -> Batch:
        length, half = self._length, self._length // 2
        u = hashed_uniform(stream, index, length + 2)
        values = u[:, :length]
        first = np.floor(u[:, length] * half).astype(np.int64)
        second = half + np.floor(u[:, length + 1] * (length - half)).astype(np.int64)
        markers = np.zeros_like(values)
        rows = np.arange(len(index))
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        target = values[rows, first] + values[rows, second]
        x = torch.from_numpy(np.stack([values, markers], axis=-1).astype(np.float32))
        return x, torch.from_numpy(target.astype(np.float32))

    def _copy(self, stream: int, index: Tensor) -> Batch:
        b, length = len(index), self._length
        symbols = 1 + np.floor(hashed_uniform(stream, index, COPY_SYMBOLS) * COPY_ALPHABET).astype(np.int64)
        tokens = np.zeros((b, length + 2 * COPY_SYMBOLS), dtype=np.int64)
        tokens[:, :COPY_SYMBOLS] = symbols
        tokens[:, COPY_SYMBOLS + length - 1] = COPY_DELIMITER
        targets = np.zeros_like(tokens)
        targets[:, -COPY_SYMBOLS:] = symbols
        x = F.one_hot(torch.from_numpy(tokens), COPY_DELIMITER + 1).to(torch.float32)
        return x, torch.from_numpy(targets)


def _sizes(train_size: Optional[int], val_size: Optional[int], test_size: Optional[int]) -> dict[str, int]:
    sizes = {"train": _positive_int("train_size", train_size, 50_000)}
    sizes["val"] = 0 if val_size == 0 else _positive_int("val_size", val_size, 5_000)
    sizes["test"] = _positive_int("test_size", test_size, 10_000)
    return sizes


@TASKS.register("adding", "adding_problem")
def build_adding(
    *,
    length: Optional[int] = None,
    train_size: Optional[int] = None,
    val_size: Optional[int] = None,
    test_size: Optional[int] = None,
    data_seed: Optional[int] = None,
) -> SyntheticTask:
    """Adding problem. Defaults: ``length=100``, sizes 50,000 / 5,000 / 10,000 (``val_size=0``: no val), seed 0."""
    length = _positive_int("length", length, 100)
    if length < 2:
        raise ValueError(f"length must be >= 2 (one marker in each half), got {length}")
    task = SyntheticTask(
        "adding", length=length, sizes=_sizes(train_size, val_size, test_size), data_seed=_seed(data_seed)
    )
    task.info["rule"] = "markers at one uniform position in [0, length//2) and one in [length//2, length)"
    task.info["baseline_mse"] = 1 / 6  # always predicting 1: Var(u1 + u2) = 2/12
    return task


@TASKS.register("copy", "copy_memory")
def build_copy(
    *,
    length: Optional[int] = None,
    train_size: Optional[int] = None,
    val_size: Optional[int] = None,
    test_size: Optional[int] = None,
    data_seed: Optional[int] = None,
) -> SyntheticTask:
    """Copy memory with ``length`` blanks (default 100: 120 steps). Sizes and seed as ``adding``."""
    length = _positive_int("length", length, 100)
    task = SyntheticTask(
        "copy", length=length, sizes=_sizes(train_size, val_size, test_size), data_seed=_seed(data_seed)
    )
    task.info["metric_rule"] = "per-step accuracy over all length + 20 steps (targets blank except the last 10)"
    task.info["baseline_cross_entropy"] = COPY_SYMBOLS * math.log(COPY_ALPHABET) / (length + 2 * COPY_SYMBOLS)
    return task


def _seed(data_seed: Optional[int]) -> int:
    seed = 0 if data_seed is None else data_seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"data_seed must be a non-negative int, got {data_seed!r}")
    return seed
