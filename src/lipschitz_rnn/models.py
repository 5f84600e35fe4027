"""The model registry and a linear readout on top of any recurrent layer.

Every recurrent layer registers under a name, so configs and the command line build
models with ``build_model("lipschitz", 1, 128, method="midpoint")``.

Example:
    >>> import torch
    >>> import lipschitz_rnn as lr
    >>> rnn = lr.build_model("lipschitz", input_size=1, hidden_size=128)
    >>> model = lr.SequenceClassifier(rnn, num_classes=10)
    >>> lr.count_parameters(model)   # 2N² + (p + 1)N + (N + 1)q
    34314
    >>> model(torch.randn(784, 2, 1)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from ._validation import check_int, check_real, sequence_lengths
from .registry import Registry

__all__ = [
    "LINEAR_INITS",
    "MODELS",
    "SequenceClassifier",
    "build_model",
    "count_parameters",
    "init_linear_maps_",
    "model_names",
]

MODELS: Registry[type[nn.Module]] = Registry("model")


def build_model(name: str, input_size: int, hidden_size: int, num_layers: int = 1, **kwargs: Any) -> nn.Module:
    """A registered recurrent layer by name; ``kwargs`` go to its constructor."""
    return MODELS.get(name)(input_size, hidden_size, num_layers, **kwargs)


def model_names() -> list[str]:
    return MODELS.names()


def count_parameters(module: nn.Module, free: bool = False) -> int:
    """Number of trainable scalars.

    ``free=True`` counts a parametrised square matrix by the dimension of what its
    parametrisation reaches instead of its n² entries: M − Mᵀ has n(n − 1)/2 (the
    AntisymmetricRNN and expRNN papers count this way), S_{β,γ}(M) with 0 < β < 1 all n².
    Like torch's count, it counts every trainable parameter, also one whose term is switched
    off (the Lipschitz cell's M_A with ``alpha=0``: trainable, but it gets no gradient).

        >>> import lipschitz_rnn as lr
        >>> model = lr.SequenceClassifier(lr.build_model("antisymmetric", 1, 128, gated=True), 10)
        >>> lr.count_parameters(model), lr.count_parameters(model, free=True)  # the ASR paper's "10k"
        (18186, 9930)
    """
    total = sum(p.numel() for p in module.parameters() if p.requires_grad)
    if free:
        for cell in module.modules():
            for matrix, parametrization in getattr(cell, "parametrized_matrices", list)():
                if matrix.requires_grad:
                    total -= matrix.numel() - parametrization.free_parameters(matrix.shape[-1])
    return total


#: how :func:`init_linear_maps_` draws the input maps and the readout
LINEAR_INITS = ("default", "xavier_normal")


def init_linear_maps_(model: nn.Module, scheme: str = "xavier_normal") -> nn.Module:
    """Re-draw the input maps ``U, b`` of every cell and every ``nn.Linear`` (the readout ``D``).

    ``"xavier_normal"``: weights ``N(0, 2 / (fan_in + fan_out))``, biases zero, as an early
    stored version of the reference code (models.py@22d2ce3) did for its input map ``E`` and
    readout ``D``; the later version keeps PyTorch's ``nn.Linear`` default, as the cells do.
    ``"default"`` leaves the model as built. The recurrent matrices are not touched, nor a gated
    cell's ``U_g, b_g`` (the reference built its gate's map after this step).

        >>> import lipschitz_rnn as lr
        >>> model = init_linear_maps_(lr.SequenceClassifier(lr.build_model("lipschitz", 1, 128), 10))
        >>> model.D.bias.abs().max().item(), model.rnn.cells[0].b.abs().max().item()
        (0.0, 0.0)
    """
    if scheme not in LINEAR_INITS:
        raise ValueError(f"linear init must be one of {LINEAR_INITS}, got {scheme!r}")
    if scheme == "default":
        return model
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                weight, bias = module.weight, module.bias
            elif isinstance(getattr(module, "U", None), nn.Parameter):
                weight, bias = module.U, getattr(module, "b", None)  # U is N×p, laid out as nn.Linear(p, N).weight
            else:
                continue
            nn.init.xavier_normal_(weight)
            if bias is not None:
                nn.init.zeros_(bias)
    return model


def _on_values(x: Union[Tensor, PackedSequence], function) -> Union[Tensor, PackedSequence]:
    """``function`` of a tensor, or of a ``PackedSequence``'s values (packed as before)."""
    return x._replace(data=function(x.data)) if isinstance(x, PackedSequence) else function(x)


def _dropout_rate(name: str, rate: float, layer: str) -> float:
    rate = check_real(name, rate, low=0.0, high=1.0)
    if rate == 1.0:
        raise ValueError(f"{name} must be < 1 (1 would zero every input of {layer})")
    return rate


class SequenceClassifier(nn.Module):
    """A recurrent layer with a linear readout ``y = D h + d`` (the paper's D).

    ``readout="last"``: logits ``(B, num_classes)`` from each sequence's last valid step
    (classification); for a bidirectional RNN, from the forward direction's last valid step and
    the reverse direction's first (each direction's final state). ``readout="all"``: logits at
    every step, laid out like the RNN's output (sequence modelling, e.g. next-character prediction).

    ``dropout``: in training, zero each hidden value that the readout sees with this
    probability (scaling the rest by 1 / (1 − p)), a regulariser that leaves the recurrence
    itself untouched; 0 (the default) calls no dropout at all, so no random numbers are drawn.
    ``input_dropout``: the same on the input values before the recurrence (on one-hot inputs,
    such as characters, it drops whole tokens); its mask is drawn before the readout's.

    A ``torch.nn.utils.rnn.PackedSequence`` ``x`` works as it does for the layer: with
    ``readout="last"`` the logits are ``(B, num_classes)`` in the original batch order, from each
    sequence's last step; with ``readout="all"`` they come packed like ``x``.

    >>> model = SequenceClassifier(build_model("lipschitz", 50, 32), 50, readout="all", input_dropout=0.1)
    >>> model(torch.zeros(150, 8, 50)).shape  # (T, B, classes): the RNN is not batch_first
    torch.Size([150, 8, 50])
    >>> from torch.nn.utils.rnn import pack_sequence
    >>> x = pack_sequence([torch.zeros(5, 1), torch.zeros(3, 1)])
    >>> SequenceClassifier(build_model("lipschitz", 1, 32), 10)(x).shape  # one row per sequence
    torch.Size([2, 10])
    """

    def __init__(
        self,
        rnn: nn.Module,
        num_classes: int,
        *,
        readout: str = "last",
        dropout: float = 0.0,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if readout not in ("last", "all"):
            raise ValueError(f"readout must be 'last' or 'all', got {readout!r}")
        self.rnn = rnn
        self.readout = readout
        self.num_classes = check_int("num_classes", num_classes)
        self.dropout = _dropout_rate("dropout", dropout, "the readout")
        self.input_dropout = _dropout_rate("input_dropout", input_dropout, "the RNN")
        self.directions = 2 if getattr(rnn, "bidirectional", False) else 1
        self.D = nn.Linear(rnn.hidden_size * self.directions, num_classes)

    @property
    def batch_first(self) -> bool:
        return bool(getattr(self.rnn, "batch_first", False))

    def forward(
        self,
        x: Union[Tensor, PackedSequence],
        h0: Optional[Any] = None,
        *,
        lengths: Optional[Union[Tensor, Sequence[int]]] = None,
        dt: Optional[Tensor] = None,
        return_state: bool = False,
    ) -> Union[Tensor, PackedSequence, tuple[Union[Tensor, PackedSequence], Any]]:
        kwargs = {"lengths": lengths} if lengths is not None else {}
        if dt is not None:
            kwargs["dt"] = dt
        if self.input_dropout and self.training:
            x = _on_values(x, lambda values: nn.functional.dropout(values, self.input_dropout, training=True))
        output, h_n = self.rnn(x, h0, **kwargs)
        features = output if self.readout == "all" else self._last_output(output, lengths)
        if self.dropout and self.training:
            features = _on_values(features, lambda values: nn.functional.dropout(values, self.dropout, training=True))
        logits = _on_values(features, self.D)
        return (logits, h_n) if return_state else logits

    def extra_repr(self) -> str:
        rates = {"dropout": self.dropout, "input_dropout": self.input_dropout}
        return ", ".join([f"readout={self.readout!r}"] + [f"{name}={rate}" for name, rate in rates.items() if rate])

    def _last_output(self, output: Union[Tensor, PackedSequence], lengths) -> Tensor:
        """Each sequence's final features: its last valid step's, and for a bidirectional RNN the reverse
        direction's half from step 0 (where that direction ends)."""
        if isinstance(output, PackedSequence):  # (B, N) in the original batch order
            padded, lengths = pad_packed_sequence(output)
            rows = torch.arange(padded.shape[1], device=padded.device)
            return self._with_reverse_half(padded[(lengths - 1).to(padded.device), rows], padded[0])
        if output.dim() == 2:  # unbatched (T, N)
            return self._with_reverse_half(output[-1], output[0])
        time_dim = 1 if self.batch_first else 0
        first = output.select(time_dim, 0)
        if lengths is None:
            return self._with_reverse_half(output.select(time_dim, -1), first)
        steps, batch = output.shape[time_dim], output.shape[1 - time_dim]
        last = (sequence_lengths(lengths, batch, steps) - 1).to(output.device)
        rows = torch.arange(batch, device=output.device)
        return self._with_reverse_half(output[rows, last] if self.batch_first else output[last, rows], first)

    def _with_reverse_half(self, last: Tensor, first: Tensor) -> Tensor:
        if self.directions == 1:
            return last
        half = last.shape[-1] // 2
        return torch.cat([last[..., :half], first[..., half:]], dim=-1)
