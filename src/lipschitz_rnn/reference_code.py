"""Import weights saved by the authors' reference training code.

The reference model keeps ``B`` and ``C`` (the free matrices of A and W), ``E`` (input
``nn.Linear``) and ``D`` (readout ``nn.Linear``), and computes in the *row* convention,
``h @ A`` with ``A = S_{β,γ}(B)``. Our column convention applies ``A_col = A_refᵀ``, and
``S_{β,γ}(M)ᵀ = S_{β,γ}(Mᵀ)``, so importing transposes the free matrices:
``M_A = Bᵀ``, ``M_W = Cᵀ``. Its AntisymmetricRNN (``asymRNN``) keeps ``W.weight`` and is
imported the same way (``M = W.weightᵀ``).

Example:
    >>> import torch
    >>> sd = {"B": torch.randn(8, 8), "C": torch.randn(8, 8), "E.weight": torch.randn(8, 1),
    ...       "E.bias": torch.randn(8), "D.weight": torch.randn(10, 8), "D.bias": torch.randn(10)}
    >>> model = from_reference_state_dict(sd, eps=0.03, beta=0.75, gamma=0.001)
    >>> model(torch.randn(784, 2, 1)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import os
import pickle
from typing import Mapping, Union

import torch
from torch import Tensor

from .cells.antisymmetric import AntisymmetricRNN
from .cells.lipschitz import LipschitzRNN
from .models import SequenceClassifier

__all__ = ["from_reference_state_dict", "load_reference_checkpoint"]

_REQUIRED = {
    "lipschitzrnn": ("B", "C", "E.weight", "E.bias", "D.weight", "D.bias"),
    "asymrnn": ("W.weight", "E.weight", "E.bias", "D.weight", "D.bias"),
}


def from_reference_state_dict(
    state_dict: Mapping[str, Tensor],
    *,
    eps: float,
    beta: float = 0.75,
    gamma: float = 0.001,
    method: str = "euler",
    alpha: float = 1.0,
    model: str = "LipschitzRNN",
) -> SequenceClassifier:
    """Build a :class:`SequenceClassifier` computing exactly what the reference model computed.

    Args:
        state_dict: the reference model's ``state_dict()`` (a ``module.`` prefix is stripped).
        eps, beta, gamma, method, alpha: the settings the reference run used (one β and one
            γ shared by A and W, as in the reference code).
        model: ``"LipschitzRNN"`` or ``"asymRNN"``.
    """
    kind = model.lower()
    if kind not in _REQUIRED:
        raise ValueError(f"model must be 'LipschitzRNN' or 'asymRNN', got {model!r}")
    sd = {key.removeprefix("module."): value for key, value in state_dict.items()}
    missing = [key for key in _REQUIRED[kind] if key not in sd]
    if missing:
        raise ValueError(f"state dict is missing the reference keys {missing}; found {sorted(sd)}")
    E_weight, D_weight = sd["E.weight"], sd["D.weight"]
    hidden, inputs = E_weight.shape
    dtype = E_weight.dtype
    if kind == "lipschitzrnn":
        rnn = LipschitzRNN(inputs, hidden, eps=eps, beta=beta, gamma=gamma, method=method, alpha=alpha, dtype=dtype)
        free = {"M_A": sd["B"].T, "M_W": sd["C"].T}
    else:
        rnn = AntisymmetricRNN(inputs, hidden, eps=eps, gamma=gamma, method=method, dtype=dtype)
        free = {"M": sd["W.weight"].T}
    classifier = SequenceClassifier(rnn, num_classes=D_weight.shape[0]).to(dtype)
    cell = rnn.cells[0]
    with torch.no_grad():
        for name, value in {**free, "U": E_weight, "b": sd["E.bias"]}.items():
            target = getattr(cell, name)
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"reference tensor for {name} has shape {tuple(value.shape)}, expected {tuple(target.shape)}"
                )
            target.copy_(value)
        classifier.D.weight.copy_(D_weight)
        classifier.D.bias.copy_(sd["D.bias"])
    return classifier


def load_reference_checkpoint(path: Union[str, os.PathLike], **kwargs) -> SequenceClassifier:
    """Load a reference ``state_dict`` saved with ``torch.save`` (never executes pickled code).

    The reference driver pickles whole model objects; those cannot be opened safely. In the
    authors' environment, save ``model.state_dict()`` instead and load that file here.
    """
    try:
        state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as error:
        raise ValueError(
            f"{path} is not a plain state dict (it may be a pickled model object, which is refused "
            "because loading it would run code). Save model.state_dict() in the reference code's "
            f"environment and load that file instead. ({type(error).__name__}: {str(error)[:200]})"
        ) from None
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a state dict")
    return from_reference_state_dict(state, **kwargs)
