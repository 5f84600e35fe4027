"""``bidirectional=True``, as in ``torch.nn.RNN``: a reverse direction with cells of its own.

The specification: layer l's output is ``[forward_l(x), reverse_l(x)]`` along the features, where
the reverse direction runs its cell over each sequence from its last valid step to its first and
writes each output at the time index of the input it has just read; ``h0`` and ``h_n`` list layer 0
forward, layer 0 reverse, layer 1 forward, ...; each step keeps its own ``dt``. Every backend runs
both directions, forward and backward, as the reference does.
"""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lipschitz_rnn as lr
from lipschitz_rnn.data import build_task
from lipschitz_rnn.data.ptb import ptb_char_from_texts
from lipschitz_rnn.train.config import load_config
from lipschitz_rnn.train.loop import build_model_for_task
from test_train_toytasks import write_config

pytestmark = pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning")

OUR_LAYERS = ["lipschitz", "antisymmetric", "antisymmetric_gated", "vanilla", "residual", "cayley", "exprnn", "cornn"]
CONTINUOUS = ["lipschitz", "antisymmetric", "antisymmetric_gated", "residual", "cornn"]


def _build(name, p=3, n=6, layers=2, **kw):
    return lr.build_model(name, p, n, layers, bidirectional=True, dtype=torch.float64, **kw)


def _loop(cell, x, h, dt, order):
    """The cell stepped over ``x[t]`` for t in ``order``: outputs at those indices, and the last state."""
    outputs = {}
    for t in order:
        h = cell(x[t], h) if dt is None else cell(x[t], h, dt=dt[t])
        outputs[t] = cell.output(h)
    return torch.stack([outputs[t] for t in sorted(outputs)]), h


def _spec(rnn, x, h0, dt=None):
    """The definition above for one unbatched sequence ``x`` (T, p), ``h0`` (2L, S), ``dt`` (T,) or None."""
    steps = range(x.shape[0])
    layer_input, finals = x, []
    for layer in range(rnn.num_layers):
        forward, h_f = _loop(rnn.cells[layer], layer_input, h0[2 * layer], dt, steps)
        reverse, h_r = _loop(rnn.reverse_cells[layer], layer_input, h0[2 * layer + 1], dt, reversed(steps))
        layer_input = torch.cat([forward, reverse], dim=-1)
        finals += [h_f, h_r]
    return layer_input, torch.stack(finals)


@pytest.mark.parametrize("name", OUR_LAYERS)
def test_shapes_and_each_direction_against_its_definition(name):
    rnn = _build(name)
    S = rnn.state_size
    x = torch.randn(7, 3, 3, dtype=torch.float64)
    h0 = 0.1 * torch.randn(4, 3, S, dtype=torch.float64)
    out, h_n = rnn(x, h0)
    assert out.shape == (7, 3, 12) and h_n.shape == (4, 3, S)
    for b in range(3):
        expected_out, expected_h = _spec(rnn, x[:, b], h0[:, b])
        torch.testing.assert_close(out[:, b], expected_out)
        torch.testing.assert_close(h_n[:, b], expected_h)
    assert [len(rnn.cells), len(rnn.reverse_cells)] == [2, 2]
    assert rnn.reverse_cells[1].input_size == 12  # layer 1 reads both directions


@pytest.mark.parametrize("name", OUR_LAYERS)
def test_variable_lengths_run_each_sequence_alone_and_zero_the_padding(name):
    rnn = _build(name)
    x = torch.randn(7, 4, 3, dtype=torch.float64)
    h0 = 0.1 * torch.randn(4, 4, rnn.state_size, dtype=torch.float64)
    lengths = [7, 5, 3, 1]
    out, h_n = rnn(x, h0, lengths=lengths)
    for b, length in enumerate(lengths):
        alone_out, alone_h = rnn(x[:length, b], h0[:, b])
        torch.testing.assert_close(out[:length, b], alone_out)
        torch.testing.assert_close(h_n[:, b], alone_h)
        assert torch.count_nonzero(out[length:, b]) == 0


@pytest.mark.parametrize("name", CONTINUOUS)
def test_each_step_keeps_its_own_dt_in_both_directions(name):
    rnn = _build(name, layers=1)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    dt = torch.rand(2, 6, dtype=torch.float64) + 0.5
    out, h_n = rnn(x, lengths=[6, 4], dt=dt)
    for b, length in enumerate([6, 4]):
        h0 = torch.zeros(2, rnn.state_size, dtype=torch.float64)
        expected_out, expected_h = _spec(rnn, x[:length, b], h0, dt[b, :length])
        torch.testing.assert_close(out[:length, b], expected_out)
        torch.testing.assert_close(h_n[:, b], expected_h)


def test_a_packed_sequence_gives_the_lengths_path_packed():
    rnn = _build("lipschitz")
    x = torch.randn(7, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([3, 7, 5])
    out, h_n = rnn(pack_padded_sequence(x, lengths, enforce_sorted=False))
    padded, out_lengths = pad_packed_sequence(out)
    expected_out, expected_h = rnn(x, lengths=lengths)
    assert torch.equal(out_lengths, lengths)
    torch.testing.assert_close(padded, expected_out)
    torch.testing.assert_close(h_n, expected_h)


def test_batch_first_and_unbatched_agree_with_time_major():
    rnn = _build("antisymmetric_gated")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, h_n = rnn(x)
    rnn.batch_first = True
    out_bf, h_bf = rnn(x.transpose(0, 1))
    torch.testing.assert_close(out_bf.transpose(0, 1), out)
    torch.testing.assert_close(h_bf, h_n)
    out_u, h_u = rnn(x[:, 1])
    torch.testing.assert_close(out_u, out[:, 1])
    torch.testing.assert_close(h_u, h_n[:, 1])


def test_h0_of_a_unidirectional_shape_is_refused_with_the_expected_shape():
    rnn = _build("lipschitz")
    with pytest.raises(ValueError, match=r"h0 .*\(4, 3, 6\)"):
        rnn(torch.randn(5, 3, 3, dtype=torch.float64), torch.zeros(2, 3, 6, dtype=torch.float64))


def test_a_unidirectional_layer_is_unchanged():
    torch.manual_seed(0)
    plain = lr.build_model("lipschitz", 3, 6, 2)
    torch.manual_seed(0)
    explicit = lr.build_model("lipschitz", 3, 6, 2, bidirectional=False)
    assert not hasattr(plain, "reverse_cells") and plain.num_directions == 1
    assert plain.state_dict().keys() == explicit.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), explicit.state_dict().values()))
    assert "bidirectional" not in repr(plain) and "bidirectional=True" in repr(_build("lipschitz"))


def test_the_reverse_direction_has_parameters_of_its_own():
    rnn = _build("lipschitz", layers=1)
    assert lr.count_parameters(rnn) == 2 * lr.count_parameters(lr.build_model("lipschitz", 3, 6))
    assert {k.split(".")[0] for k in rnn.state_dict()} == {"cells", "reverse_cells"}
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    rnn(x)[0][..., 6:].sum().backward()  # the reverse half depends on the reverse cells alone
    assert all(torch.count_nonzero(p.grad) == 0 for p in rnn.cells.parameters() if p.grad is not None)
    assert all(torch.count_nonzero(p.grad) > 0 for p in rnn.reverse_cells.parameters() if p.requires_grad)


def test_bidirectional_must_be_a_bool():
    with pytest.raises(TypeError, match="bidirectional"):
        lr.build_model("lipschitz", 3, 6, bidirectional="yes")


def _fast_gradients(rnn, backend, x, h0, **call):
    rnn.backend = backend
    rnn.zero_grad()
    x = x.detach().requires_grad_()
    out, h_n = rnn(x, h0, **call)
    (out.sin().sum() + h_n.square().sum()).backward()
    return {"output": out.detach(), "h_n": h_n.detach(), "x.grad": x.grad} | {
        name: p.grad.clone() for name, p in rnn.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize(
    ("name", "backend", "options"),
    [
        ("lipschitz", "cpu", {"method": "midpoint"}),
        ("antisymmetric_gated", "cpu", {}),
        ("lipschitz", "triton", {"method": "euler"}),
    ],
    ids=["cpu-lipschitz", "cpu-asr-gated", "triton-lipschitz"],
)
def test_the_fast_backends_run_both_directions_as_the_reference(name, backend, options):
    rnn = lr.build_model(name, 3, 16, 2, bidirectional=True, **options)
    x = torch.randn(6, 3, 3)
    h0 = 0.1 * torch.randn(4, 3, 16)
    call = {"lengths": [6, 4, 2], "dt": torch.rand(3, 6) + 0.5}
    expected = _fast_gradients(rnn, "reference", x, h0, **call)
    got = _fast_gradients(rnn, backend, x, h0, **call)
    assert got.keys() == expected.keys() and len(got) > 3
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("name", ["lipschitz", "lstm", "gru"])
def test_the_classifier_reads_each_directions_final_state(name):
    rnn = lr.build_model(name, 3, 8, 2, bidirectional=True)
    model = lr.SequenceClassifier(rnn, 5)
    assert model.D.in_features == 16
    x = torch.randn(7, 4, 3)
    _, h_n = rnn(x)
    last_layer = (h_n[0] if name == "lstm" else h_n)[-2:]  # forward, reverse
    torch.testing.assert_close(model(x), model.D(torch.cat(list(last_layer), dim=-1)))
    lengths = [7, 5, 3, 1]
    logits = model(x, lengths=lengths)
    for b, length in enumerate(lengths):
        torch.testing.assert_close(logits[b], model(x[:length, b]))
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    torch.testing.assert_close(model(packed), logits)


def test_the_harness_refuses_a_bidirectional_model_on_next_token_prediction(tmp_path):
    cfg = load_config(write_config(tmp_path), ["model.bidirectional=true"])
    assert build_model_for_task(cfg, build_task(cfg.task.name, **cfg.task.options)).rnn.bidirectional
    task = ptb_char_from_texts({"train": " a b c \n" * 20, "valid": " a b \n" * 10, "test": " c a \n" * 10}, bptt=5)
    assert task.causal
    refusal = r"model.bidirectional = true on the 'ptb_char' task.*\(next-token prediction\)"
    with pytest.raises(ValueError, match=refusal):
        build_model_for_task(cfg, task)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("name", "backend", "options"),
    [
        ("lipschitz", "triton-ieee", {"method": "midpoint"}),
        ("antisymmetric_gated", "triton-ieee", {}),
        ("lipschitz", "cuda-bptt", {"method": "rk4", "gated": True}),
    ],
    ids=["triton-midpoint", "triton-asr-gated", "cuda-bptt-rk4-gated"],
)
def test_on_a_gpu_the_fast_backends_run_both_directions_as_the_reference(name, backend, options):
    """Strict fp32 products on both sides (``triton-ieee``; no TF32 in torch's matmuls): relative error 1e-5."""
    rnn = lr.build_model(name, 3, 64, 2, bidirectional=True, device="cuda", **options)
    x = torch.randn(40, 16, 3, device="cuda")
    h0 = 0.1 * torch.randn(4, 16, 64, device="cuda")
    call = {"lengths": torch.randint(1, 41, (16,)), "dt": torch.rand(16, 40, device="cuda") + 0.5}
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        expected = _fast_gradients(rnn, "reference", x, h0, **call)
        got = _fast_gradients(rnn, backend, x, h0, **call)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    assert got.keys() == expected.keys()
    errors = {key: float((got[key] - expected[key]).norm() / expected[key].norm()) for key in expected}
    assert max(errors.values()) < 1e-5, errors


def test_the_stability_tools_certify_the_reverse_cells_too():
    rnn = lr.build_model("lipschitz", 3, 6, 2, bidirectional=True, beta=1.0, gamma=0.5)
    with torch.no_grad():
        rnn.reverse_cells[1].M_A.normal_()  # β = 1: A = M − Mᵀ − γI, so λ_max(A_sym) = −γ whatever M is
    cells = lr.stability.certified_cells(lr.SequenceClassifier(rnn, 4))
    assert list(cells) == ["layer0", "layer1", "layer0_reverse", "layer1_reverse"]
    assert cells["layer1_reverse"] is rnn.reverse_cells[1]
    reports = lr.stability_reports(rnn)
    assert round(reports["layer1_reverse"].lambda_max_A_sym, 6) == -0.5
