"""``RecurrentLayer``: stacks cells behind the ``torch.nn.RNN`` contract.

    output, h_n = rnn(x, h0=None, *, lengths=None, dt=None)

    x       (T, B, input_size), or (B, T, input_size) with batch_first, or unbatched (T, input_size)
    h0      (num_layers, B, state_size), or (num_layers, state_size) for unbatched input
    output  (T, B, hidden_size): the last layer's output at every step (zero past ``lengths``)
    h_n     (num_layers, B, state_size): each layer's state at each sequence's last step
    lengths (B,) ints: valid steps per sequence, for variable-length batches
    dt      (T,) or (B, T): per-step time increment that scales the step size (continuous cells)

``state_size`` equals ``hidden_size`` for every cell but second-order ones (coRNN: 2N).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ._validation import (
    check_bool,
    check_dtype_matches,
    check_finite,
    check_floating,
    check_int,
    check_real,
    check_state,
    sequence_lengths,
)
from .backends import BACKENDS, backend_names, resolve_backend
from .cells.base import RecurrentCell

__all__ = ["RecurrentLayer"]

Lengths = Union[Tensor, Sequence[int]]


class RecurrentLayer(nn.Module):
    """A stack of ``num_layers`` cells of type ``cell_class`` with the ``nn.RNN`` contract.

    Subclasses set ``cell_class``; keyword arguments not consumed here go to every cell.
    """

    cell_class: ClassVar[type[RecurrentCell]]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        batch_first: bool = False,
        dropout: float = 0.0,
        backend: str = "auto",
        check_inputs: bool = True,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
        **cell_kwargs: Any,
    ) -> None:
        super().__init__()
        self.input_size = check_int("input_size", input_size)
        self.hidden_size = check_int("hidden_size", hidden_size)
        self.num_layers = check_int("num_layers", num_layers)
        self.batch_first = bool(batch_first)
        self.dropout = check_real("dropout", dropout, low=0.0, high=1.0)
        self.backend = backend
        self.check_inputs = check_bool("check_inputs", check_inputs)
        self.cells = nn.ModuleList(
            self.cell_class(
                input_size if layer == 0 else hidden_size,
                hidden_size,
                device=device,
                dtype=dtype,
                **cell_kwargs,
            )
            for layer in range(num_layers)
        )

    @property
    def backend(self) -> str:
        """Which recurrence implementation runs the scan (``"auto"`` picks the fastest)."""
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        if isinstance(name, str) and name.lower() == "auto":  # case-insensitive, as the registered names
            name = "auto"
        elif name in BACKENDS:
            name = BACKENDS.canonical(name)
        if name not in backend_names():
            raise ValueError(f"unknown backend {name!r}; expected one of: {', '.join(backend_names())}")
        self._backend = name

    @property
    def state_size(self) -> int:
        return self.cells[0].state_size

    def forward(
        self,
        x: Tensor,
        h0: Optional[Tensor] = None,
        *,
        lengths: Optional[Lengths] = None,
        dt: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor]:
        x = check_floating("x", x)
        if x.dim() not in (2, 3):
            raise ValueError(
                "x must have shape (T, B, input_size), (B, T, input_size) with batch_first, "
                f"or (T, input_size) unbatched; got {tuple(x.shape)}"
            )
        if x.shape[-1] != self.input_size:
            raise ValueError(f"x must have {self.input_size} features (input_size), got {x.shape[-1]}")
        check_dtype_matches("x", x, _dtype(self), "the module's parameters")
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]
        if steps == 0:
            raise ValueError("x must have at least one time step")
        if self.check_inputs:
            check_finite("x", x)

        h0 = self._initial_state(h0, x, unbatched)
        step_scale = self._step_scale(dt, x, unbatched)
        if lengths is not None:
            if unbatched:
                raise ValueError("lengths needs batched input (one length per sequence)")
            lengths = sequence_lengths(lengths, batch, steps)

        layer_input = x
        finals = []
        for index, cell in enumerate(self.cells):
            backend = resolve_backend(self.backend, cell, layer_input, step_scale, lengths)
            layer_input, h_last = backend.scan(cell, layer_input, h0[index], step_scale, lengths)
            finals.append(h_last)
            if self.dropout and self.training and index < self.num_layers - 1:
                layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
        output, h_n = layer_input, torch.stack(finals)

        if unbatched:
            return output.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, h_n

    def _initial_state(self, h0: Optional[Tensor], x: Tensor, unbatched: bool) -> Tensor:
        batch = x.shape[1]
        if h0 is None:
            return x.new_zeros(self.num_layers, batch, self.state_size)
        expected = (self.num_layers, self.state_size) if unbatched else (self.num_layers, batch, self.state_size)
        h0 = check_state("h0", h0, expected, x, finite=self.check_inputs)
        return h0.unsqueeze(1) if unbatched else h0

    def _step_scale(self, dt: Optional[Tensor], x: Tensor, unbatched: bool) -> Optional[Tensor]:
        """``dt`` as a ``(T, B, 1)`` multiplier of the step size, or ``None``."""
        if dt is None:
            return None
        if not self.cells[0].continuous_time:
            raise ValueError(f"{type(self).__name__} is discrete-time; dt is not supported")
        if isinstance(dt, (list, tuple)):  # Python numbers take x's dtype, as the cell's dt does
            dt = torch.as_tensor(dt, dtype=x.dtype)
        dt = torch.as_tensor(dt, device=x.device)
        if not dt.is_floating_point():
            dt = dt.to(x.dtype)
        check_dtype_matches("dt", dt, x.dtype, "x")
        steps, batch = x.shape[0], x.shape[1]
        if tuple(dt.shape) == (steps,):
            scale = dt.reshape(steps, 1, 1).expand(steps, batch, 1)
        elif not unbatched and tuple(dt.shape) == (batch, steps):
            scale = dt.transpose(0, 1).unsqueeze(-1)
        else:
            expected = f"({steps},)" if unbatched else f"({steps},) or ({batch}, {steps})"
            raise ValueError(f"dt must have shape {expected} (time steps[, per sequence]), got {tuple(dt.shape)}")
        check_finite("dt", scale)
        if bool((scale < 0).any()):
            raise ValueError("dt must be >= 0 (time increments)")
        return scale

    def extra_repr(self) -> str:
        parts = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        if self.batch_first:
            parts.append("batch_first=True")
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


def _dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype
