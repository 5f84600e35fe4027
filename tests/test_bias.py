"""``bias=False``, as ``torch.nn.RNN`` takes it: the input map is ``U x`` alone (gates included).

The specification: a layer built with ``bias=False`` has no ``b`` (nor ``b_g``) and computes what the
same layer with ``b = 0`` computes, on every backend; the other parameters draw as they would.
"""

import pytest
import torch

import lipschitz_rnn as lr
from lipschitz_rnn.data import build_task
from lipschitz_rnn.train.config import load_config
from lipschitz_rnn.train.loop import build_model_for_task
from test_train_toytasks import write_config

pytestmark = pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning")

LAYERS = [
    ("lipschitz", {}),
    ("lipschitz", {"gated": True}),
    ("antisymmetric", {}),
    ("antisymmetric_gated", {}),
    ("vanilla", {}),
    ("residual", {}),
    ("cayley", {}),
    ("exprnn", {}),
    ("cornn", {}),
]
IDS = [name + ("-gated" if options else "") for name, options in LAYERS]


@pytest.mark.parametrize(("name", "options"), LAYERS, ids=IDS)
def test_without_bias_a_layer_computes_what_it_computes_with_zero_biases(name, options):
    without = lr.build_model(name, 3, 8, 2, bias=False, dtype=torch.float64, **options)
    with_bias = lr.build_model(name, 3, 8, 2, dtype=torch.float64, **options)
    biases = [key for key in with_bias.state_dict() if key.split(".")[-1] in ("b", "b_g")]
    assert biases and set(with_bias.state_dict()) - set(without.state_dict()) == set(biases)
    state = dict(without.state_dict())
    state.update({key: torch.zeros_like(with_bias.state_dict()[key]) for key in biases})
    with_bias.load_state_dict(state)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    for got, expected in zip(without(x), with_bias(x)):
        torch.testing.assert_close(got, expected)
    assert lr.count_parameters(with_bias) - lr.count_parameters(without) == 8 * len(biases)
    assert all(cell.b is None for cell in without.cells)


@pytest.mark.parametrize(
    ("name", "backend", "options"),
    [("lipschitz", "cpu", {"method": "midpoint"}), ("antisymmetric_gated", "cpu", {}), ("lipschitz", "triton", {})],
    ids=["cpu-lipschitz", "cpu-asr-gated", "triton-lipschitz"],
)
def test_the_fast_backends_run_a_layer_without_bias_as_the_reference(name, backend, options):
    rnn = lr.build_model(name, 3, 16, bias=False, **options)
    x = torch.randn(6, 3, 3)
    results = []
    for which in ("reference", backend):
        rnn.backend = which
        rnn.zero_grad()
        out, h_n = rnn(x)
        (out.sin().sum() + h_n.square().sum()).backward()
        results.append([out.detach(), h_n.detach()] + [p.grad.clone() for p in rnn.parameters() if p.grad is not None])
    assert len(results[0]) == len(results[1]) > 2
    for got, expected in zip(results[1], results[0]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_a_cell_without_bias_for_custom_loops():
    cell = lr.LipschitzRNNCell(3, 8, bias=False, gated=True)
    assert cell.b is None and cell.b_g is None and "bias=False" in repr(cell)
    x, h = torch.randn(4, 3), torch.randn(4, 8)
    torch.testing.assert_close(cell.project_input(x), x @ torch.cat([cell.U, cell.U_g]).T)
    assert cell(x, h).shape == (4, 8)


def test_the_linear_maps_redraw_and_the_harness_take_it(tmp_path):
    model = lr.init_linear_maps_(lr.SequenceClassifier(lr.build_model("lipschitz", 1, 8, bias=False), 10))
    assert model.rnn.cells[0].b is None
    cfg = load_config(write_config(tmp_path), ["model.bias=false"])
    built = build_model_for_task(cfg, build_task(cfg.task.name, **cfg.task.options))
    assert built.rnn.cells[0].b is None


def test_bias_must_be_a_bool():
    with pytest.raises(TypeError, match="bias"):
        lr.build_model("lipschitz", 3, 8, bias="no")
