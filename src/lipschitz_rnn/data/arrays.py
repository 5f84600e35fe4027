"""Your own sequences as a task, in one call.

    >>> import numpy as np
    >>> from lipschitz_rnn.data import from_arrays
    >>> rng = np.random.default_rng(0)
    >>> task = from_arrays(rng.normal(size=(100, 30, 4)), rng.integers(0, 3, 100),
    ...                    rng.normal(size=(20, 30, 4)), rng.integers(0, 3, 20), name="mine", val_split=0.1)
    >>> task.seq_len, task.input_size, task.num_classes, task.sizes
    (30, 4, 3, {'train': 90, 'val': 10, 'test': 20})
    >>> x, y = next(task.batches("train", batch_size=16, epoch=0, seed=0))
    >>> tuple(x.shape), x.dtype, y.dtype
    ((16, 30, 4), torch.float32, torch.int64)

``x`` is ``(n, T, p)`` or ``(n, T)`` (one feature per step); values are used as given (cast
to float32 per batch; pass uint8 to keep a large dataset compact). ``y`` holds integer
class labels ``(n,)`` (classify the sequence: readout ``last``) or ``(n, T)`` (a label per
step: readout ``all``). Then train it like any registered task.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .base import Batch
from .batching import IndexedTask, apply_train_subset, resolve_val_split

__all__ = ["ArrayTask", "from_arrays"]

ArrayLike = Union[np.ndarray, Tensor]


def _as_numpy(name: str, value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")


class ArrayTask(IndexedTask):
    """Classification of in-memory sequences ``x[i]`` with labels ``y[i]``."""

    def __init__(
        self,
        x: dict[str, np.ndarray],
        y: dict[str, np.ndarray],
        *,
        name: str,
        num_classes: int,
        train_index: np.ndarray,
        val_index: np.ndarray,
        info: dict[str, Any],
    ) -> None:
        _, steps, features = x["train"].shape
        super().__init__(
            name=name,
            input_size=features,
            num_classes=num_classes,
            seq_len=steps,
            metric="accuracy",
            readout="all" if y["train"].ndim == 2 else "last",
            source=f"user arrays ({name})",
            sizes={"train": len(train_index), "val": len(val_index), "test": len(x["test"])},
            info=info,
        )
        self._x = {split: torch.from_numpy(np.ascontiguousarray(array)) for split, array in x.items()}
        self._y = {split: torch.from_numpy(array.astype(np.int64)) for split, array in y.items()}
        self._index = {
            "train": torch.from_numpy(train_index.astype(np.int64)),
            "val": torch.from_numpy(val_index.astype(np.int64)),
            "test": torch.arange(len(x["test"])),
        }

    def make_batch(self, split: str, index: Tensor, key: Optional[tuple[int, int, int]], position: Tensor) -> Batch:
        storage = "test" if split == "test" else "train"
        return self._x[storage][index].to(torch.float32), self._y[storage][index]


def from_arrays(
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_test: ArrayLike,
    y_test: ArrayLike,
    *,
    name: str = "arrays",
    val_split: Union[str, float] = "none",
    split_seed: Optional[int] = None,
    train_subset: Optional[int] = None,
    num_classes: Optional[int] = None,
) -> ArrayTask:
    """A sequence-classification task from arrays (see the module docstring for shapes).

    ``val_split``: ``"none"`` (default), a fraction in (0, 1), ``"reference"`` (2,000 samples) or
    ``"reference-code"`` (3,000), held out with ``numpy.random.RandomState(split_seed=1234)``
    (:func:`~lipschitz_rnn.data.batching.resolve_val_split`). ``num_classes`` defaults to the largest label + 1.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    x = {"train": _as_numpy("x_train", x_train), "test": _as_numpy("x_test", x_test)}
    y = {"train": _as_numpy("y_train", y_train), "test": _as_numpy("y_test", y_test)}
    for split in ("train", "test"):
        if x[split].ndim == 2:
            x[split] = x[split][:, :, None]
        if x[split].ndim != 3:
            raise ValueError(f"x_{split} must be (n, T, p) or (n, T), got shape {x[split].shape}")
        if not (np.issubdtype(x[split].dtype, np.floating) or np.issubdtype(x[split].dtype, np.integer)):
            raise TypeError(f"x_{split} must hold numbers, got dtype {x[split].dtype}")
        if not np.issubdtype(y[split].dtype, np.integer):
            raise TypeError(f"y_{split} must hold integer class labels, got dtype {y[split].dtype}")
        if y[split].ndim not in (1, 2) or len(y[split]) != len(x[split]):
            raise ValueError(f"y_{split} must be (n,) or (n, T) with n = len(x_{split}), got shape {y[split].shape}")
        if y[split].ndim == 2 and y[split].shape[1] != x[split].shape[1]:
            raise ValueError(f"per-step labels y_{split} must have T = {x[split].shape[1]} columns")
    if x["train"].shape[1:] != x["test"].shape[1:] or y["train"].ndim != y["test"].ndim:
        raise ValueError(f"train and test disagree: x {x['train'].shape} vs {x['test'].shape}")
    labels = np.concatenate([y["train"].ravel(), y["test"].ravel()])
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative integers")
    classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1 or labels.max() >= classes:
        raise ValueError(f"num_classes must be an int above every label (max label {int(labels.max())}), got {classes}")
    train_index, val_index, split_info = resolve_val_split(
        len(x["train"]), val_split, split_seed=split_seed, default="none"
    )
    train_index = apply_train_subset(train_index, train_subset)
    digest = hashlib.sha256()
    for array in (x["train"], y["train"], x["test"], y["test"]):
        digest.update(np.ascontiguousarray(array).tobytes())
    info = {"dataset": name, "data_sha256": digest.hexdigest(), "val_split": split_info, "train_subset": train_subset}
    return ArrayTask(x, y, name=name, num_classes=classes, train_index=train_index, val_index=val_index, info=info)
