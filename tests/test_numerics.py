"""Convergence order of the integrators and gradcheck of every recurrence in float64."""

import math

import pytest
import torch

import lipschitz_rnn as lr

pytestmark = pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning")

ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


def _final_state(rnn_template, method, eps, total_time, x_const):
    rnn = lr.LipschitzRNN(2, 8, eps=eps, method=method, init_std=4.0, beta=0.7, gamma=0.2, dtype=torch.float64)
    rnn.load_state_dict(rnn_template.state_dict())
    steps = round(total_time / eps)
    x = x_const.expand(steps, *x_const.shape[1:])
    return rnn(x)[1][0]


@pytest.mark.parametrize("method", list(ORDERS))
def test_error_against_a_fine_solution_falls_at_the_method_order(method):
    torch.manual_seed(3)
    template = lr.LipschitzRNN(2, 8, init_std=4.0, beta=0.7, gamma=0.2, dtype=torch.float64)
    x_const = torch.randn(1, 3, 2, dtype=torch.float64)  # input held constant over [0, 1]
    total = 1.0
    fine = _final_state(template, "rk4", 1 / 2048, total, x_const)
    step_sizes = [1 / 16, 1 / 32, 1 / 64]
    errors = [(_final_state(template, method, e, total, x_const) - fine).abs().max().item() for e in step_sizes]
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
    expected = ORDERS[method]
    assert all(abs(r - expected) < 0.35 for r in rates), (errors, rates)


def _gradcheck_inputs(rnn, steps=4, batch=2):
    x = torch.randn(steps, batch, rnn.input_size, dtype=torch.float64, requires_grad=True)
    h0 = (0.3 * torch.randn(rnn.num_layers, batch, rnn.state_size, dtype=torch.float64)).requires_grad_()
    return x, h0


def _check(rnn, **call):
    """gradcheck of outputs and final states w.r.t. the input, h0 and every parameter."""
    x, h0 = _gradcheck_inputs(rnn)
    names = [name for name, _ in rnn.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in rnn.parameters()]

    def fn(x, h0, *flat):
        return torch.func.functional_call(rnn, dict(zip(names, flat)), (x, h0), call)

    assert torch.autograd.gradcheck(fn, (x, h0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("method", list(ORDERS))
@pytest.mark.parametrize("gated", [False, True])
def test_gradcheck_lipschitz(method, gated):
    rnn = lr.LipschitzRNN(2, 3, 2, method=method, gated=gated, init_std=2.0, eps=0.2, dtype=torch.float64)
    _check(rnn)


def test_gradcheck_lipschitz_with_dt_and_lengths():
    rnn = lr.LipschitzRNN(2, 3, method="midpoint", init_std=2.0, eps=0.2, dtype=torch.float64)
    dt = torch.rand(2, 4, dtype=torch.float64) + 0.5
    _check(rnn, dt=dt, lengths=[4, 2])


@pytest.mark.parametrize(
    "name", ["antisymmetric", "antisymmetric_gated", "vanilla", "residual", "cayley", "exprnn", "cornn"]
)
def test_gradcheck_other_cells(name):
    rnn = lr.build_model(name, 2, 4, dtype=torch.float64)
    _check(rnn)
