"""The task interface the training loop consumes, and the task registry.

A task owns its data in memory and hands out batches in a reproducible order:

    task = build_task("smnist", data_dir=None, permutation=None, ...)
    for x, y in task.batches("train", batch_size=128, epoch=3, seed=0, start=0, rank=0, world_size=1):
        ...

* ``x``: float32 ``(B, T, input_size)``, batch-first.
* ``y``: int64 ``(B,)`` class labels (``readout="last"``), int64 ``(B, T)`` per-step targets
  (``readout="all"``, e.g. next character), or float32 ``(B,)`` (``metric="mse"``).
* The order of training batches is a pure function of ``(seed, epoch)``; ``start`` skips
  the first ``start`` batches of that order (exact mid-epoch resume). With ``world_size``
  > 1, global batch ``k`` is the same set of samples as with one process, and rank ``r``
  gets its ``r``-th equal slice (``batch_size`` is the global batch).
* Evaluation splits (``"val"``, ``"test"``) come in a fixed order, every sample once
  (the last batch may be smaller), identical on every call. ``eval_batches`` is what an
  evaluation reads: all of them, or with ``limit`` a part of the split (``train.limit_eval_batches``).
* ``stateful`` tasks (truncated BPTT over one long stream) expect the caller to carry the
  hidden state from one batch to the next within an epoch.
* ``causal`` tasks have per-step targets that are later inputs (next-token prediction): a model
  must not read ahead, so the harness refuses a bidirectional RNN for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from torch import Tensor

from ..registry import Registry

__all__ = ["TASKS", "SequenceTask", "build_task"]

Batch = tuple[Tensor, Tensor]


@dataclass
class SequenceTask:
    """Metadata every task carries; subclasses implement ``batches`` and ``num_batches``."""

    name: str
    input_size: int
    num_classes: int  # classes, vocabulary size for per-step prediction, or 1 for regression
    seq_len: int
    metric: str  # "accuracy" | "bpc" | "mse"
    readout: str  # "last" | "all"
    source: str  # data source label for reports, e.g. "CIFAR-10 (JPEG q75 copy)"
    info: dict[str, Any] = field(default_factory=dict)  # protocol choices: permutation, split seed, ...
    stateful: bool = False
    causal: bool = False  # step t's target is a later input: no bidirectional model
    sizes: dict[str, int] = field(default_factory=dict)  # samples (or tokens) per split

    # Where a task may build its batches (None: the CPU). The harness sets the run's device, so
    # that tasks which synthesise large inputs (noise-padded CIFAR: 128 x 1000 x 96 floats per
    # batch) make them there instead of on the CPU and copying; others ignore it.
    batch_device = None

    def eval_batches(
        self, split: str, batch_size: int, *, limit: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        """The batches an evaluation of ``split`` reads: every batch, or with ``limit`` > 0 only ``limit`` of them.

        Here the first ``limit`` batches in the split's order (a stream, as PTB's, cannot be sampled);
        tasks of independent samples take a fixed random subset instead (``IndexedTask``).
        """
        for index, batch in enumerate(self.batches(split, batch_size, rank=rank, world_size=world_size)):
            if limit and index >= limit:
                return
            yield batch

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        epoch: int = 0,
        seed: int = 0,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[Batch]:
        raise NotImplementedError

    def num_batches(self, split: str, batch_size: int) -> int:
        raise NotImplementedError


TASKS: Registry[Callable[..., SequenceTask]] = Registry("task")


def build_task(name: str, **options: Any) -> SequenceTask:
    """A registered task by name; ``options`` go to its builder (unknown options raise ``TypeError``)."""
    return TASKS.get(name)(**options)
