"""The torch.nn.RNN contract, lengths, dt and stacking, for every recurrent layer."""

import pickle

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lipschitz_rnn as lr
from equations import run_lipschitz

pytestmark = pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning")

OUR_LAYERS = ["lipschitz", "antisymmetric", "antisymmetric_gated", "vanilla", "residual", "cayley", "exprnn", "cornn"]
CONTINUOUS = ["lipschitz", "antisymmetric", "antisymmetric_gated", "residual", "cornn"]


def _build(name, p=3, n=6, layers=1, **kw):
    return lr.build_model(name, p, n, layers, dtype=torch.float64, **kw)


@pytest.mark.parametrize("name", OUR_LAYERS)
def test_shapes_time_major_batch_first_and_unbatched(name):
    rnn = _build(name, layers=2)
    S = rnn.state_size
    x = torch.randn(7, 4, 3, dtype=torch.float64)
    out, h_n = rnn(x)
    assert out.shape == (7, 4, 6) and h_n.shape == (2, 4, S)

    rnn.batch_first = True
    out_bf, h_bf = rnn(x.transpose(0, 1))
    torch.testing.assert_close(out_bf, out.transpose(0, 1))
    torch.testing.assert_close(h_bf, h_n)
    rnn.batch_first = False

    out_u, h_u = rnn(x[:, 1])
    assert out_u.shape == (7, 6) and h_u.shape == (2, S)
    torch.testing.assert_close(out_u, out[:, 1])
    torch.testing.assert_close(h_u, h_n[:, 1])


@pytest.mark.parametrize("name", OUR_LAYERS)
def test_h0_defaults_to_zeros_and_is_used(name):
    rnn = _build(name)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    zeros = torch.zeros(1, 2, rnn.state_size, dtype=torch.float64)
    torch.testing.assert_close(rnn(x)[0], rnn(x, zeros)[0])
    assert not torch.allclose(rnn(x)[0], rnn(x, zeros + 0.5)[0])


@pytest.mark.parametrize("name", OUR_LAYERS)
def test_stacked_layers_chain_outputs(name):
    rnn = _build(name, layers=3)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    h0 = 0.1 * torch.randn(3, 2, rnn.state_size, dtype=torch.float64)
    out, h_n = rnn(x, h0)
    layer_input = x
    for index, cell in enumerate(rnn.cells):
        h = h0[index]
        outs = []
        for t in range(6):
            h = cell(layer_input[t], h)
            outs.append(cell.output(h))
        layer_input = torch.stack(outs)
        torch.testing.assert_close(h_n[index], h)
    torch.testing.assert_close(out, layer_input)


@pytest.mark.parametrize("name", [*OUR_LAYERS, "lstm", "gru"])
def test_lengths_equal_running_each_sequence_alone(name):
    rnn = lr.build_model(name, 3, 5, 2, batch_first=True).double()
    lengths = [9, 4, 1, 7]
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    out, h_n = rnn(x, lengths=lengths)
    h_n = h_n[0] if isinstance(h_n, tuple) else h_n
    for b, L in enumerate(lengths):
        out_b, h_b = rnn(x[b : b + 1, :L])
        h_b = h_b[0] if isinstance(h_b, tuple) else h_b
        torch.testing.assert_close(out[b, :L], out_b[0])
        torch.testing.assert_close(h_n[:, b], h_b[:, 0])
        if L < 9:
            assert out[b, L:].abs().max() == 0


@pytest.mark.parametrize("name", CONTINUOUS)
def test_dt_of_all_ones_equals_no_dt(name):
    rnn = _build(name, layers=2)
    x = torch.randn(8, 3, 3, dtype=torch.float64)
    reference = rnn(x)
    for dt in (torch.ones(8, dtype=torch.float64), torch.ones(3, 8, dtype=torch.float64)):
        out, h_n = rnn(x, dt=dt)
        torch.testing.assert_close(out, reference[0], rtol=0, atol=0)
        torch.testing.assert_close(h_n, reference[1], rtol=0, atol=0)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_dt_scales_each_step_per_sequence(method):
    rnn = _build("lipschitz", method=method, eps=0.1, init_std=2.0)
    cell = rnn.cells[0]
    x = torch.randn(10, 3, 3, dtype=torch.float64)
    dt = torch.rand(3, 10, dtype=torch.float64) * 2
    expected = run_lipschitz(x, cell.A, cell.W, cell.U, cell.b, 0.1, method, dt=dt)
    torch.testing.assert_close(rnn(x, dt=dt)[0], expected)
    # a constant dt is the same as a scaled eps
    scaled = _build("lipschitz", method=method, eps=0.25, init_std=2.0)
    scaled.load_state_dict(rnn.state_dict())
    torch.testing.assert_close(rnn(x, dt=torch.full((10,), 2.5, dtype=torch.float64))[0], scaled(x)[0])


def test_dt_and_lengths_together():
    rnn = _build("lipschitz", batch_first=True)
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    dt = torch.rand(2, 6, dtype=torch.float64)
    out, h_n = rnn(x, lengths=[6, 3], dt=dt)
    out1, h1 = rnn(x[1:, :3], dt=dt[1:, :3])
    torch.testing.assert_close(h_n[:, 1], h1[:, 0])
    torch.testing.assert_close(out[1, :3], out1[0])


def test_lstm_and_gru_follow_torch_exactly():
    torch.manual_seed(1)
    ours = lr.LSTM(3, 5, 2, batch_first=True)
    theirs = torch.nn.LSTM(3, 5, 2, batch_first=True)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 7, 3)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])
    with pytest.raises(ValueError, match="discrete-time"):
        lr.GRU(3, 5)(torch.randn(7, 2, 3), dt=torch.ones(7))


def test_vanilla_rnn_equals_torch_rnn_with_the_same_weights():
    ours = _build("vanilla")
    theirs = torch.nn.RNN(3, 6).double()
    cell = ours.cells[0]
    with torch.no_grad():
        theirs.weight_hh_l0.copy_(cell.W)
        theirs.weight_ih_l0.copy_(cell.U)
        theirs.bias_ih_l0.copy_(cell.b)
        theirs.bias_hh_l0.zero_()
    x = torch.randn(9, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])


def test_dropout_applies_between_layers_only_in_training():
    rnn = _build("lipschitz", layers=2, dropout=0.5, init_std=2.0)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    rnn.eval()
    a, b = rnn(x)[0], rnn(x)[0]
    torch.testing.assert_close(a, b)
    rnn.train()
    torch.manual_seed(0)
    c = rnn(x)[0]
    torch.manual_seed(1)
    assert not torch.allclose(c, rnn(x)[0])


@pytest.mark.parametrize("method", ["euler", "exp_euler"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_outputs_edited_in_place_before_backward(method, batch_first):
    rnn = lr.LipschitzRNN(3, 6, method=method, backend="reference", batch_first=batch_first, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    out, h_n = rnn(x)
    (2 * out).sum().backward()
    expected = rnn.cells[0].M_W.grad.clone()
    # reference: the outputs are the caller's, as torch.nn.RNN's on the CPU
    rnn.zero_grad()
    out, h_n = rnn(x)
    out.mul_(2)
    h_n.add_(1)
    out.sum().backward()
    torch.testing.assert_close(rnn.cells[0].M_W.grad, expected)
    # cpu: the outputs are the states its backward reads (no copy), so autograd refuses, as for cuDNN's RNN
    rnn.backend = "cpu"
    out, h_n = rnn(x)
    h_n.add_(1)  # h_n is a copy: free to edit
    out.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
    # inference keeps no graph: editing is free
    with torch.no_grad():
        rnn(x)[0].mul_(2)


@pytest.mark.parametrize("name", OUR_LAYERS)
def test_an_empty_batch_runs_forward_and_backward(name):
    rnn = _build(name)
    x = torch.randn(4, 0, 3, dtype=torch.float64, requires_grad=True)
    out, h_n = rnn(x)
    (out.sum() + h_n.sum()).backward()
    assert out.shape == (4, 0, 6) and x.grad.shape == x.shape


@pytest.mark.parametrize("name", OUR_LAYERS)
def test_layers_build_on_the_meta_device(name):
    with torch.device("meta"):
        rnn = lr.build_model(name, 3, 6)
    assert all(p.is_meta for p in rnn.parameters())
    rnn.to_empty(device="cpu")  # materialised later, as for any torch module


@pytest.mark.parametrize("name", ["cayley", "exprnn"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_orthogonal_maps_run_in_half_precision(name, dtype):
    # their solve / matrix exponential run in float32 (the CPU has no half kernels for them)
    rnn = lr.build_model(name, 3, 6, dtype=dtype)
    W = rnn.cells[0].W
    assert W.dtype == dtype
    torch.testing.assert_close(W.float() @ W.float().T, torch.eye(6), atol=2e-2, rtol=0)
    out, _ = rnn(torch.randn(5, 2, 3, dtype=dtype))
    assert out.dtype == dtype and out.isfinite().all()


def test_identity_nonlinearity_pickles():
    # whole-module pickling (torch.save(module), multiprocessing) needs importable functions, not lambdas
    rnn = lr.LipschitzRNN(3, 6, nonlinearity="identity", backend="reference")
    loaded = pickle.loads(pickle.dumps(rnn))
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(loaded(x)[0], rnn(x)[0])


def test_every_registered_name_builds_and_runs():
    for name in lr.model_names():
        rnn = lr.build_model(name, 2, 4)
        out, _ = rnn(torch.randn(3, 2, 2))
        assert out.shape == (3, 2, 4), name


def test_sequence_classifier_uses_each_sequence_last_valid_step():
    model = lr.SequenceClassifier(_build("lipschitz", batch_first=True), 4).double()
    x = torch.randn(3, 8, 3, dtype=torch.float64)
    logits = model(x, lengths=[8, 2, 5])
    torch.testing.assert_close(logits[1], model(x[1:2, :2])[0])
    per_step = lr.SequenceClassifier(model.rnn, 4, readout="all").double()
    assert per_step(x).shape == (3, 8, 4)


# -- property tests -----------------------------------------------------------------------
@given(
    name=st.sampled_from(OUR_LAYERS),
    steps=st.integers(1, 6),
    batch=st.integers(1, 4),
    p=st.integers(1, 4),
    n=st.integers(1, 6),
    layers=st.integers(1, 3),
    batch_first=st.booleans(),
)
def test_property_output_shapes_and_finiteness(name, steps, batch, p, n, layers, batch_first):
    rnn = lr.build_model(name, p, n, layers, batch_first=batch_first)
    x = torch.randn(batch, steps, p) if batch_first else torch.randn(steps, batch, p)
    out, h_n = rnn(x)
    assert out.shape == ((batch, steps, n) if batch_first else (steps, batch, n))
    assert h_n.shape == (layers, batch, rnn.state_size)
    assert torch.isfinite(out).all() and torch.isfinite(h_n).all()


@given(
    method=st.sampled_from(["euler", "midpoint", "heun", "rk4"]),
    gated=st.booleans(),
    beta=st.floats(0, 1),
    gamma=st.floats(0, 2),
    eps=st.floats(1e-3, 0.5),
    data=st.data(),
)
def test_property_lengths_and_batch_independence(method, gated, beta, gamma, eps, data):
    batch = data.draw(st.integers(1, 4))
    steps = data.draw(st.integers(1, 6))
    lengths = data.draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    rnn = lr.LipschitzRNN(2, 3, method=method, gated=gated, beta=beta, gamma=gamma, eps=eps, dtype=torch.float64)
    x = torch.randn(steps, batch, 2, dtype=torch.float64)
    out, h_n = rnn(x, lengths=lengths)
    for b, L in enumerate(lengths):
        alone, h_alone = rnn(x[:L, b])
        torch.testing.assert_close(out[:L, b], alone)
        torch.testing.assert_close(h_n[:, b], h_alone)
