"""Under ``torch.autocast`` the recurrent layers and cells compute in their parameters' dtype.

Every backend then gives the numbers it gives without autocast (forward and gradients, bit for
bit), a float16/bfloat16 input from an earlier autocast layer is taken in the parameters' dtype,
and outside autocast a dtype mismatch is still an error. On the CPU the ``triton`` backend runs
in Triton's interpreter; the CUDA cases are marked ``gpu``.
"""

import pytest
import torch

import lipschitz_rnn as lr
from lipschitz_rnn import _autocast

pytestmark = pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning")

OUR_LAYERS = ["lipschitz", "antisymmetric", "antisymmetric_gated", "vanilla", "residual", "cayley", "exprnn", "cornn"]
FAST = [  # (model, backend, options): the fused and hand-written recurrences
    ("lipschitz", "cpu", {"method": "midpoint"}),
    ("antisymmetric_gated", "cpu", {}),
    ("lipschitz", "triton", {"method": "euler"}),
    ("residual", "triton", {}),
]


def _run(rnn, x, h0, autocast=None):
    """Output, h_n and every gradient of a fixed loss, all detached; the forward pass under ``autocast``
    (a device type and dtype) if given, the backward pass outside it, as PyTorch's AMP recipe has it."""
    rnn.zero_grad()
    x = x.detach().requires_grad_()
    h0 = h0.detach().requires_grad_()
    if autocast is None:
        out, h_n = rnn(x, h0)
    else:
        with torch.autocast(autocast[0], dtype=autocast[1]):
            out, h_n = rnn(x, h0)
    (out.sin().sum() + h_n.square().sum()).backward()
    results = {"output": out.detach(), "h_n": h_n.detach(), "x.grad": x.grad, "h0.grad": h0.grad}
    results.update({name + ".grad": p.grad.clone() for name, p in rnn.named_parameters()})
    return results


def _assert_identical(got, expected):
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key].dtype == expected[key].dtype, key
        assert torch.equal(got[key], expected[key]), key


def _inputs(rnn, device="cpu", steps=9, batch=4):
    x = torch.randn(steps, batch, rnn.input_size, device=device)
    h0 = 0.1 * torch.randn(rnn.num_layers, batch, rnn.state_size, device=device)
    return x, h0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", OUR_LAYERS)
def test_a_layer_under_cpu_autocast_gives_its_float32_numbers(name, dtype):
    rnn = lr.build_model(name, 3, 8, 2, backend="reference")
    x, h0 = _inputs(rnn)
    expected = _run(rnn, x, h0)
    got = _run(rnn, x, h0, autocast=("cpu", dtype))
    assert got["output"].dtype == torch.float32
    _assert_identical(got, expected)


@pytest.mark.parametrize(("name", "backend", "options"), FAST, ids=[f"{n}-{b}" for n, b, _ in FAST])
def test_the_fast_backends_under_cpu_autocast_give_their_float32_numbers(name, backend, options):
    rnn = lr.build_model(name, 3, 16, backend=backend, **options)
    x, h0 = _inputs(rnn, steps=6, batch=3)
    expected = _run(rnn, x, h0)
    got = _run(rnn, x, h0, autocast=("cpu", torch.bfloat16))
    _assert_identical(got, expected)


@pytest.mark.parametrize("name", ["lipschitz", "cornn"])
def test_a_half_precision_input_under_autocast_is_taken_in_the_parameters_dtype(name):
    rnn = lr.build_model(name, 3, 8)
    x, h0 = _inputs(rnn)
    x_low, h0_low, dt_low = x.bfloat16(), h0.bfloat16(), torch.rand(9).add(0.5).bfloat16()
    expected_out, expected_h = rnn(x_low.float(), h0_low.float(), dt=dt_low.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = rnn(x_low, h0_low, dt=dt_low)
    assert out.dtype == h_n.dtype == torch.float32
    assert torch.equal(out, expected_out) and torch.equal(h_n, expected_h)


def test_a_packed_half_precision_input_under_autocast_is_taken_in_the_parameters_dtype():
    rnn = lr.build_model("lipschitz", 3, 8)
    x = torch.randn(7, 3, 3).bfloat16()
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, [7, 4, 2], enforce_sorted=False)
    expected_out, expected_h = rnn(torch.nn.utils.rnn.PackedSequence(packed.data.float(), *packed[1:]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = rnn(packed)
    assert out.data.dtype == torch.float32
    assert torch.equal(out.data, expected_out.data) and torch.equal(h_n, expected_h)


def test_outside_autocast_a_dtype_mismatch_is_still_an_error():
    rnn = lr.build_model("lipschitz", 3, 8)
    with pytest.raises(TypeError, match=r"x has dtype torch.bfloat16 but the module's parameters are torch.float32"):
        rnn(torch.randn(5, 2, 3).bfloat16())
    with pytest.raises(TypeError, match=r"x has dtype torch.bfloat16 but the cell's parameters are torch.float32"):
        rnn.cells[0](torch.randn(2, 3).bfloat16())


def test_under_autocast_a_float64_input_to_float32_parameters_is_still_an_error():
    rnn = lr.build_model("lipschitz", 3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(TypeError, match="x has dtype torch.float64"):
        rnn(torch.randn(5, 2, 3, dtype=torch.float64))


@pytest.mark.parametrize("name", ["lipschitz", "antisymmetric_gated", "cornn", "cayley"])
def test_a_cell_step_under_autocast_gives_its_float32_numbers(name):
    cell = lr.build_model(name, 3, 8).cells[0]
    x = torch.randn(4, 3)
    h = 0.1 * torch.randn(4, cell.state_size)
    expected = cell(x, h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = cell(x, h)
        got_low = cell(x.bfloat16(), h.bfloat16())
    assert got.dtype == got_low.dtype == torch.float32
    assert torch.equal(got, expected)
    assert torch.equal(got_low, cell(x.bfloat16().float(), h.bfloat16().float()))


def test_what_follows_the_layer_still_autocasts():
    model = lr.SequenceClassifier(lr.build_model("lipschitz", 1, 8), num_classes=10)
    x = torch.randn(6, 2, 1)
    features, _ = model.rnn(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        features_autocast, _ = model.rnn(x)
    assert logits.dtype == torch.bfloat16  # the readout is a Linear: autocast runs it in bfloat16
    assert torch.equal(features_autocast, features)


def test_the_autocast_query_works_with_torch_before_2_4(monkeypatch):
    """torch < 2.4 has ``is_autocast_enabled()`` (CUDA) and ``is_autocast_cpu_enabled()``, neither taking a device."""
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda: True)
    monkeypatch.setattr(torch, "is_autocast_cpu_enabled", lambda: False, raising=False)
    autocast_active = _autocast.autocast_query()
    assert autocast_active("cuda") is True
    assert autocast_active("cpu") is False
    assert autocast_active("mps") is False


def test_the_autocast_query_follows_torch_autocast():
    assert not _autocast.autocast_active("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _autocast.autocast_active("cpu")
        with torch.autocast("cpu", enabled=False):
            assert not _autocast.autocast_active("cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(
    ("name", "backend", "options"),
    [
        ("lipschitz", "triton", {"method": "euler"}),
        ("lipschitz", "triton", {"method": "midpoint"}),
        ("antisymmetric_gated", "triton", {}),
        ("lipschitz", "cuda-bptt", {"method": "rk4", "gated": True}),
        ("lipschitz", "reference", {"method": "euler"}),
    ],
    ids=["triton-euler", "triton-midpoint", "triton-asr-gated", "cuda-bptt-rk4-gated", "reference"],
)
def test_on_a_gpu_a_layer_under_cuda_autocast_gives_its_float32_numbers(name, backend, options, dtype):
    rnn = lr.build_model(name, 3, 64, backend=backend, device="cuda", **options)
    x, h0 = _inputs(rnn, device="cuda", steps=50, batch=32)
    expected = _run(rnn, x, h0)
    got = _run(rnn, x, h0, autocast=("cuda", dtype))
    with torch.autocast("cuda", dtype=dtype):
        out_low, _ = rnn(x.to(dtype), h0.to(dtype))
    _assert_identical(got, expected)
    assert torch.equal(out_low, rnn(x.to(dtype).float(), h0.to(dtype).float())[0])
