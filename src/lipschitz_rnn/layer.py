"""``RecurrentLayer``: stacks cells behind the ``torch.nn.RNN`` contract.

    output, h_n = rnn(x, h0=None, *, lengths=None, dt=None)

    x       (T, B, input_size), or (B, T, input_size) with batch_first, or unbatched (T, input_size),
            or a ``torch.nn.utils.rnn.PackedSequence`` (then ``output`` is one too)
    h0      (num_layers * D, B, state_size), or (num_layers * D, state_size) for unbatched input
    output  (T, B, D * hidden_size): the last layer's output at every step (zero past ``lengths``)
    h_n     (num_layers * D, B, state_size): each layer's state at each sequence's last step
    lengths (B,) ints: valid steps per sequence, for variable-length batches
    dt      (T,) or (B, T): per-step time increment that scales the step size (continuous cells)

``state_size`` equals ``hidden_size`` for every cell but second-order ones (coRNN: 2N).
``D`` is 2 with ``bidirectional=True``, else 1. As in ``nn.RNN``, the reverse direction has cells
of its own (``reverse_cells``) that read each sequence from its last valid step to its first;
its outputs are laid beside the forward ones (``output[..., hidden_size:]``) at the time index of
the input they have just read, so at index 0 they have seen the whole sequence; ``h0`` and ``h_n``
list layer 0 forward, layer 0 reverse, layer 1 forward, ... A step keeps its own ``dt`` in either
direction. Each direction runs the selected backend's scan, so the fused kernels serve both.

A ``PackedSequence`` ``x`` behaves as in ``nn.RNN``: ``output`` is packed with ``x``'s
``batch_sizes``, ``sorted_indices`` and ``unsorted_indices``; ``h0`` and ``h_n`` are in the
original batch order (packs made with ``enforce_sorted=False`` included); ``batch_first``
does not apply. The layer unpads it to ``(T, B, input_size)`` with its lengths, runs the
``lengths`` path (so every backend serves it) and packs the output again; ``T`` is the
longest sequence. ``lengths=`` with a packed ``x`` is an error (the pack holds them). ``dt``
is then ``(T,)`` (one increment per time index), ``(B, T)`` in the original batch order, or
a ``PackedSequence`` of increments packed like ``x`` (the same lengths in the same order).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Sequence, Union, overload

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ._autocast import autocast_active, from_autocast
from ._validation import (
    check_bool,
    check_dtype_matches,
    check_finite,
    check_floating,
    check_int,
    check_packed,
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

    ``forward(x, h0=None, *, lengths=None, dt=None)`` takes ``x`` as a padded tensor (with
    ``lengths`` for variable-length batches) or as a ``torch.nn.utils.rnn.PackedSequence``,
    and then returns a ``PackedSequence`` output as ``nn.RNN`` does: packed like ``x``, with
    ``h0`` and ``h_n`` in the original batch order and ``batch_first`` ignored. Passing both a
    packed ``x`` and ``lengths`` is an error; ``dt`` is ``(T,)``, ``(B, T)`` in the original
    batch order, or a ``PackedSequence`` packed like ``x`` (see the module docstring).
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
        bidirectional: bool = False,
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
        self.bidirectional = check_bool("bidirectional", bidirectional)

        def layer_cells() -> nn.ModuleList:
            return nn.ModuleList(
                self.cell_class(
                    input_size if layer == 0 else hidden_size * self.num_directions,
                    hidden_size,
                    device=device,
                    dtype=dtype,
                    **cell_kwargs,
                )
                for layer in range(num_layers)
            )

        self.cells = layer_cells()  # the forward direction, one cell per layer
        if self.bidirectional:
            self.reverse_cells = layer_cells()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

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

    @overload
    def forward(
        self,
        x: Tensor,
        h0: Optional[Tensor] = None,
        *,
        lengths: Optional[Lengths] = None,
        dt: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor]: ...

    @overload
    def forward(
        self,
        x: PackedSequence,
        h0: Optional[Tensor] = None,
        *,
        lengths: None = None,
        dt: Optional[Union[Tensor, PackedSequence]] = None,
    ) -> tuple[PackedSequence, Tensor]: ...

    def forward(
        self,
        x: Union[Tensor, PackedSequence],
        h0: Optional[Tensor] = None,
        *,
        lengths: Optional[Lengths] = None,
        dt: Optional[Union[Tensor, PackedSequence]] = None,
    ) -> Union[tuple[Tensor, Tensor], tuple[PackedSequence, Tensor]]:
        if isinstance(x, PackedSequence):
            return self._forward_packed(x, h0, lengths, dt)
        if isinstance(dt, PackedSequence):
            raise TypeError("dt may be a PackedSequence only when x is one (packed like x)")
        return self._forward_padded(x, h0, lengths, dt, batch_first=self.batch_first)

    def _forward_packed(
        self,
        x: PackedSequence,
        h0: Optional[Tensor],
        lengths: Optional[Lengths],
        dt: Optional[Union[Tensor, PackedSequence]],
    ) -> tuple[PackedSequence, Tensor]:
        """Unpad, run the ``lengths`` path time-major, pack the output like ``x``."""
        check_packed(x, lengths)  # the feature size is checked on the padded input
        padded, seq_lengths = pad_packed_sequence(x)  # (T, B, p) and lengths, both in the original batch order
        if isinstance(dt, PackedSequence):
            dt = _unpack_dt(dt, seq_lengths)
        output, h_n = self._forward_padded(padded, h0, seq_lengths, dt, batch_first=False)
        return _pack_like(output, x, seq_lengths), h_n

    def _forward_padded(
        self,
        x: Tensor,
        h0: Optional[Tensor],
        lengths: Optional[Lengths],
        dt: Optional[Tensor],
        *,
        batch_first: bool,
    ) -> tuple[Tensor, Tensor]:
        x = check_floating("x", x)
        if autocast_active(x.device.type):  # the recurrence runs in the parameters' dtype: see _autocast.py
            dtype = _dtype(self)
            with torch.autocast(x.device.type, enabled=False):
                return self._forward_padded(
                    from_autocast(x, dtype),
                    from_autocast(h0, dtype),
                    lengths,
                    from_autocast(dt, dtype),
                    batch_first=batch_first,
                )
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
        elif batch_first:
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

        reverse = _Reversal(steps, lengths, x.device) if self.bidirectional else None
        layer_input = x
        finals = []
        for index in range(self.num_layers):
            outputs = []
            for direction, cells in enumerate(self._direction_cells()):
                flip = reverse if direction else _unchanged
                cell, sequence, scale = cells[index], flip(layer_input), flip(step_scale)
                backend = resolve_backend(self.backend, cell, sequence, scale, lengths)
                direction_output, h_last = backend.scan(
                    cell, sequence, h0[index * self.num_directions + direction], scale, lengths
                )
                outputs.append(flip(direction_output))
                finals.append(h_last)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
            if self.dropout and self.training and index < self.num_layers - 1:
                layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
        output, h_n = layer_input, torch.stack(finals)

        if unbatched:
            return output.squeeze(1), h_n.squeeze(1)
        if batch_first:
            output = output.transpose(0, 1)
        return output, h_n

    def _direction_cells(self) -> list[nn.ModuleList]:
        return [self.cells, self.reverse_cells] if self.bidirectional else [self.cells]

    def _initial_state(self, h0: Optional[Tensor], x: Tensor, unbatched: bool) -> Tensor:
        batch, layers = x.shape[1], self.num_layers * self.num_directions
        if h0 is None:
            return x.new_zeros(layers, batch, self.state_size)
        expected = (layers, self.state_size) if unbatched else (layers, batch, self.state_size)
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
        if self.bidirectional:
            parts.append("bidirectional=True")
        parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


class _Reversal:
    """Reverses each sequence of a time-major ``(T, B, ...)`` tensor within its valid steps.

    Without lengths, the time axis; with them, step ``t < len`` goes to ``len - 1 - t`` and the
    padding stays in place (the scans write zeros there). Applying it twice gives the input back.
    """

    def __init__(self, steps: int, lengths: Optional[Tensor], device: torch.device) -> None:
        self.index: Optional[Tensor] = None
        if lengths is not None:
            t = torch.arange(steps).unsqueeze(1)
            self.index = torch.where(t < lengths, lengths - 1 - t, t).to(device)  # (T, B)

    def __call__(self, values: Optional[Tensor]) -> Optional[Tensor]:
        if values is None:
            return None
        if self.index is None:
            return values.flip(0)
        index = self.index.view(*self.index.shape, *([1] * (values.dim() - 2)))
        return values.gather(0, index.expand_as(values))


def _unchanged(values: Optional[Tensor]) -> Optional[Tensor]:
    return values


def _dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _pack_like(output: Tensor, like: PackedSequence, lengths: Tensor) -> PackedSequence:
    """Pack a time-major ``output`` (original batch order) with ``like``'s batch sizes and orders."""
    if like.sorted_indices is not None:  # the pack's rows are the sequences in sorted_indices order
        output = output.index_select(1, like.sorted_indices)
        lengths = lengths.index_select(0, like.sorted_indices.cpu())
    data = pack_padded_sequence(output, lengths, enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


def _unpack_dt(dt: PackedSequence, lengths: Tensor) -> Tensor:
    """A packed ``dt`` as ``(B, T)`` in the original batch order, if it is packed like ``x``."""
    if dt.data.dim() not in (1, 2) or (dt.data.dim() == 2 and dt.data.shape[1] != 1):
        raise ValueError(
            f"a PackedSequence dt must hold one increment per step, data of shape (sum of lengths,) or "
            f"(sum of lengths, 1); got {tuple(dt.data.shape)}"
        )
    padded, dt_lengths = pad_packed_sequence(dt, batch_first=True)
    if not torch.equal(dt_lengths, lengths):
        raise ValueError(
            "a PackedSequence dt must be packed like x (the same sequence lengths in the same batch order); "
            f"got lengths {dt_lengths.tolist()} for dt and {lengths.tolist()} for x"
        )
    return padded.reshape(padded.shape[0], padded.shape[1])
