"""LSTM and GRU: thin wrappers over PyTorch's (cuDNN on a GPU), built and called like every model here.

    LSTM(input_size, hidden_size, num_layers=1, *, batch_first=False, backend="auto", **torch_kwargs)
    output, h_n = rnn(x, h0=None, *, lengths=None)      # h_n = (h, c) for the LSTM

``lengths`` packs the batch with ``pack_padded_sequence``, so the outputs are zero past
each sequence's end and ``h_n`` is taken at its last step. A ``PackedSequence`` ``x`` goes
to PyTorch's module as it is (a packed ``output``, ``h0`` and ``h_n`` in the original batch
order); with it, ``lengths`` is an error. These are discrete-time models: ``dt`` is rejected.

``backend`` is taken so that ``build_model(name, p, N, backend="auto")`` builds every
registered model, but PyTorch picks the kernels here (cuDNN on a GPU, its own loop on the
CPU): ``"auto"`` is the only value, and any other (``"cpu"``, ``"triton"``, ...) raises a
``ValueError`` naming the model, instead of torch's "unexpected keyword argument".
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .._validation import check_finite, check_floating, check_packed, check_state, sequence_lengths
from ..models import MODELS

__all__ = ["GRU", "LSTM"]


class _TorchRNNMixin:
    """What the LSTM and GRU wrappers add to PyTorch's module (listed first in their bases, so ``super()`` is it)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        batch_first: bool = False,
        backend: str = "auto",
        **kwargs,
    ):
        _check_backend(type(self), backend)  # before torch's constructor, whose error would not name the model
        super().__init__(input_size, hidden_size, num_layers, batch_first=batch_first, **kwargs)

    @property
    def backend(self) -> str:
        """Always ``"auto"``: PyTorch chooses the kernels (cuDNN on a GPU); see :func:`_check_backend`."""
        return "auto"

    @backend.setter
    def backend(self, name: object) -> None:
        _check_backend(type(self), name)

    def _run(
        self, run, x: Union[Tensor, PackedSequence], h0, lengths: Optional[Union[Tensor, Sequence[int]]], dt
    ) -> tuple[Union[Tensor, PackedSequence], Any]:
        if dt is not None:
            raise ValueError(f"{type(self).__name__} is discrete-time; dt is not supported")
        if isinstance(x, PackedSequence):
            return self._run_packed(run, x, h0, lengths)
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
        self.check_input(x, None)  # torch's LSTM checks no dtype once packed (a kernel's "mat1 and mat2" error)
        steps, batch = (x.shape[1], x.shape[0]) if self.batch_first else (x.shape[0], x.shape[1])
        lengths = sequence_lengths(lengths, batch, steps)
        packed = pack_padded_sequence(x, lengths, batch_first=self.batch_first, enforce_sorted=False)
        out, h_n = run(packed, h0)
        out, _ = pad_packed_sequence(out, batch_first=self.batch_first, total_length=steps)
        return out, h_n

    def _run_packed(self, run, x: PackedSequence, h0, lengths) -> tuple[PackedSequence, Any]:
        """PyTorch's own packed path; h0 (and h_n) in the original batch order, as in ``nn.RNN``."""
        data = check_packed(x, lengths, self.input_size)
        check_finite("x", data)
        self.check_input(data, x.batch_sizes)  # the dtype, which torch's LSTM leaves unchecked on a packed input
        if h0 is not None:
            self._check_initial_state(h0, data, batch=int(x.batch_sizes[0]))
        return run(x, h0)

    def _check_initial_state(self, h0: Any, x: Tensor, *, batch: Optional[int] = None) -> None:
        """h0 (and the LSTM's c0) as ``nn.RNN`` wants them, or an error naming the problem, not a kernel's.

        ``batch``: the number of sequences, where ``x`` (a packed sequence's data) does not show it.
        """
        layers = self.num_layers * (2 if self.bidirectional else 1)
        if batch is None:
            batch_dims = () if x.dim() == 2 else (x.shape[0] if self.batch_first else x.shape[1],)
        else:
            batch_dims = (batch,)
        sizes = {"h0": self.proj_size or self.hidden_size}
        if isinstance(self, nn.LSTM):
            if not isinstance(h0, (tuple, list)) or len(h0) != 2:
                raise TypeError(f"h0 of an LSTM must be a pair (h0, c0) of tensors, got {type(h0).__name__}")
            states = dict(zip(("h0", "c0"), h0))
            sizes["c0"] = self.hidden_size
        else:
            states = {"h0": h0}
        for name, state in states.items():
            check_state(name, state, (layers, *batch_dims, sizes[name]), x)


def _check_backend(cls: type, backend: object) -> None:
    """Refuse a recurrence backend other than ``"auto"`` for a wrapper of ``torch.nn.LSTM``/``GRU``."""
    name = cls.__name__.lower()
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str ('auto' for the {name!r} model), got {type(backend).__name__}")
    if backend.lower() != "auto":
        raise ValueError(
            f"backend={backend!r}: the {name!r} model ({cls.__name__}) runs on PyTorch's own nn.{cls.__name__} "
            "(cuDNN on a GPU) and has none of lipschitz_rnn's recurrence backends; leave backend out or pass "
            "backend='auto' (the backends are for the ODE layers: lipschitz, antisymmetric, vanilla, ...)"
        )


@MODELS.register("lstm")
class LSTM(_TorchRNNMixin, nn.LSTM):
    """``torch.nn.LSTM`` with keyword-only options and ``lengths`` (or a packed x); ``h_n`` is ``(h, c)``.

    ``backend="auto"`` only (PyTorch picks the kernels).
    """

    def forward(
        self,
        x: Union[Tensor, PackedSequence],
        h0: Optional[tuple[Tensor, Tensor]] = None,
        *,
        lengths: Optional[Union[Tensor, Sequence[int]]] = None,
        dt: Optional[Tensor] = None,  # refused: discrete-time
    ) -> tuple[Union[Tensor, PackedSequence], tuple[Tensor, Tensor]]:
        return self._run(super().forward, x, h0, lengths, dt)


@MODELS.register("gru")
class GRU(_TorchRNNMixin, nn.GRU):
    """``torch.nn.GRU`` with keyword-only options and ``lengths`` (or a ``PackedSequence`` x).

    ``backend="auto"`` only (PyTorch picks the kernels).
    """

    def forward(
        self,
        x: Union[Tensor, PackedSequence],
        h0: Optional[Tensor] = None,
        *,
        lengths: Optional[Union[Tensor, Sequence[int]]] = None,
        dt: Optional[Tensor] = None,  # refused: discrete-time
    ) -> tuple[Union[Tensor, PackedSequence], Tensor]:
        return self._run(super().forward, x, h0, lengths, dt)
