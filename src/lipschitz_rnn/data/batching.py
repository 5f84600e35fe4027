"""Shared machinery of the in-memory tasks: seeds, validation splits, batch order, rank slices.

:class:`IndexedTask` implements the ``SequenceTask`` batching contract once for every task
whose samples can be addressed by index: training order is a seeded permutation of the
training indices (a pure function of ``(seed, epoch)``), global batch ``k`` is positions
``k*B .. (k+1)*B`` of that order (the last batch may be smaller), rank ``r`` of ``W`` gets the
``r``-th of ``W`` near-equal contiguous parts of it (``torch.tensor_split``; exactly equal
whenever the batch size divides by ``W``, which is required), and evaluation splits keep
their stored order. Any randomness inside a batch (augmentation, noise) is keyed by
``(seed, epoch, batch index, position in the global batch)``, so a rank draws the same
values for its samples as a single process would, and a resumed run draws what the
uninterrupted run drew.

    >>> from lipschitz_rnn.data.batching import resolve_val_split
    >>> train, val, info = resolve_val_split(10, 0.2, split_seed=1234)
    >>> len(train), len(val), info["kind"]
    (8, 2, 'fraction')
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .base import Batch, SequenceTask

__all__ = [
    "SPLITS",
    "IndexedTask",
    "check_batch_args",
    "hashed_uniform",
    "mix_seed",
    "resolve_val_split",
    "seeded_generator",
]

SPLITS = ("train", "val", "test")
REFERENCE_VAL_SIZE = 2000
REFERENCE_SPLIT_SEED = 1234
#: samples each named validation split holds out (``resolve_val_split`` says which)
VAL_SPLIT_SIZES = {"reference": REFERENCE_VAL_SIZE, "reference-code": 3000}
_VAL_SPLIT_CHOICES = ", ".join(repr(name) for name in [*VAL_SPLIT_SIZES, "none"])


def mix_seed(*parts: Union[int, str]) -> int:
    """A 63-bit seed that depends on every part (stable across runs, platforms and Python versions)."""
    digest = hashlib.blake2b(repr(tuple(parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def seeded_generator(*parts: Union[int, str], device: Union[str, torch.device, None] = None) -> torch.Generator:
    """A generator seeded by :func:`mix_seed` of ``parts``, on ``device`` (CPU by default).

    CPU and CUDA generators draw different numbers from the same seed.
    """
    return torch.Generator(device=device or "cpu").manual_seed(mix_seed(*parts))


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    # SplitMix64 finaliser; uint64 array arithmetic wraps modulo 2**64 by design
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hashed_uniform(key: int, index: Union[np.ndarray, Tensor], width: int) -> np.ndarray:
    """Uniform [0, 1) numbers, shape ``(len(index), width)``; row ``i`` depends only on ``(key, index[i])``.

    A counter-based generator: any sample can be drawn on its own, in any batch, on any rank.
    """
    index = np.asarray(index, dtype=np.int64).astype(np.uint64)
    row = _splitmix64(_splitmix64(index ^ np.uint64(key)))
    column = np.arange(width, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
    bits = _splitmix64(row[:, None] ^ column[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def check_batch_args(split: str, batch_size: int, start: int, rank: int, world_size: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    for name, value, minimum in (("batch_size", batch_size, 1), ("start", start, 0), ("world_size", world_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, world_size={world_size}), got {rank!r}")
    if batch_size % world_size:
        raise ValueError(
            f"batch_size (the global batch) must be divisible by world_size={world_size}, got {batch_size}"
        )


def resolve_val_split(
    n: int,
    val_split: Union[str, float, None],
    *,
    split_seed: Optional[int] = None,
    default: str = "reference",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Training and validation indices into ``n`` training samples, and the protocol record.

    ``val_split``:

    * ``"reference"``: 2,000 samples held out with ``numpy.random.RandomState(1234)``, as REFERENCE.md §4
      states the reference protocol. It does not say which 2,000: here the first 2,000 of
      ``RandomState(1234).permutation(n)``.
    * ``"reference-code"``: the split of the authors' stored ``get_data.py`` (erichson/LipschitzRNN at
      5de6b7d, the version the final README's commands run): the *last* 3,000 of the same permutation.
    * a float in (0, 1): that fraction (rounded), the first of the permutation, as ``"reference"``;
    * ``"none"``: nothing held out.

    ``None`` means ``default``. Training indices are the rest of the permutation, in permutation order (so a
    ``train_subset`` prefix is a random subset), or ``0..n-1`` for ``"none"``.
    """
    if val_split is None:
        val_split = default
    seed = REFERENCE_SPLIT_SEED if split_seed is None else split_seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"split_seed must be a non-negative int, got {split_seed!r}")
    if isinstance(val_split, str):
        kind = val_split.lower()
        if kind == "none":
            return np.arange(n), np.arange(0), {"kind": "none", "train": n, "val": 0}
        if kind not in VAL_SPLIT_SIZES:
            raise ValueError(f"val_split must be {_VAL_SPLIT_CHOICES} or a fraction in (0, 1); got {val_split!r}")
        n_val = VAL_SPLIT_SIZES[kind]
    elif isinstance(val_split, float) and 0.0 < val_split < 1.0:
        kind, n_val = "fraction", round(val_split * n)
    else:
        raise ValueError(f"val_split must be {_VAL_SPLIT_CHOICES} or a fraction in (0, 1); got {val_split!r}")
    if not 0 < n_val < n:
        raise ValueError(f"val_split={val_split!r} holds out {n_val} of {n} training samples; need 0 < held out < {n}")
    permutation = np.random.RandomState(seed).permutation(n)
    if kind == "reference-code":  # torch Subset(R[0:n - val]), Subset(R[n - val:n]) in the authors' get_data.py
        train, val, held_out = permutation[: n - n_val], permutation[n - n_val :], "[n - val:]"
    else:
        train, val, held_out = permutation[n_val:], permutation[:n_val], "[:val]"
    info = {"kind": kind, "seed": seed, "rng": f"numpy.random.RandomState(seed).permutation(n){held_out}"}
    if kind == "fraction":
        info["fraction"] = val_split
    info.update(train=n - n_val, val=n_val)
    return train, val, info


def apply_train_subset(train_index: np.ndarray, train_subset: Optional[int]) -> np.ndarray:
    if train_subset is None:
        return train_index
    if isinstance(train_subset, bool) or not isinstance(train_subset, int):
        raise TypeError(f"train_subset must be an int or None, got {type(train_subset).__name__}")
    if not 1 <= train_subset <= len(train_index):
        raise ValueError(f"train_subset must be in [1, {len(train_index)}] (training samples after the split)")
    return train_index[:train_subset]


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value.lower()


class IndexedTask(SequenceTask):
    """A task whose samples are rows of in-memory arrays, addressed by index.

    Subclasses set ``self._index[split]`` (a LongTensor of indices into the split's storage)
    and implement :meth:`make_batch`.
    """

    _index: dict[str, Tensor]

    def make_batch(self, split: str, index: Tensor, key: Optional[tuple[int, int, int]], position: Tensor) -> Batch:
        """The batch of samples ``index`` of ``split``.

        ``key`` is ``(seed, epoch, batch index)`` for training batches and None for evaluation;
        ``position`` holds the samples' positions within the global batch (for per-sample
        randomness that does not depend on rank).
        """
        raise NotImplementedError

    def num_batches(self, split: str, batch_size: int) -> int:
        check_batch_args(split, batch_size, 0, 0, 1)
        return math.ceil(len(self._index[split]) / batch_size)

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
        check_batch_args(split, batch_size, start, rank, world_size)
        order = self._index[split]
        if split == "train":
            order = order[torch.randperm(len(order), generator=seeded_generator("order", seed, epoch))]
        train_key = (seed, epoch) if split == "train" else None  # keys per-sample randomness of training batches
        yield from self._batches_in(split, order, batch_size, start, rank, world_size, train_key)

    def eval_batches(
        self, split: str, batch_size: int, *, limit: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        """Every batch of ``split``, or with ``limit`` > 0 a fixed random subset of ``limit`` batches' samples.

        A stored order can be sorted by class (the CIFAR-10 JPEG copy is), so its first batches would
        measure one class. The subset depends only on the split and its size: the same on every call.
        """
        check_batch_args(split, batch_size, 0, rank, world_size)
        order = self._index[split]
        if limit and limit * batch_size < len(order):
            pick = torch.randperm(len(order), generator=seeded_generator("eval-subset", split))
            order = order[pick[: limit * batch_size]]
        yield from self._batches_in(split, order, batch_size, 0, rank, world_size, None)

    def _batches_in(
        self,
        split: str,
        order: Tensor,
        batch_size: int,
        start: int,
        rank: int,
        world_size: int,
        train_key: Optional[tuple[int, int]],
    ) -> Iterator[Batch]:
        for batch_index in range(start, math.ceil(len(order) / batch_size)):
            global_batch = order[batch_index * batch_size : (batch_index + 1) * batch_size]
            position = torch.tensor_split(torch.arange(len(global_batch)), world_size)[rank]
            key = None if train_key is None else (*train_key, batch_index)
            yield self.make_batch(split, global_batch[position], key, position)
