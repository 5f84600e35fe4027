"""The ``cuda-bptt`` backend (the ``cpu`` backend's Function on CUDA tensors) against the reference.

It serves what the Triton kernels refuse on a GPU: N > 512 (char-level PTB at N = 1024), the
gated Lipschitz cell and RK4. The math is the ``cpu`` backend's, tested on CPU in
``test_backend_cpu.py``; here the CUDA path is checked forward and for every gradient with
strict fp32 products (relative error 1e-5), and skipped without a GPU.
"""

import warnings

import pytest
import torch

import lipschitz_rnn as lr
from lipschitz_rnn.backends import BACKENDS, resolve_backend

pytestmark = pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning")

CONFIGS = [
    ("lipschitz", {"method": "euler"}),
    ("lipschitz", {"method": "midpoint"}),
    ("lipschitz", {"method": "rk4", "gated": True}),
    ("antisymmetric_gated", {}),
]


def test_refuses_cpu_tensors_with_a_reason():
    cell = lr.LipschitzRNN(1, 8).cells[0]
    reason = BACKENDS.get("cuda-bptt").unsupported_reason(cell, torch.zeros(3, 2, 1), None, None)
    assert reason is not None and "cuda" in reason
    with pytest.raises(ValueError, match="cuda-bptt"):
        lr.LipschitzRNN(1, 8, backend="cuda-bptt")(torch.zeros(3, 2, 1))


def _gradients(rnn, backend, x, h0, call):
    rnn.backend = backend
    rnn.zero_grad()
    x = x.detach().requires_grad_()
    h0 = h0.detach().requires_grad_()
    out, h_n = rnn(x, h0, **call)
    weights = torch.linspace(0.5, 1.5, out.shape[0], device=out.device)[:, None, None]
    (out.sin() * weights).sum().add(h_n.square().sum()).backward()
    results = {"output": out.detach(), "h_n": h_n.detach(), "x.grad": x.grad, "h0.grad": h0.grad}
    results.update({name + ".grad": p.grad for name, p in rnn.named_parameters()})
    return results


@pytest.mark.gpu
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=[f"{n}-{k}" for n, k in CONFIGS])
@pytest.mark.parametrize("variable", [False, True], ids=["plain", "lengths-dt"])
def test_gpu_matches_reference_at_n256(name, kwargs, variable):
    torch.manual_seed(0)
    T, B, N, p = 150, 33, 256, 5
    rnn = lr.build_model(name, p, N, 2, device="cuda", **kwargs)
    x = torch.randn(T, B, p, device="cuda")
    h0 = 0.5 * torch.randn(2, B, N, device="cuda")
    call = {}
    if variable:
        call = {"lengths": torch.randint(1, T + 1, (B,)), "dt": torch.rand(B, T, device="cuda") + 0.5}
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        expected = _gradients(rnn, "reference", x, h0, call)
        got = _gradients(rnn, "cuda-bptt", x, h0, call)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    errors = {k: ((got[k] - expected[k]).norm() / expected[k].norm().clamp_min(1e-30)).item() for k in expected}
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-5, f"{worst}: relative error {errors[worst]:.2e} (all: {errors})"


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["euler", "exp_euler"])
def test_gpu_outputs_are_the_saved_states_and_double_backward_raises(method):
    rnn = lr.LipschitzRNN(3, 16, method=method, backend="cuda-bptt", device="cuda")
    x = torch.randn(6, 4, 3, device="cuda")
    out, h_n = rnn(x)
    out.mul_(2)  # the outputs are what the backward reads: autograd refuses, as for cuDNN
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
    out, h_n = rnn(x)
    with pytest.raises(RuntimeError, match="double backward .*needs backend='reference'"):
        torch.autograd.grad(out.sum() + h_n.sum(), rnn.cells[0].M_A, create_graph=True)


@pytest.mark.gpu
def test_gpu_auto_picks_cuda_bptt_where_triton_cannot_run():
    x = torch.randn(5, 2, 1, device="cuda")
    wide = lr.LipschitzRNN(1, 1024, device="cuda").cells[0]
    gated = lr.LipschitzRNN(1, 64, gated=True, device="cuda").cells[0]
    with warnings.catch_warnings():  # auto warns once per reason and process: not asserted here
        warnings.simplefilter("ignore")
        assert resolve_backend("auto", wide, x, None, None).name == "cuda-bptt"
        assert resolve_backend("auto", gated, x, None, None).name == "cuda-bptt"
