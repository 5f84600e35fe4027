"""The exponential Euler step of the Lipschitz unit: h⁺ = e^{εαA} h + ε φ₁(εαA) σ(W h + U x + b)."""

import math
import re
import warnings

import pytest
import torch
from torch.func import functional_call

import lipschitz_rnn as lr
from lipschitz_rnn import backends
from lipschitz_rnn.backends import BACKENDS, resolve_backend
from lipschitz_rnn.backends import cpu as cpu_backend
from lipschitz_rnn.cli import main
from lipschitz_rnn.train import load_config
from test_backend_cpu import F32_RTOL, _data, assert_matches_reference
from test_train_toytasks import read_jsonl, write_config


def series(L: torch.Tensor, eps: float, terms: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """e^{εL} = Σ (εL)^k / k! and εφ₁(εL) = ε Σ (εL)^k / (k+1)!, summed directly (independent of matrix_exp)."""
    Z = eps * L
    term = torch.eye(L.shape[0], dtype=L.dtype)
    E, phi = term.clone(), term.clone()
    for k in range(1, terms):
        term = term @ Z / k
        E = E + term
        phi = phi + term / (k + 1)
    return E, eps * phi


def flow(L: torch.Tensor, t: float, halvings: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(e^{tL}, tφ₁(tL)) by the series at t / 2^k and k doublings: E(2s) = E(s)², P(2s) = P(s) + E(s) P(s)."""
    E, P = series(L, t / 2**halvings, terms=30)
    for _ in range(halvings):
        E, P = E @ E, P + E @ P
    return E, P


def skew_cell(n=16, norm=20.0, gamma=0.5, eps=0.3, method="exp_euler", seed=0):
    """A cell whose A = M − Mᵀ − γI has every eigenvalue at Re λ = −γ and |Im λ| up to about ``norm``."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lr.StepSizeWarning)  # Euler's step is meant to be unstable here
        cell = lr.LipschitzRNNCell(2, n, eps=eps, beta=1.0, gamma=gamma, method=method, dtype=torch.float64)
    with torch.no_grad():
        cell.M_A.copy_(torch.randn(n, n, dtype=torch.float64))
        cell.M_A.mul_(norm / float(torch.linalg.matrix_norm(cell.A + gamma * torch.eye(n, dtype=torch.float64), 2)))
    return cell


def test_the_step_matrices_check_their_arguments():
    method = lr.get_method("exp_euler")
    with pytest.raises(ValueError, match="eps must be > 0"):
        method.step_matrices(-torch.eye(3, dtype=torch.float64), -1.0)  # would give e^{-L}: backwards in time
    with pytest.raises(ValueError, match=r"L must be a square matrix, got shape \(3, 4\)"):
        method.step_matrices(torch.zeros(3, 4, dtype=torch.float64), 0.1)


def test_the_step_matrices_are_the_exponential_and_phi1():
    method = lr.get_method("exp_euler")
    L = torch.randn(6, 6, dtype=torch.float64)
    E, P = method.step_matrices(L, 0.4)
    E_ref, P_ref = series(L, 0.4)
    torch.testing.assert_close(E, E_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(P, P_ref, rtol=1e-12, atol=1e-12)
    # a singular L needs no inverse: L = 0 gives (I, εI), Euler's step for dh/dt = g
    E0, P0 = method.step_matrices(torch.zeros(3, 3, dtype=torch.float64), 0.25)
    torch.testing.assert_close(E0, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(P0, 0.25 * torch.eye(3, dtype=torch.float64))
    z = torch.tensor([-1.0 + 2.0j, 0.5j, 0.3])
    torch.testing.assert_close(method.stability_function(z), torch.exp(z.to(torch.complex128)))
    assert method.name == "exp_euler" and method.exponential and not lr.get_method("euler").exponential
    assert lr.get_method("exponential_euler") is method


@pytest.mark.parametrize("norm", [0.3, 40.0, 3000.0])
def test_the_step_matrices_agree_with_the_augmented_matrix_exponential_at_any_norm(norm):
    # the scaled-and-squared Taylor series against torch.linalg.matrix_exp of [[εL, εI], [0, 0]]: its top blocks
    # are e^{εL} and εφ₁(εL); norms from no halving to a dozen
    torch.manual_seed(0)
    n, eps = 32, 0.1
    # a rotation of size ``norm`` (skew part), a non-normal part of norm 1 and a damping of 2: every eigenvalue
    # has Re λ <= -1 and e^{εL} stays of order 1, as for a trained A
    M, R = torch.randn(n, n, dtype=torch.float64), torch.randn(n, n, dtype=torch.float64)
    skew = (M - M.T) * (norm / float(torch.linalg.matrix_norm(M - M.T, 2)))
    L = skew + R / float(torch.linalg.matrix_norm(R, 2)) - 2.0 * torch.eye(n, dtype=torch.float64)
    E, P = lr.get_method("exp_euler").step_matrices(L, eps)
    augmented = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
    augmented[:n, :n], augmented[:n, n:] = eps * L, eps * torch.eye(n, dtype=torch.float64)
    expm = torch.linalg.matrix_exp(augmented)
    for ours, theirs in [(E, expm[:n, :n]), (P, expm[:n, n:])]:
        assert float((ours - theirs).abs().max()) <= 1e-11 * float(theirs.abs().max())
    # float32 (the lower Taylor degree, more squarings' rounding at large norms) is as accurate as
    # torch.linalg.matrix_exp in float32: within 3 times its error against the float64 matrices
    E32, P32 = lr.get_method("exp_euler").step_matrices(L.float(), eps)
    expm32 = torch.linalg.matrix_exp(augmented.float()).double()
    for ours, theirs, truth in [(E32, expm32[:n, :n], E), (P32, expm32[:n, n:], P)]:
        error, error_matrix_exp = (float((m.double() - truth).abs().max()) for m in (ours, theirs))
        assert error <= 3 * error_matrix_exp + 1e-6 * float(truth.abs().max()), (error, error_matrix_exp)


def test_non_finite_weights_give_non_finite_step_matrices_not_an_exception():
    # a diverged run reaches the loop's non-finite loss check instead of failing inside the step matrices
    for value in (float("nan"), float("inf")):
        E, P = lr.get_method("exp_euler").step_matrices(torch.full((3, 3), value), 0.1)
        assert not bool(torch.isfinite(E).any()) and not bool(torch.isfinite(P).any())


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_the_layer_runs_the_exponential_euler_recurrence(alpha):
    settings = {"eps": 0.2, "beta": 0.6, "gamma": 0.05, "init_std": 3.0, "alpha": alpha, "dtype": torch.float64}
    rnn = lr.LipschitzRNN(3, 8, method="exp_euler", backend="reference", **settings)
    cell = rnn.cells[0]
    x, h0 = torch.randn(12, 4, 3, dtype=torch.float64), 0.1 * torch.randn(4, 8, dtype=torch.float64)
    A, W, U, b = (t.detach() for t in (cell.A, cell.W, cell.U, cell.b))
    E, P = series(alpha * A, 0.2)
    h, expected = h0, []
    for x_t in x:
        h = h @ E.T + torch.tanh(h @ W.T + x_t @ U.T + b) @ P.T
        expected.append(h)
    output, h_n = rnn(x, h0.unsqueeze(0))
    torch.testing.assert_close(output, torch.stack(expected), rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(h_n[0], expected[-1])
    # the cell's single step is the layer's first
    torch.testing.assert_close(cell(x[0], h0), expected[0], rtol=1e-11, atol=1e-11)


def test_linear_dynamics_with_constant_forcing_are_integrated_exactly_at_any_step_size():
    # W = 0 and a constant input: dh/dt = A h + c with c = tanh(U x + b), solved by
    # h(t) = e^{tA} h0 + t φ₁(tA) c. Exponential Euler lands on it after every step, Euler does not.
    eps, steps = 0.5, 20
    for method in ("exp_euler", "euler"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", lr.StepSizeWarning)
            settings = {"beta_A": 0.7, "gamma_A": 0.3, "beta_W": 0.5, "gamma_W": 0.0, "init_std": 3.0}
            rnn = lr.LipschitzRNN(2, 6, method=method, eps=eps, backend="reference", dtype=torch.float64, **settings)
        cell = rnn.cells[0]
        with torch.no_grad():
            cell.M_W.zero_()  # W = S(0) with gamma_W = 0 is the zero matrix
        x = torch.randn(1, 3, 2, dtype=torch.float64).expand(steps, 3, 2)
        h0 = torch.randn(3, 6, dtype=torch.float64)
        with torch.no_grad():
            output, _ = rnn(x, h0.unsqueeze(0))
            c = torch.tanh(x[0] @ cell.U.T + cell.b)
            E_t, P_t = flow(cell.A, eps * steps)  # the exact flow over the whole time eps * steps
        exact = h0 @ E_t.T + c @ P_t.T
        error = float((output[-1] - exact).abs().max())
        if method == "exp_euler":
            assert error < 1e-10
        else:
            assert error > 1e-3  # the first-order explicit step is visibly off at this step size


def test_the_hidden_state_stays_bounded_where_euler_explodes():
    # A = M − Mᵀ − γI is normal with every eigenvalue at Re λ = −γ: ‖e^{εA}‖₂ = e^{−εγ} < 1, so
    # ‖h_t‖₂ <= ‖h_0‖₂ + ‖εφ₁(εA)‖₂ √N / (1 − e^{−εγ}) for every input, however large |Im λ| is.
    # Euler's step has |1 + ελ| ≈ ε |Im λ| ≈ 6 at the same ε: the state grows without bound.
    n, eps, gamma = 16, 0.3, 0.5
    x = 5.0 * torch.randn(300, 4, 2, dtype=torch.float64)
    states = {}
    for method in ("exp_euler", "euler"):
        cell = skew_cell(n, eps=eps, gamma=gamma, method=method)
        rnn = lr.LipschitzRNN(2, n, method=method, eps=eps, dtype=torch.float64, backend="reference")
        rnn.cells[0] = cell
        with torch.no_grad():
            states[method], _ = rnn(x)
    cell = skew_cell(n, eps=eps, gamma=gamma)
    E, P = lr.get_method("exp_euler").step_matrices(cell.A.detach(), eps)
    assert float(torch.linalg.matrix_norm(E, 2)) == pytest.approx(math.exp(-eps * gamma), rel=1e-9)
    bound = float(torch.linalg.matrix_norm(P, 2)) * math.sqrt(n) / (1 - math.exp(-eps * gamma))
    assert float(states["exp_euler"].norm(dim=-1).max()) <= bound
    euler = states["euler"].norm(dim=-1).max()
    assert not torch.isfinite(euler) or float(euler) > 1e10


def test_the_stability_report_uses_the_exponential_steps_own_amplification():
    cell = skew_cell(eps=0.3, gamma=0.5)
    report = lr.stability_report(cell)
    discrete = report.to_dict()["discrete"]
    assert report.method == "exp_euler"
    assert discrete["D=0"]["max_abs_R"] == pytest.approx(math.exp(-0.3 * 0.5), rel=1e-9)  # |e^{ελ}|, Re λ = −γ
    E, P = lr.get_method("exp_euler").step_matrices(cell.A.detach(), 0.3)
    linearised = E + P @ cell.W.detach()  # the step linearised at σ' = 1 (D = I)
    assert discrete["D=LI"]["max_abs_R"] == pytest.approx(float(torch.linalg.eigvals(linearised).abs().max()))
    euler = lr.stability_report(cell, method="euler").to_dict()["discrete"]
    assert euler["D=0"]["max_abs_R"] > 5 and not euler["stable"]
    # and the cell warns about no step size: none leaves the exponential step's region
    with warnings.catch_warnings():
        warnings.simplefilter("error", lr.StepSizeWarning)
        skew_cell(norm=1000.0, eps=10.0)


def test_cells_and_calls_it_cannot_run_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="the gated cell multiplies the whole field"):
        lr.LipschitzRNNCell(2, 4, method="exp_euler", gated=True)
    with pytest.raises(ValueError, match="AntisymmetricRNNCell has none"):
        lr.AntisymmetricRNNCell(2, 4, method="exp_euler")
    rnn = lr.LipschitzRNN(2, 4, method="exp_euler", backend="reference")
    with pytest.raises(ValueError, match=re.escape("runs the cell's fixed step eps=0.03: dt is not supported")):
        rnn(torch.randn(5, 3, 2), dt=torch.full((5,), 0.5))


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("lengths", [None, [40, 17, 1]], ids=["full", "lengths"])
def test_the_cpu_backend_matches_the_reference_loop(alpha, lengths):
    # outputs, h_n and every gradient (input, h0, M_A through the step matrices, M_W, U, b) of two layers, float64
    torch.manual_seed(0)
    rnn = lr.LipschitzRNN(
        2, 16, num_layers=2, method="exp_euler", eps=0.3, init_std=3.0, alpha=alpha, dtype=torch.float64
    )
    call = {} if lengths is None else {"lengths": torch.tensor(lengths)}
    assert_matches_reference(rnn, *_data(40, 3, 2, 16, layers=2), **call)


def test_the_cpu_backend_matches_over_many_backward_blocks_and_in_float32(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr(cpu_backend, "_BLOCK_ROWS", 7)  # blocks of 3 steps at B = 3, the last one short
    rnn = lr.LipschitzRNN(2, 16, method="exp_euler", eps=0.3, init_std=3.0, dtype=torch.float64)
    assert_matches_reference(rnn, *_data(40, 3, 2, 16))
    monkeypatch.undo()
    rnn = lr.LipschitzRNN(3, 64, method="exp_euler", eps=0.3, gamma=0.5, init_std=8.0)
    assert_matches_reference(
        rnn, *_data(200, 5, 3, 64, dtype=torch.float32), rtol=F32_RTOL, lengths=[200, 3, 77, 1, 150]
    )


def test_auto_runs_it_on_the_cpu_backend_and_dt_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(backends, "_warned", set())  # auto warns once per reason and process
    x = torch.randn(7, 3, 2)
    cell = lr.LipschitzRNN(2, 4, method="exp_euler").cells[0]
    assert resolve_backend("auto", cell, x, None, None).name == "cpu"
    dt = torch.full((7, 3, 1), 0.5)
    assert "runs the cell's fixed step: dt is not supported" in BACKENDS.get("cpu").unsupported_reason(
        cell, x, dt, None
    )
    with pytest.raises(ValueError, match=re.escape("runs the cell's fixed step: dt is not supported")):
        lr.LipschitzRNN(2, 4, method="exp_euler", backend="cpu")(x, dt=torch.full((7,), 0.5))


def test_the_cpu_backend_gradients_match_finite_differences():
    torch.manual_seed(0)
    rnn = lr.LipschitzRNN(2, 3, method="exp_euler", eps=0.4, init_std=3.0, dtype=torch.float64, backend="cpu")
    x = torch.randn(6, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 3, dtype=torch.float64, requires_grad=True)
    params = dict(rnn.named_parameters())

    def loss(x, h0, *tensors):
        output, h_n = functional_call(rnn, dict(zip(params, tensors)), (x, h0), {"lengths": torch.tensor([6, 4])})
        return (output**2).sum() + h_n.sum()

    inputs = (x, h0, *(p.detach().clone().requires_grad_() for p in params.values()))
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-7)


def test_gradients_through_the_matrix_exponential_match_finite_differences():
    rnn = lr.LipschitzRNN(2, 3, method="exp_euler", eps=0.4, init_std=3.0, dtype=torch.float64, backend="reference")
    x = torch.randn(4, 2, 2, dtype=torch.float64)
    names = ["cells.0.M_A", "cells.0.M_W", "cells.0.U", "cells.0.b"]
    params = {name: p.detach().clone().requires_grad_() for name, p in rnn.named_parameters() if name in names}
    assert sorted(params) == sorted(names)

    def loss(*tensors):
        output, _ = functional_call(rnn, dict(zip(params, tensors)), (x,))
        return (output**2).sum()

    assert torch.autograd.gradcheck(loss, tuple(params.values()), eps=1e-6, atol=1e-7)


def test_a_training_run_takes_it_from_the_config(tmp_path):
    out = tmp_path / "run"
    overrides = [
        "model.method=exp_euler",
        "model.eps=0.1",
        "train.backend=reference",
        "train.epochs=2",
        "train.limit_train_batches=4",
        "log.plots=false",
    ]
    assert main(["train", str(write_config(tmp_path)), *overrides, "--out", str(out)]) == 0
    records = read_jsonl(out / "metrics.jsonl")
    assert len(records) == 2 and all(math.isfinite(r["train"]["loss"]) for r in records)
    # its per-epoch amplification is the exponential step's, max |e^{ελ(A)}| = e^{ε max Re λ(A)}: above 1
    # only where the ODE itself grows
    assert load_config(out / "config.toml").model.options == {"method": "exp_euler", "eps": 0.1}
    for r in records:
        numbers = r["stability"]["layer0"]
        assert numbers["max_abs_R_eps_lambda_D0"] == pytest.approx(math.exp(0.1 * numbers["max_re_eig_A"]), rel=1e-9)


@pytest.mark.gpu
def test_on_a_gpu_auto_runs_cuda_bptt_and_agrees_with_the_float64_cpu(monkeypatch):
    # triton refuses exp_euler (no fused kernel) and says so; cuda-bptt runs it, step matrices included,
    # forward and backward, and agrees with the float64 CPU computation
    monkeypatch.setattr(backends, "_warned", set())
    torch.manual_seed(0)
    rnn = lr.LipschitzRNN(3, 256, method="exp_euler", eps=0.3, beta=0.75, gamma=1.0, init_std=3.0)
    x = torch.randn(150, 8, 3)
    cpu = lr.LipschitzRNN(
        3, 256, method="exp_euler", eps=0.3, beta=0.75, gamma=1.0, dtype=torch.float64, backend="reference"
    )
    cpu.load_state_dict({k: v.double() for k, v in rnn.state_dict().items()})
    out_cpu, _ = cpu(x.double())
    out_cpu.square().sum().backward()
    rnn = rnn.cuda()
    with warnings.catch_warnings(record=True) as caught:  # auto warns once per reason and process: record the first
        warnings.simplefilter("always")
        assert resolve_backend("auto", rnn.cells[0], x.cuda(), None, None).name == "cuda-bptt"
        out, _ = rnn(x.cuda())
    reasons = " | ".join(str(w.message) for w in caught)
    assert "falls back from 'triton'" in reasons and "cuda-bptt" not in reasons, reasons
    out.square().sum().backward()
    assert float((out.detach().double().cpu() - out_cpu.detach()).abs().max()) < 1e-4
    for (name, p), q in zip(rnn.named_parameters(), cpu.parameters()):
        scale = float(q.grad.abs().max())
        assert float((p.grad.double().cpu() - q.grad).abs().max()) <= 1e-3 * scale, name


@pytest.mark.gpu
def test_cuda_bptt_matches_the_reference_loop_on_the_gpu_with_strict_fp32_products():
    torch.manual_seed(0)
    T, B, N = 150, 33, 256
    rnn = lr.LipschitzRNN(5, N, num_layers=2, method="exp_euler", eps=0.3, gamma=0.5, init_std=8.0, device="cuda")
    x = torch.randn(T, B, 5, device="cuda")
    h0 = 0.5 * torch.randn(2, B, N, device="cuda")
    lengths = torch.randint(1, T + 1, (B,))
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        results = {}
        for backend in ("reference", "cuda-bptt"):
            rnn.backend = backend
            rnn.zero_grad()
            xg, hg = x.clone().requires_grad_(), h0.clone().requires_grad_()
            out, h_n = rnn(xg, hg, lengths=lengths)
            weights = torch.linspace(0.5, 1.5, T, device="cuda")[:, None, None]
            (out.sin() * weights).sum().add(h_n.square().sum()).backward()
            results[backend] = {"output": out.detach(), "h_n": h_n.detach(), "x": xg.grad, "h0": hg.grad}
            results[backend].update({name: p.grad.clone() for name, p in rnn.named_parameters()})
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    expected, got = results["reference"], results["cuda-bptt"]
    errors = {k: float((got[k] - v).norm() / v.norm().clamp_min(1e-30)) for k, v in expected.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-5, f"{worst}: relative error {errors[worst]:.2e} (all: {errors})"
