"""Lipschitz recurrent neural networks (Erichson et al., ICLR 2021) and their relatives in PyTorch.

Every recurrent layer has the ``torch.nn.RNN`` contract (``output, h_n = rnn(x, h0)``) and a
cell for custom loops (``h_next = cell(x_t, h)``):

    >>> import torch, lipschitz_rnn as lr
    >>> rnn = lr.LipschitzRNN(input_size=1, hidden_size=128, eps=0.03, beta=0.75, gamma=0.001)
    >>> output, h_n = rnn(torch.rand(784, 16, 1))          # (T, B, p) -> (T, B, N), (1, B, N)
    >>> report = lr.stability_report(rnn.cells[0])         # the theory, as numbers
    >>> report.c1["margin"] < 0                            # C1 fails at the published init
    True
"""

from .cells import (
    GRU,
    LSTM,
    AntisymmetricRNN,
    AntisymmetricRNNCell,
    CayleyRNN,
    CayleyRNNCell,
    CoRNN,
    CoRNNCell,
    ExpRNN,
    ExpRNNCell,
    GatedAntisymmetricRNN,
    LipschitzRNN,
    LipschitzRNNCell,
    ODECell,
    RecurrentCell,
    ResidualRNN,
    ResidualRNNCell,
    StepSizeWarning,
    VanillaRNN,
    VanillaRNNCell,
)
from .integrators import METHODS, ExplicitRK, ExponentialEuler, Method, get_method
from .layer import RecurrentLayer
from .models import MODELS, SequenceClassifier, build_model, count_parameters, init_linear_maps_, model_names
from .parametrizations import CayleyOrthogonal, ExpOrthogonal, SymmetricSkew, symmetric_skew
from .reference_code import from_reference_state_dict, load_reference_checkpoint
from .stability import StabilityReport, plot_eigenvalues, stability_report, stability_reports

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "METHODS",
    "MODELS",
    "AntisymmetricRNN",
    "AntisymmetricRNNCell",
    "CayleyOrthogonal",
    "CayleyRNN",
    "CayleyRNNCell",
    "CoRNN",
    "CoRNNCell",
    "ExpOrthogonal",
    "ExpRNN",
    "ExpRNNCell",
    "ExplicitRK",
    "ExponentialEuler",
    "GatedAntisymmetricRNN",
    "LipschitzRNN",
    "LipschitzRNNCell",
    "Method",
    "ODECell",
    "RecurrentCell",
    "RecurrentLayer",
    "ResidualRNN",
    "ResidualRNNCell",
    "SequenceClassifier",
    "StabilityReport",
    "StepSizeWarning",
    "SymmetricSkew",
    "VanillaRNN",
    "VanillaRNNCell",
    "__version__",
    "build_model",
    "count_parameters",
    "from_reference_state_dict",
    "get_method",
    "init_linear_maps_",
    "load_reference_checkpoint",
    "model_names",
    "plot_eigenvalues",
    "stability_report",
    "stability_reports",
    "symmetric_skew",
]
