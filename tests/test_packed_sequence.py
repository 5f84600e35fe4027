"""A ``PackedSequence`` input, as ``torch.nn.RNN`` takes one: the specification.

    output, h_n = rnn(packed, h0=None, *, dt=None)

* ``output`` is a ``PackedSequence`` with the input's ``batch_sizes``, ``sorted_indices`` and
  ``unsorted_indices``; its data are the ``lengths=`` path's padded output, packed the same way.
* ``h_n`` is each sequence's state at its last step, in the original (unsorted) batch order:
  the ``lengths=`` path's ``h_n``. ``h0`` is in that order too.
* This holds for packs made with ``enforce_sorted=True`` and ``False``, on every backend (the
  packed input runs the ``lengths`` path), for gradients too; ``batch_first`` does not apply.
* ``lengths=`` beside a packed input is an error. ``dt`` is ``(T,)`` (T the longest sequence),
  ``(B, T)`` in the original batch order, or a ``PackedSequence`` packed like ``x``.
* The LSTM/GRU wrappers hand a packed input to PyTorch's module unchanged.
* ``SequenceClassifier`` takes one too: ``readout="last"`` gives ``(B, classes)`` logits in the
  original batch order from each sequence's last step (the ``lengths=`` path's), ``readout="all"``
  logits packed like the input.
"""

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lipschitz_rnn as lr

pytestmark = pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning")

OUR_LAYERS = ["lipschitz", "antisymmetric", "antisymmetric_gated", "vanilla", "residual", "cayley", "exprnn", "cornn"]
T, P, N = 6, 3, 5
UNSORTED = [3, 6, 1, 4, 6]  # ties and an unsorted order
SORTED = [6, 6, 4, 3, 1]


def _build(name, layers=2, **kw):
    return lr.build_model(name, P, N, layers, dtype=torch.float64, **kw)


def _inputs(lengths, state_size, layers=2):
    x = torch.randn(T, len(lengths), P, dtype=torch.float64)
    h0 = 0.3 * torch.randn(layers, len(lengths), state_size, dtype=torch.float64)
    return x, h0


def _same_pack(got, expected):
    assert isinstance(got, PackedSequence)
    torch.testing.assert_close(got.data, expected.data)
    assert torch.equal(got.batch_sizes, expected.batch_sizes)
    for name in ("sorted_indices", "unsorted_indices"):
        a, b = getattr(got, name), getattr(expected, name)
        assert (a is None and b is None) or torch.equal(a, b), name


@pytest.mark.parametrize("name", OUR_LAYERS)
@pytest.mark.parametrize(("lengths", "enforce_sorted"), [(UNSORTED, False), (SORTED, True), (SORTED, False)])
def test_packed_output_and_h_n_equal_the_lengths_path(name, lengths, enforce_sorted):
    rnn = _build(name)
    x, h0 = _inputs(lengths, rnn.state_size)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)

    out, h_n = rnn(packed, h0)
    padded_out, padded_h_n = rnn(x, h0, lengths=lengths)

    _same_pack(out, pack_padded_sequence(padded_out, lengths, enforce_sorted=enforce_sorted))
    _same_pack(out, packed._replace(data=out.data))  # the input's batch sizes and orders
    torch.testing.assert_close(h_n, padded_h_n)


def test_h0_and_h_n_are_in_the_original_batch_order():
    rnn = _build("lipschitz")
    x, h0 = _inputs(UNSORTED, N)
    _, h_n = rnn(pack_padded_sequence(x, UNSORTED, enforce_sorted=False), h0)
    for b, length in enumerate(UNSORTED):  # each sequence alone, unpadded, with its own h0
        _, h_b = rnn(x[:length, b : b + 1], h0[:, b : b + 1])
        torch.testing.assert_close(h_n[:, b : b + 1], h_b)


def test_batch_first_does_not_apply_to_packed_input():
    rnn = _build("antisymmetric")
    x, h0 = _inputs(UNSORTED, N)
    packed = pack_padded_sequence(x, UNSORTED, enforce_sorted=False)
    out, h_n = rnn(packed, h0)
    rnn.batch_first = True
    out_bf, h_bf = rnn(packed, h0)
    _same_pack(out_bf, out)
    torch.testing.assert_close(h_bf, h_n)


def _loss(out, h_n):
    data = out.data
    weights = torch.linspace(0.5, 1.5, data.shape[0], dtype=data.dtype)[:, None]
    return (data.sin() * weights).sum() + h_n.square().sum()


def _gradients(rnn, x, h0, lengths, packed):
    rnn.zero_grad()
    x = x.detach().requires_grad_()
    h0 = h0.detach().requires_grad_()
    if packed:
        out, h_n = rnn(pack_padded_sequence(x, lengths, enforce_sorted=False), h0)
    else:
        out, h_n = rnn(x, h0, lengths=lengths)
        out = pack_padded_sequence(out, lengths, enforce_sorted=False)  # the same loss on the same values
    _loss(out, h_n).backward()
    grads = {"x": x.grad, "h0": h0.grad}
    grads.update({name: p.grad.clone() for name, p in rnn.named_parameters()})
    return grads


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("name", ["lipschitz", "antisymmetric_gated", "residual"])
def test_gradients_equal_the_lengths_path(backend, name):
    rnn = _build(name, backend=backend)
    x, h0 = _inputs(UNSORTED, N)
    expected = _gradients(rnn, x, h0, UNSORTED, packed=False)
    got = _gradients(rnn, x, h0, UNSORTED, packed=True)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], msg=key)
    for b, length in enumerate(UNSORTED):  # no gradient reaches the padding
        assert not got["x"][length:, b].any()


@pytest.mark.parametrize("form", ["per-step", "per-sequence", "packed"])
def test_dt_with_packed_input(form):
    rnn = _build("lipschitz", method="midpoint")
    x, h0 = _inputs(UNSORTED, N)
    dt = torch.rand(len(UNSORTED), T, dtype=torch.float64) + 0.5  # (B, T), original order
    if form == "per-step":
        dt = dt[0]
        given = dt
    elif form == "per-sequence":
        given = dt
    else:
        given = pack_padded_sequence(dt, UNSORTED, batch_first=True, enforce_sorted=False)
    out, h_n = rnn(pack_padded_sequence(x, UNSORTED, enforce_sorted=False), h0, dt=given)
    padded_out, padded_h_n = rnn(x, h0, lengths=UNSORTED, dt=dt)
    _same_pack(out, pack_padded_sequence(padded_out, UNSORTED, enforce_sorted=False))
    torch.testing.assert_close(h_n, padded_h_n)


def test_packed_dt_must_be_packed_like_x():
    rnn = _build("lipschitz")
    x, _ = _inputs(UNSORTED, N)
    packed = pack_padded_sequence(x, UNSORTED, enforce_sorted=False)
    other = [UNSORTED[1], UNSORTED[0], *UNSORTED[2:]]  # the same lengths, another order
    dt = pack_padded_sequence(
        torch.ones(len(other), T, dtype=torch.float64), other, batch_first=True, enforce_sorted=False
    )
    with pytest.raises(ValueError, match="dt must be packed like x"):
        rnn(packed, dt=dt)
    wide = pack_padded_sequence(torch.ones(T, len(UNSORTED), 2, dtype=torch.float64), UNSORTED, enforce_sorted=False)
    with pytest.raises(ValueError, match="one increment per step"):
        rnn(packed, dt=wide)
    ones = torch.ones(len(UNSORTED), T, dtype=torch.float64)
    packed_dt = pack_padded_sequence(ones, UNSORTED, batch_first=True, enforce_sorted=False)
    with pytest.raises(TypeError, match="dt may be a PackedSequence only when x is one"):
        rnn(x, dt=packed_dt)


def test_errors():
    rnn = _build("lipschitz")
    x, h0 = _inputs(UNSORTED, N)
    packed = pack_padded_sequence(x, UNSORTED, enforce_sorted=False)
    with pytest.raises(ValueError, match="lengths cannot be given with a PackedSequence"):
        rnn(packed, lengths=UNSORTED)
    with pytest.raises(ValueError, match="h0 must have shape"):
        rnn(packed, h0[:, :2])
    with pytest.raises(TypeError, match="floating-point"):
        rnn(pack_padded_sequence(x.long(), UNSORTED, enforce_sorted=False))
    with pytest.raises(ValueError, match="features"):
        rnn(pack_padded_sequence(x[..., :2], UNSORTED, enforce_sorted=False))
    with pytest.raises(ValueError, match=r"sum of lengths, input_size"):
        rnn(pack_padded_sequence(x[..., 0], UNSORTED, enforce_sorted=False))
    with pytest.raises(ValueError, match="NaN or Inf"):
        rnn(pack_padded_sequence(x.clone().fill_(float("nan")), UNSORTED, enforce_sorted=False))
    with pytest.raises(ValueError, match="discrete-time"):
        _build("vanilla")(packed, dt=torch.ones(T, dtype=torch.float64))


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize(("lengths", "enforce_sorted"), [(UNSORTED, False), (SORTED, True)])
def test_lstm_and_gru_pass_packed_input_to_torch(name, lengths, enforce_sorted):
    rnn = lr.build_model(name, P, N, 2).double()
    torch_rnn = (torch.nn.LSTM if name == "lstm" else torch.nn.GRU)(P, N, 2).double()
    torch_rnn.load_state_dict(rnn.state_dict())
    x, h = _inputs(lengths, N)
    h0 = (h, 0.5 * h) if name == "lstm" else h
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)

    out, h_n = rnn(packed, h0)
    expected_out, expected_h_n = torch_rnn(packed, h0)
    padded_out, padded_h_n = rnn(x, h0, lengths=lengths)

    _same_pack(out, expected_out)
    _same_pack(out, pack_padded_sequence(padded_out, lengths, enforce_sorted=enforce_sorted))
    states = [s if isinstance(s, tuple) else (s,) for s in (h_n, expected_h_n, padded_h_n)]
    for got, want, padded in zip(*states):  # h (and the LSTM's c), original batch order
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got, padded)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_lstm_and_gru_errors_with_packed_input(name):
    rnn = lr.build_model(name, P, N).double()
    x, h = _inputs(UNSORTED, N, layers=1)
    packed = pack_padded_sequence(x, UNSORTED, enforce_sorted=False)
    with pytest.raises(ValueError, match="lengths cannot be given with a PackedSequence"):
        rnn(packed, lengths=UNSORTED)
    with pytest.raises(ValueError, match="discrete-time"):
        rnn(packed, dt=torch.ones(T, dtype=torch.float64))
    h = h[:, :2]
    with pytest.raises(ValueError, match="h0 must have shape"):
        rnn(packed, (h, h) if name == "lstm" else h)
    with pytest.raises(ValueError, match=r"sum of lengths, 3"):
        rnn(pack_padded_sequence(x[..., :2], UNSORTED, enforce_sorted=False))
    # torch's LSTM checks no dtype on a packed input (its GRU does): a float32 pack met a kernel's "mat1 and mat2"
    single, mismatch = x.float(), r"input dtype \(torch.float32\) does not match weight dtype \(torch.float64\)"
    with pytest.raises(ValueError, match=mismatch):
        rnn(pack_padded_sequence(single, UNSORTED, enforce_sorted=False))
    with pytest.raises(ValueError, match=mismatch):
        rnn(single, lengths=UNSORTED)  # packed inside the wrapper


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["reference", "cuda-bptt", "triton"])
def test_gpu_backends_run_packed_input_as_the_lengths_path(backend):
    rnn = lr.LipschitzRNN(P, 16, 2, backend=backend, device="cuda")
    x = torch.randn(T, len(UNSORTED), P, device="cuda", requires_grad=True)
    h0 = 0.3 * torch.randn(2, len(UNSORTED), 16, device="cuda")
    out, h_n = rnn(pack_padded_sequence(x, UNSORTED, enforce_sorted=False), h0)
    (grad,) = torch.autograd.grad(out.data.sin().sum() + h_n.square().sum(), x)
    padded_out, padded_h_n = rnn(x, h0, lengths=UNSORTED)
    expected = pack_padded_sequence(padded_out, UNSORTED, enforce_sorted=False)
    (expected_grad,) = torch.autograd.grad(expected.data.sin().sum() + padded_h_n.square().sum(), x)
    _same_pack(out, expected)
    torch.testing.assert_close(h_n, padded_h_n)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("name", ["lipschitz", "cornn", "lstm"])
@pytest.mark.parametrize(("lengths", "enforce_sorted"), [(UNSORTED, False), (SORTED, True)])
def test_a_classifier_reads_each_packed_sequence_at_its_last_step(name, lengths, enforce_sorted):
    model = lr.SequenceClassifier(_build(name, layers=1), 4, dropout=0.2, input_dropout=0.1).double().eval()
    x = torch.randn(T, len(lengths), P, dtype=torch.float64)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)

    logits = model(packed)

    assert logits.shape == (len(lengths), 4)
    torch.testing.assert_close(logits, model(x, lengths=lengths))


def test_a_classifier_with_readout_all_gives_packed_logits():
    model = lr.SequenceClassifier(_build("lipschitz", layers=1), 4, readout="all").double().eval()
    x = torch.randn(T, len(UNSORTED), P, dtype=torch.float64)
    packed = pack_padded_sequence(x, UNSORTED, enforce_sorted=False)

    logits = model(packed)

    _same_pack(logits, pack_padded_sequence(model(x, lengths=UNSORTED), UNSORTED, enforce_sorted=False))


def test_a_classifier_trains_on_packed_input_with_dropout():
    model = lr.SequenceClassifier(_build("lipschitz", layers=1), 4, dropout=0.5, input_dropout=0.5).double().train()
    packed = pack_padded_sequence(torch.randn(T, 3, P, dtype=torch.float64), [6, 2, 4], enforce_sorted=False)

    model(packed).sum().backward()

    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
