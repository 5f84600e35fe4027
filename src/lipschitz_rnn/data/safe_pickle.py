"""Unpickling that can build numpy arrays and plain containers, and nothing else.

A pickle can name any importable callable and call it while loading (``os.system``,
``builtins.eval``...). The data files this package reads (``mnist.pkl.gz``, the official
``cifar-10-batches-py`` batches) only need numpy arrays, lists, dicts, strings, bytes and
numbers, so :class:`NumpyOnlyUnpickler` admits exactly the globals numpy arrays are rebuilt
from and refuses every other one with :class:`UnsafePickleError` before anything is called.

Admitting ``numpy.dtype`` is not enough on its own: a dtype's pickled state (its flags) can be
edited to make numpy build an *object* array from raw bytes, whose items are then taken for
pointers (a crash, or worse, when the array is read or freed). So dtypes are admitted only
as plain numeric, bool or string types, checked when built and again after their state is set.

    >>> import pickle, numpy as np
    >>> safe_loads(pickle.dumps({"x": np.arange(3)}))["x"]
    array([0, 1, 2])
    >>> safe_loads(pickle.dumps(print))
    Traceback (most recent call last):
    ...
    lipschitz_rnn.data.safe_pickle.UnsafePickleError: refusing to load builtins.print from a pickle...
"""

from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO, Callable

import numpy as np

__all__ = ["NumpyOnlyUnpickler", "UnsafePickleError", "safe_load", "safe_loads"]


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global that is not needed to rebuild numpy arrays."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 writes bytes at protocol <= 2 as _codecs.encode(text, "latin1"); allow only that.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r} (only 'latin1' is admitted)")
    return text.encode("latin1")


#: dtype kinds a data file may hold: bool, integers, floats, complex, bytes and str (no objects, no records)
_PLAIN_KINDS = "biufcSU"


def _check_plain_dtype(dtype: np.dtype) -> np.dtype:
    """``dtype`` if it is a plain dtype with the flags and size numpy gives it, else ``UnsafePickleError``."""
    if dtype.hasobject or dtype.kind not in _PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsafePickleError(f"refusing dtype {dtype!r} from a pickle: only plain numeric and string dtypes")
    fresh = np.dtype(dtype.str)
    if (dtype.flags, dtype.itemsize) != (fresh.flags, fresh.itemsize):  # a state edited by hand
        raise UnsafePickleError(
            f"refusing dtype {dtype.str!r} from a pickle: its flags/size ({dtype.flags}, {dtype.itemsize}) are not "
            f"numpy's ({fresh.flags}, {fresh.itemsize})"
        )
    return dtype


def _plain_dtype(*args: Any) -> np.dtype:
    return _check_plain_dtype(np.dtype(*args))


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    try:  # numpy >= 2 moved the implementation to numpy._core; pickles name either module
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _plain_dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        # protocol 5 pickles (Python 3.8+ default) rebuild arrays from a buffer; object arrays are refused by numpy
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class NumpyOnlyUnpickler(pickle._Unpickler):
    """An unpickler whose ``find_class`` admits only what numpy arrays are rebuilt from.

    It is Python's own pure-Python unpickler (``pickle._Unpickler``; the C one cannot be hooked between
    opcodes) with one opcode checked: BUILD on a dtype. Data files hold a few large arrays, so the
    opcodes are few and the speed is the C unpickler's where it matters (copying the bytes).
    """

    _allowed = _allowed_globals()
    dispatch = dict(pickle._Unpickler.dispatch)

    def _load_build(self) -> None:
        target = self.stack[-2]
        pickle._Unpickler.load_build(self)
        if isinstance(target, np.dtype):  # its state (flags, size) was just set from the file
            _check_plain_dtype(target)

    dispatch[pickle.BUILD[0]] = _load_build

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name} from a pickle: only numpy arrays and plain containers are "
                "admitted (is this really the data file you meant to read?)"
            ) from None


def safe_load(handle: BinaryIO, *, encoding: str = "latin1") -> Any:
    """Unpickle from a binary file object with :class:`NumpyOnlyUnpickler`.

    ``encoding="latin1"`` reads Python 2 pickles of numpy arrays correctly (their str are bytes).
    """
    return NumpyOnlyUnpickler(handle, encoding=encoding).load()


def safe_loads(data: bytes, *, encoding: str = "latin1") -> Any:
    """:func:`safe_load` for bytes in memory."""
    return safe_load(io.BytesIO(data), encoding=encoding)
