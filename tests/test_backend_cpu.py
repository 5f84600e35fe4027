"""The ``cpu`` backend computes what the reference loop computes: outputs, final states and every gradient.

The reference backend is the oracle. Each comparison runs one model twice, switching only
``rnn.backend``, and compares the outputs, ``h_n`` and the gradients of a loss that weighs
every output step and every final state (so gradients enter at every step) with respect to
every parameter, the input and ``h0``.

Tolerances: float64 to a relative 1e-10 (the two differ by rounding only); float32 to a
relative 2e-4 of each tensor's largest entry (both accumulate float32 rounding over T steps;
the cpu backend also evaluates tanh as 2·sigmoid(2z) − 1, accurate to ~1 ulp of 1).
"""

import re
import warnings

import pytest
import torch

import lipschitz_rnn as lr
from lipschitz_rnn import backends
from lipschitz_rnn.backends import BACKENDS, resolve_backend
from lipschitz_rnn.backends import cpu as cpu_backend

pytestmark = pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning")

F64_RTOL = 1e-10
F32_RTOL = 2e-4


def _run(rnn, x, h0, backend, **call):
    """Outputs, h_n and the gradients w.r.t. x, h0 and every parameter, on ``backend``."""
    rnn.backend = backend
    rnn.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    h0 = None if h0 is None else h0.clone().requires_grad_()
    out, h_n = rnn(x, h0, **call)
    gen = torch.Generator().manual_seed(1)
    w_out = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    w_h = torch.randn(h_n.shape, generator=gen, dtype=out.dtype)
    ((out * w_out).sum() + (h_n * w_h).sum()).backward()
    results = {"output": out.detach(), "h_n": h_n.detach(), "grad x": x.grad}
    if h0 is not None:
        results["grad h0"] = h0.grad
    results.update({f"grad {name}": p.grad for name, p in rnn.named_parameters()})
    return results


def assert_matches_reference(rnn, x, h0=None, rtol=F64_RTOL, **call):
    ours = _run(rnn, x, h0, "cpu", **call)
    oracle = _run(rnn, x, h0, "reference", **call)
    assert ours.keys() == oracle.keys()
    for key, expected in oracle.items():
        actual = ours[key]
        if expected is None:  # a parameter the loss does not depend on (alpha = 0: M_A)
            assert actual is None, key
            continue
        assert actual is not None, key
        scale = expected.abs().max().clamp_min(1e-30)
        error = ((actual - expected).abs().max() / scale).item()
        assert error <= rtol, f"{key}: relative error {error:.3g} > {rtol:g}"


def _data(T, B, p, N, layers=1, dtype=torch.float64, h0=True):
    x = torch.randn(T, B, p, dtype=dtype)
    return x, (0.5 * torch.randn(layers, B, N, dtype=dtype) if h0 else None)


LIPSCHITZ = [
    {"method": method, "gated": gated, "alpha": alpha}
    for method in ["euler", "midpoint", "heun", "rk4"]
    for gated in [False, True]
    for alpha in [1.0, 0.5, 0.0]
]


@pytest.mark.parametrize("config", LIPSCHITZ, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_lipschitz_matches_reference_float64(config):
    rnn = lr.LipschitzRNN(2, 16, init_std=2.0, eps=0.2, dtype=torch.float64, **config)
    assert_matches_reference(rnn, *_data(40, 3, 2, 16))


@pytest.mark.parametrize("method", ["euler", "midpoint"])
@pytest.mark.parametrize("gated", [False, True])
def test_antisymmetric_matches_reference_float64(method, gated):
    rnn = lr.AntisymmetricRNN(2, 16, eps=0.1, gamma=0.1, gated=gated, method=method, dtype=torch.float64)
    assert_matches_reference(rnn, *_data(40, 3, 2, 16))


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_residual_matches_reference_float64(method):
    rnn = lr.build_model("residual", 2, 16, eps=0.1, method=method, dtype=torch.float64)
    assert_matches_reference(rnn, *_data(40, 3, 2, 16))


@pytest.mark.parametrize(
    ("N", "T", "B"),
    [(16, 1024, 3), (64, 200, 7), (128, 40, 1), (256, 10, 7)],
)
@pytest.mark.parametrize("method", ["euler", "midpoint"])
def test_sizes_float64(N, T, B, method):
    rnn = lr.LipschitzRNN(1, N, method=method, init_std=1.0, dtype=torch.float64)
    assert_matches_reference(rnn, *_data(T, B, 1, N, h0=False))


@pytest.mark.parametrize(
    ("N", "T", "B"),
    [(16, 1024, 3), (64, 200, 7), (128, 40, 1), (256, 10, 7)],
)
@pytest.mark.parametrize("name", ["lipschitz", "antisymmetric"])
def test_sizes_float32(N, T, B, name):
    rnn = lr.build_model(name, 1, N)
    assert_matches_reference(rnn, *_data(T, B, 1, N, dtype=torch.float32), rtol=F32_RTOL)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("method", ["euler", "midpoint"])
def test_float32_with_lengths_and_dt(method, gated):
    rnn = lr.LipschitzRNN(3, 32, method=method, gated=gated)
    x, h0 = _data(60, 5, 3, 32, dtype=torch.float32)
    dt = torch.rand(5, 60) + 0.5
    assert_matches_reference(rnn, x, h0, rtol=F32_RTOL, lengths=[60, 13, 1, 59, 30], dt=dt)


@pytest.mark.parametrize("name", ["lipschitz", "antisymmetric", "antisymmetric_gated", "residual"])
@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("h0", [True, False])
def test_lengths(name, method, h0):
    rnn = lr.build_model(name, 2, 8, method=method, eps=0.2, dtype=torch.float64)
    x, state = _data(25, 7, 2, 8, h0=h0)
    assert_matches_reference(rnn, x, state, lengths=[25, 1, 9, 24, 3, 25, 17])


@pytest.mark.parametrize("name", ["lipschitz", "antisymmetric_gated"])
@pytest.mark.parametrize("method", ["euler", "midpoint"])
def test_dt_per_step_and_per_sequence(name, method):
    rnn = lr.build_model(name, 2, 8, method=method, eps=0.2, dtype=torch.float64)
    x, h0 = _data(20, 3, 2, 8)
    assert_matches_reference(rnn, x, h0, dt=torch.rand(20, dtype=torch.float64) * 2)
    assert_matches_reference(rnn, x, h0, dt=torch.rand(3, 20, dtype=torch.float64) * 2, lengths=[20, 5, 11])


def test_zero_dt_freezes_the_state():
    rnn = lr.LipschitzRNN(2, 8, backend="cpu", dtype=torch.float64)
    x, h0 = _data(6, 3, 2, 8)
    _, h_n = rnn(x, h0, dt=torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close(h_n, h0, rtol=0, atol=0)


@pytest.mark.parametrize("gated", [False, True])
def test_stacked_layers(gated):
    rnn = lr.LipschitzRNN(3, 12, num_layers=3, gated=gated, method="midpoint", dtype=torch.float64)
    x, h0 = _data(30, 7, 3, 12, layers=3)
    assert_matches_reference(rnn, x, h0)
    assert_matches_reference(rnn, x, h0, lengths=[30, 2, 29, 15, 1, 8, 30])


@pytest.mark.parametrize(
    "config", [{"method": "euler"}, {"method": "rk4", "gated": True}, {"method": "euler", "alpha": 0.0}]
)
def test_many_backward_blocks(monkeypatch, config):
    """The backward works through time in blocks of rows; force many (including a ragged last block)."""
    monkeypatch.setattr(cpu_backend, "_BLOCK_ROWS", 7)  # 3 steps per block at B = 3, T = 31
    rnn = lr.LipschitzRNN(2, 8, eps=0.2, dtype=torch.float64, **config)
    x, h0 = _data(31, 3, 2, 8)
    assert_matches_reference(rnn, x, h0)
    assert_matches_reference(rnn, x, h0, lengths=[31, 4, 17])


def test_parameters_that_do_not_need_grad_get_none_and_the_rest_still_match():
    rnn = lr.LipschitzRNN(2, 8, dtype=torch.float64)
    rnn.cells[0].M_W.requires_grad_(False)
    rnn.cells[0].U.requires_grad_(False)
    assert_matches_reference(rnn, *_data(10, 3, 2, 8))
    assert rnn.cells[0].M_W.grad is None


def test_no_grad_forward_matches():
    rnn = lr.LipschitzRNN(2, 8, method="midpoint", dtype=torch.float64)
    x, h0 = _data(10, 3, 2, 8)
    with torch.no_grad():
        rnn.backend = "cpu"
        out, h_n = rnn(x, h0)
        rnn.backend = "reference"
        expected = rnn(x, h0)
    torch.testing.assert_close((out, h_n), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "config",
    [
        {"method": "euler"},
        {"method": "midpoint", "gated": True},
        {"method": "heun", "alpha": 0.0, "gated": True},
    ],
)
def test_gradcheck(config):
    rnn = lr.LipschitzRNN(2, 3, init_std=2.0, eps=0.2, backend="cpu", dtype=torch.float64, **config)
    x = torch.randn(5, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = (0.3 * torch.randn(1, 2, 3, dtype=torch.float64)).requires_grad_()
    names = [name for name, _ in rnn.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in rnn.parameters()]
    dt = torch.rand(2, 5, dtype=torch.float64) + 0.5

    def fn(x, h0, *flat):
        return torch.func.functional_call(rnn, dict(zip(names, flat)), (x, h0), {"dt": dt, "lengths": [5, 3]})

    assert torch.autograd.gradcheck(fn, (x, h0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)
    plain = lambda x, h0, *flat: torch.func.functional_call(rnn, dict(zip(names, flat)), (x, h0))  # noqa: E731
    assert torch.autograd.gradcheck(plain, (x, h0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


# -- selection and refusals ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lipschitz", "antisymmetric", "antisymmetric_gated", "residual"])
def test_auto_picks_cpu_on_cpu(name):
    cell = lr.build_model(name, 1, 4).cells[0]
    x = torch.randn(3, 2, 1)
    assert "cpu" in backends.AUTO_ORDER
    assert resolve_backend("auto", cell, x, None, None) is BACKENDS.get("cpu")


def _unsupported_calls():
    x = torch.randn(4, 2, 1)
    dt_with_grad = torch.rand(4, 2, 1, requires_grad=True)
    return [
        (lr.LipschitzRNN(1, 4, nonlinearity="relu").cells[0], x, None, "nonlinearity 'relu' (tanh only)"),
        (lr.VanillaRNN(1, 4).cells[0], x, None, "only LipschitzRNNCell, AntisymmetricRNNCell and ResidualRNNCell are"),
        (lr.LipschitzRNN(1, 4, dtype=torch.float16).cells[0], x.half(), None, "dtype torch.float16 (float32 and"),
        (lr.LipschitzRNN(1, 4).cells[0], x, dt_with_grad, "dt requires grad (no gradient with respect to dt"),
        (lr.LipschitzRNN(1, 4, method="exp_euler").cells[0], x, torch.full((4, 2, 1), 0.5), "method 'exp_euler' runs"),
    ]


@pytest.mark.parametrize("index", range(5))
def test_unsupported_falls_back_with_a_warning_under_auto_and_raises_when_named(monkeypatch, index):
    cell, x, step_scale, reason = _unsupported_calls()[index]
    monkeypatch.setattr(backends, "_warned", set())
    name = type(cell).__name__
    if BACKENDS.get("cpu").handles(cell):  # a configuration it could have run: auto says why it did not
        with pytest.warns(UserWarning, match=re.escape(f"falls back from 'cpu' for {name}: {reason}")):
            chosen = resolve_backend("auto", cell, x, step_scale, None)
    else:  # a cell type no fast backend implements runs on the reference quietly
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            chosen = resolve_backend("auto", cell, x, step_scale, None)
    assert chosen is BACKENDS.get("reference")
    with pytest.raises(ValueError, match=re.escape(f"backend 'cpu' cannot run this {name}: {reason}")):
        resolve_backend("cpu", cell, x, step_scale, None)


def test_a_subclass_that_changes_the_equations_is_refused():
    class Squared(lr.LipschitzRNNCell):
        def vector_field(self, h, u, weights):
            return super().vector_field(h, u, weights) ** 2

    reason = BACKENDS.get("cpu").unsupported_reason(Squared(1, 4), torch.randn(2, 1, 1), None, None)
    assert reason == "Squared overrides vector_field"


def test_layer_with_dt_requiring_grad_runs_on_reference_under_auto(monkeypatch):
    monkeypatch.setattr(backends, "_warned", set())
    rnn = lr.LipschitzRNN(1, 4, dtype=torch.float64)
    dt = torch.rand(5, dtype=torch.float64, requires_grad=True)
    with pytest.warns(UserWarning, match="dt requires grad"):
        _, h_n = rnn(torch.randn(5, 2, 1, dtype=torch.float64), dt=dt)
    h_n.sum().backward()
    assert dt.grad is not None and dt.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["euler", "midpoint", "exp_euler"])
@pytest.mark.parametrize("loss", ["square", "linear"])
@pytest.mark.parametrize("backend", ["cpu", "auto"])
def test_double_backward_raises_rather_than_miss_this_functions_part(method, loss, backend):
    # A loss linear in the outputs hands the backward constant gradients: once_differentiable let that
    # through, and the Hessian-vector products it gave lacked the recurrence's own second derivatives.
    rnn = lr.LipschitzRNN(1, 4, method=method, backend=backend, dtype=torch.float64)
    out, h_n = rnn(torch.randn(5, 2, 1, dtype=torch.float64))
    value = out.square().sum() if loss == "square" else out.sum() + h_n.sum()
    with pytest.raises(RuntimeError, match="double backward .*needs backend='reference'"):
        torch.autograd.grad(value, rnn.cells[0].M_A, create_graph=True)


def test_first_order_gradients_are_unaffected_by_the_double_backward_guard():
    rnn = lr.LipschitzRNN(1, 4, backend="cpu", dtype=torch.float64)
    out, _ = rnn(torch.randn(5, 2, 1, dtype=torch.float64))
    (grad,) = torch.autograd.grad(out.square().sum(), rnn.cells[0].M_W)
    assert not grad.requires_grad and grad.abs().sum() > 0


def test_reference_backend_supports_double_backward_for_the_same_model():
    rnn = lr.LipschitzRNN(1, 4, backend="reference", dtype=torch.float64)
    out, _ = rnn(torch.randn(5, 2, 1, dtype=torch.float64))
    (grad,) = torch.autograd.grad(out.square().sum(), rnn.cells[0].M_W, create_graph=True)
    grad.sum().backward()
    assert rnn.cells[0].M_W.grad is not None


def test_warnings_are_not_raised_for_supported_calls():
    rnn = lr.LipschitzRNN(1, 4, method="midpoint", gated=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rnn(torch.randn(5, 2, 1), lengths=[5, 2], dt=torch.rand(5))


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_float32_is_as_accurate_as_the_reference_loop(method):
    """Against a float64 solution, the cpu backend's float32 trajectory errs no more than the reference's."""
    # published defaults: the state drifts to |h| ~ 10, so rounding of h dominates
    rnn = lr.LipschitzRNN(2, 64, method=method, backend="reference")
    x, h0 = torch.rand(784, 5, 2), 0.1 * torch.randn(1, 5, 64)
    with torch.no_grad():
        exact = rnn.double()(x.double(), h0.double())[0]
        rnn.float()
        errors = {}
        for backend in ["cpu", "reference"]:
            rnn.backend = backend
            errors[backend] = (rnn(x, h0)[0].double() - exact).abs().max().item()
    assert errors["cpu"] <= 1.5 * errors["reference"] + 1e-6, errors
