"""The usage examples in the public modules' docstrings run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = [
    "lipschitz_rnn",
    "lipschitz_rnn.registry",
    "lipschitz_rnn.parametrizations",
    "lipschitz_rnn.integrators",
    "lipschitz_rnn.models",
    "lipschitz_rnn.stability",
    "lipschitz_rnn.reference_code",
    "lipschitz_rnn.cells.lipschitz",
    "lipschitz_rnn.cells.antisymmetric",
    "lipschitz_rnn.train.ema",
    "lipschitz_rnn.train.signals",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def test_readme_python_blocks_run():
    """Every ```python block of the README runs as written (CPU, small)."""
    import pathlib
    import re

    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(readme), "exec"), {})
