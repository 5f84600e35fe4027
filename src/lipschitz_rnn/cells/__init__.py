"""Recurrent cells and their layers. Importing this package registers every model."""

from .antisymmetric import AntisymmetricRNN, AntisymmetricRNNCell, GatedAntisymmetricRNN
from .base import ACTIVATIONS, ODECell, RecurrentCell, StepSizeWarning
from .cornn import CoRNN, CoRNNCell
from .gated_torch import GRU, LSTM
from .lipschitz import LipschitzRNN, LipschitzRNNCell
from .orthogonal import CayleyRNN, CayleyRNNCell, ExpRNN, ExpRNNCell
from .vanilla import ResidualRNN, ResidualRNNCell, VanillaRNN, VanillaRNNCell

__all__ = [
    "ACTIVATIONS",
    "GRU",
    "LSTM",
    "AntisymmetricRNN",
    "AntisymmetricRNNCell",
    "CayleyRNN",
    "CayleyRNNCell",
    "CoRNN",
    "CoRNNCell",
    "ExpRNN",
    "ExpRNNCell",
    "GatedAntisymmetricRNN",
    "LipschitzRNN",
    "LipschitzRNNCell",
    "ODECell",
    "RecurrentCell",
    "ResidualRNN",
    "ResidualRNNCell",
    "StepSizeWarning",
    "VanillaRNN",
    "VanillaRNNCell",
]
