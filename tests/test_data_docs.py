"""The usage examples in the data modules' docstrings run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = [
    "lipschitz_rnn.data",
    "lipschitz_rnn.data.arrays",
    "lipschitz_rnn.data.batching",
    "lipschitz_rnn.data.fetch",
    "lipschitz_rnn.data.pixels",
    "lipschitz_rnn.data.ptb",
    "lipschitz_rnn.data.safe_pickle",
    "lipschitz_rnn.data.sources",
    "lipschitz_rnn.data.synthetic",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
