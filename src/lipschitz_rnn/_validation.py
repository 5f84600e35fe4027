"""Argument and input checks shared by the cells and layers.

Every check raises ``ValueError`` (bad value) or ``TypeError`` (bad type) whose message
names the argument and what was expected.
"""

from __future__ import annotations

import math
import sys
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

Number = Union[int, float]


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    """``True``/``False`` (or 0/1), not any truthy value: the string ``"no"`` would otherwise switch an option on.

    NumPy's bools (``numpy.True_``, a 0-d bool array) and a 0-d ``torch.bool`` tensor count as bools, as a
    one-element tensor counts as a number for :func:`check_real`. Strings, floats, ints other than 0 and 1,
    NumPy ints, tensors of other dtypes or shapes, and meta tensors (no value to read) are refused.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    numpy = sys.modules.get("numpy")  # a NumPy bool exists only once NumPy is imported: never import it here
    if numpy is not None and (
        isinstance(value, numpy.bool_)
        or (isinstance(value, numpy.ndarray) and value.shape == () and value.dtype == numpy.bool_)
    ):
        return bool(value)
    if isinstance(value, Tensor) and value.dtype == torch.bool and value.dim() == 0 and not value.is_meta:
        return bool(value.item())
    raise TypeError(f"{name} must be a bool (true or false), got {value!r}")


def check_real(
    name: str,
    value: object,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
) -> float:
    """A finite real number in [low, high] (or (low, high] with ``low_open``)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_beta(name: str, value: object) -> float:
    return check_real(name, value, low=0.0, high=1.0)


def check_gamma(name: str, value: object) -> float:
    return check_real(name, value, low=0.0)


def check_eps(name: str, value: object) -> float:
    return check_real(name, value, low=0.0, low_open=True)


def check_finite(name: str, x: Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")


def check_floating(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_dtype_matches(name: str, x: Tensor, expected: torch.dtype, what: str) -> None:
    """``what`` names the other side, e.g. ``"x"`` or ``"the module's parameters"``."""
    if x.dtype != expected:
        verb = "are" if what.endswith("s") else "is"
        raise TypeError(
            f"{name} has dtype {x.dtype} but {what} {verb} {expected}; "
            f"convert one of them (e.g. x.to({expected}) or module.to({x.dtype}))"
        )


def check_state(name: str, state: object, expected: tuple[int, ...], x: Tensor, *, finite: bool = True) -> Tensor:
    """An initial state (``h0``, the LSTM's ``c0``) of ``x``'s dtype and the ``expected`` shape, finite."""
    state = check_floating(name, state)
    check_dtype_matches(name, state, x.dtype, "x")
    if tuple(state.shape) != expected:
        raise ValueError(f"{name} must have shape {expected} (num_layers, [batch,] size), got {tuple(state.shape)}")
    if finite:
        check_finite(name, state)
    return state


def check_packed(x, lengths: object, input_size: Optional[int] = None) -> Tensor:
    """The values of a ``PackedSequence`` input, ``(sum of lengths, input_size)`` floats; ``lengths`` must be left out.

    Shared by every layer that takes a packed ``x``: the pack already holds each sequence's length. Without
    ``input_size`` only the values' rank is checked (the caller checks the feature size later).
    """
    if lengths is not None:
        raise ValueError(
            "lengths cannot be given with a PackedSequence x: the pack already holds each sequence's "
            "length (its batch_sizes); pass lengths only with a padded tensor"
        )
    data = check_floating("x", x.data)
    if data.dim() != 2 or (input_size is not None and data.shape[-1] != input_size):
        size = "input_size" if input_size is None else input_size
        raise ValueError(
            f"a PackedSequence x must hold data of shape (sum of lengths, {size}), got {tuple(data.shape)}"
        )
    return data


def sequence_lengths(lengths: Union[Tensor, Sequence[int]], batch: int, steps: int) -> Tensor:
    """Validate ``lengths`` (one positive int per sequence, at most ``steps``) -> int64 CPU tensor."""
    if not isinstance(lengths, Tensor):
        try:  # no dtype forced: a list of floats or bools must fail below, not be truncated
            lengths = torch.as_tensor(list(lengths))
        except (TypeError, ValueError, RuntimeError):
            raise TypeError("lengths must be a 1-D tensor or sequence of ints") from None
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
    lengths = lengths.detach().to("cpu", torch.int64)
    if lengths.dim() != 1 or lengths.numel() != batch:
        raise ValueError(f"lengths must have shape ({batch},), one per sequence; got {tuple(lengths.shape)}")
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ValueError(f"lengths must lie in [1, {steps}] (the number of time steps); got {lengths.tolist()}")
    return lengths
