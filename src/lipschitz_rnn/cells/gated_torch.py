"""LSTM and GRU: thin wrappers over PyTorch's (cuDNN on a GPU), built and called like every model here.

    LSTM(input_size, hidden_size, num_layers=1, *, batch_first=False, **torch_kwargs)
    output, h_n = rnn(x, h0=None, *, lengths=None)      # h_n = (h, c) for the LSTM

``lengths`` packs the batch with ``pack_padded_sequence``, so the outputs are zero past
each sequence's end and ``h_n`` is taken at its last step. These are discrete-time
models: ``dt`` is rejected.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .._validation import check_finite, check_floating, check_state, sequence_lengths
from ..models import MODELS

__all__ = ["GRU", "LSTM"]


class _TorchRNNMixin:
    def _run(self, run, x: Tensor, h0, lengths: Optional[Union[Tensor, Sequence[int]]], dt) -> tuple[Tensor, Any]:
        if dt is not None:
            raise ValueError(f"{type(self).__name__} is discrete-time; dt is not supported")
        x = check_floating("x", x)
        if x.dim() not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"x must have shape (T, B, {self.input_size}) (or batch-first/unbatched), got {tuple(x.shape)}"
            )
        check_finite("x", x)
        if h0 is not None:
            self._check_initial_state(h0, x)
        if lengths is None:
            return run(x, h0)
        if x.dim() == 2:
            raise ValueError("lengths needs batched input (one length per sequence)")
        steps, batch = (x.shape[1], x.shape[0]) if self.batch_first else (x.shape[0], x.shape[1])
        lengths = sequence_lengths(lengths, batch, steps)
        packed = pack_padded_sequence(x, lengths, batch_first=self.batch_first, enforce_sorted=False)
        out, h_n = run(packed, h0)
        out, _ = pad_packed_sequence(out, batch_first=self.batch_first, total_length=steps)
        return out, h_n

    def _check_initial_state(self, h0: Any, x: Tensor) -> None:
        """h0 (and the LSTM's c0) as ``nn.RNN`` wants them, or an error naming the problem, not a kernel's."""
        layers = self.num_layers * (2 if self.bidirectional else 1)
        batch = () if x.dim() == 2 else (x.shape[0] if self.batch_first else x.shape[1],)
        sizes = {"h0": self.proj_size or self.hidden_size}
        if isinstance(self, nn.LSTM):
            if not isinstance(h0, (tuple, list)) or len(h0) != 2:
                raise TypeError(f"h0 of an LSTM must be a pair (h0, c0) of tensors, got {type(h0).__name__}")
            states = dict(zip(("h0", "c0"), h0))
            sizes["c0"] = self.hidden_size
        else:
            states = {"h0": h0}
        for name, state in states.items():
            check_state(name, state, (layers, *batch, sizes[name]), x)


@MODELS.register("lstm")
class LSTM(_TorchRNNMixin, nn.LSTM):
    """``torch.nn.LSTM`` with keyword-only options and ``lengths``; ``h_n`` is ``(h, c)``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, batch_first: bool = False, **kwargs):
        super().__init__(input_size, hidden_size, num_layers, batch_first=batch_first, **kwargs)

    def forward(self, x: Tensor, h0: Optional[tuple[Tensor, Tensor]] = None, *, lengths=None, dt=None):
        return self._run(super().forward, x, h0, lengths, dt)


@MODELS.register("gru")
class GRU(_TorchRNNMixin, nn.GRU):
    """``torch.nn.GRU`` with keyword-only options and ``lengths``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, batch_first: bool = False, **kwargs):
        super().__init__(input_size, hidden_size, num_layers, batch_first=batch_first, **kwargs)

    def forward(self, x: Tensor, h0: Optional[Tensor] = None, *, lengths=None, dt=None):
        return self._run(super().forward, x, h0, lengths, dt)
