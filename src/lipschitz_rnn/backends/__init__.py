"""Recurrence backends: one scan contract, several implementations, one oracle.

A backend runs a cell over a whole sequence:

    outputs, h_last = backend.scan(cell, x, h0, step_scale, lengths)

    x          (T, B, input_size)  time-major input
    h0         (B, state_size)     initial state
    step_scale (T, B, 1) or None   per-step multiplier of the cell's step size (``dt``)
    lengths    (B,) int64 or None  valid steps per sequence (CPU tensor)
    outputs    (T, B, hidden_size) per-step outputs, zero past each sequence's length
    h_last     (B, state_size)     state at each sequence's last valid step

``reference`` is the plain PyTorch loop and the test oracle of every other backend.
``auto`` picks the fastest backend that supports the call; when a backend implements the
cell's type but not this configuration (a method, a size, a dtype), it warns once, naming
the reason, and falls back. Cells no fast backend implements run on ``reference`` silently.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Optional, Protocol, TypeVar

import torch
from torch import Tensor

from ..registry import Registry

__all__ = ["BACKENDS", "Backend", "first_order_backward", "resolve_backend"]

_Backward = TypeVar("_Backward", bound=Callable)


class Backend(Protocol):
    name: str
    #: the device type it runs on (``"cuda"``), or ``None`` for any device
    device_type: Optional[str]

    def handles(self, cell) -> bool:
        """Whether this backend implements the cell's type at all (whatever its configuration)."""

    def unsupported_reason(
        self, cell, x: Tensor, step_scale: Optional[Tensor], lengths: Optional[Tensor]
    ) -> Optional[str]:
        """``None`` when this backend can run the call, else a short reason."""

    def scan(
        self, cell, x: Tensor, h0: Tensor, step_scale: Optional[Tensor], lengths: Optional[Tensor]
    ) -> tuple[Tensor, Tensor]: ...


BACKENDS: Registry[Backend] = Registry("backend")

#: preference order for ``backend="auto"``, fastest first; ``reference`` is the last resort
AUTO_ORDER: list[str] = []

_warned: set[tuple[str, str]] = set()


def resolve_backend(name: str, cell, x: Tensor, step_scale: Optional[Tensor], lengths: Optional[Tensor]) -> Backend:
    """The backend to run this call with. An explicit name that cannot run it raises ``ValueError``."""
    if name == "auto":
        for candidate in AUTO_ORDER:
            backend = BACKENDS.get(candidate)
            if backend.device_type not in (None, x.device.type) or not backend.handles(cell):
                continue  # another device, or a cell it never runs: not a fallback worth a warning
            reason = backend.unsupported_reason(cell, x, step_scale, lengths)
            if reason is None:
                return backend
            if (candidate, reason) not in _warned:
                _warned.add((candidate, reason))
                warnings.warn(
                    f"backend='auto' falls back from {candidate!r} for {type(cell).__name__}: {reason}",
                    stacklevel=4,
                )
        return BACKENDS.get("reference")
    backend = BACKENDS.get(name)
    reason = backend.unsupported_reason(cell, x, step_scale, lengths)
    if reason is not None:
        raise ValueError(f"backend {name!r} cannot run this {type(cell).__name__}: {reason}")
    return backend


def first_order_backward(backends: str) -> Callable[[_Backward], _Backward]:
    """Decorates a hand-written ``backward``: it runs without building a graph, and double backward raises.

    Autograd enables grad mode inside ``backward`` exactly when the caller asked for a differentiable
    gradient (``create_graph=True``: Hessian-vector products, gradient penalties). A hand-written
    backward cannot give one; computing it anyway would return second derivatives that silently miss
    this function's part (``torch.autograd.function.once_differentiable`` only catches the case where
    the incoming gradients themselves require grad).
    """

    def decorate(fn: _Backward) -> _Backward:
        @functools.wraps(fn)
        def backward(ctx, *grads):
            if torch.is_grad_enabled():
                raise RuntimeError(
                    f"{backends}: the backward is hand-written and not differentiable, so double backward "
                    "(create_graph=True: Hessian-vector products, gradient penalties) needs backend='reference'"
                )
            return fn(ctx, *grads)

        return backward  # type: ignore[return-value]

    return decorate


def backend_names() -> list[str]:
    """Names accepted by the ``backend`` argument."""
    return ["auto", *BACKENDS.names()]


# Each backend module registers itself (fused_triton as unsupported when Triton is not importable).
# Import order sets AUTO_ORDER: cpu appends itself, fused_triton puts "triton" first.
from . import cpu, fused_triton, reference  # noqa: E402,F401
