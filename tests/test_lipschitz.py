"""The Lipschitz recurrent unit against REFERENCE.md §1, through the public analysis API."""

import pytest
import torch

import lipschitz_rnn as lr
from equations import S, run_asr, run_lipschitz

METHODS = ["euler", "midpoint", "heun", "rk4"]

# Several tests use deliberately strong weights (every term must matter), which the
# step-size check rightly flags; the warning itself is tested in test_validation.py.
pytestmark = pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning")


def _lipschitz(p=3, n=8, dtype=torch.float64, **kw):
    kw.setdefault("init_std", 3.0)  # larger than the reference default, so every term matters
    return lr.LipschitzRNN(p, n, dtype=dtype, **kw)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("gated", [False, True])
def test_update_rule_matches_hand_written_loop(method, gated):
    rnn = _lipschitz(method=method, gated=gated, eps=0.2, beta=0.6, gamma=0.05)
    cell = rnn.cells[0]
    x = torch.randn(12, 4, 3, dtype=torch.float64)
    gate = {"Ug": cell.U_g, "bg": cell.b_g} if gated else {}
    expected = run_lipschitz(x, cell.A, cell.W, cell.U, cell.b, cell.eps, method, **gate)
    output, h_n = rnn(x)
    torch.testing.assert_close(output, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n[0], expected[-1])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "settings",
    [{}, {"init_std": 2.0, "gamma": 0.1, "eps": 0.1, "beta": 0.9}],
    ids=["published-defaults", "strong-init"],
)
def test_float32_agrees_with_independent_equations_to_1e5(method, settings):
    # Both sides in float32, as a user's own implementation would be; the float64 tests
    # above pin the math to 1e-12.
    rnn = lr.LipschitzRNN(2, 64, method=method, **settings)
    cell = rnn.cells[0]
    x = torch.rand(784, 5, 2)
    h0 = 0.1 * torch.randn(1, 5, 64)
    with torch.no_grad():
        expected = run_lipschitz(x, cell.A, cell.W, cell.U, cell.b, cell.eps, method, h0=h0[0])
        output, h_n = rnn(x, h0)
    assert output.dtype == torch.float32
    assert (output - expected).abs().max() < 1e-5
    assert (h_n[0] - expected[-1]).abs().max() < 1e-5


def test_A_and_W_follow_the_symmetric_skew_construction():
    cell = lr.LipschitzRNNCell(2, 6, beta_A=0.3, gamma_A=0.2, beta_W=0.9, gamma_W=0.0, dtype=torch.float64)
    torch.testing.assert_close(cell.A, S(cell.M_A, 0.3, 0.2))
    torch.testing.assert_close(cell.W, S(cell.M_W, 0.9, 0.0))


def test_shared_beta_gamma_apply_to_both_and_separate_values_override():
    cell = lr.LipschitzRNNCell(1, 4, beta=0.2, gamma=0.4, gamma_W=0.0)
    assert (cell.beta_A, cell.gamma_A, cell.beta_W, cell.gamma_W) == (0.2, 0.4, 0.2, 0.0)


def test_no_factor_one_half_beta_half_gives_M_minus_gamma():
    cell = lr.LipschitzRNNCell(1, 5, beta=0.5, gamma=0.3, dtype=torch.float64)
    torch.testing.assert_close(cell.A, cell.M_A - 0.3 * torch.eye(5, dtype=torch.float64))


@pytest.mark.parametrize("gamma", [0.0, 0.001, 0.7])
def test_beta_one_puts_every_eigenvalue_of_A_on_minus_gamma(gamma):
    cell = lr.LipschitzRNNCell(1, 32, beta=1.0, gamma=gamma, init_std=20.0, dtype=torch.float64)
    eig = torch.linalg.eigvals(cell.A)
    torch.testing.assert_close(eig.real, torch.full((32,), -gamma, dtype=torch.float64), atol=1e-12, rtol=0)
    assert eig.imag.abs().max() > 0.01  # the skew part is not trivially zero


def test_alpha_zero_and_beta_W_one_is_the_antisymmetric_rnn_on_the_same_weights():
    lip = _lipschitz(alpha=0.0, beta_W=1.0, gamma_W=0.05, eps=0.3)
    asr = lr.AntisymmetricRNN(3, 8, eps=0.3, gamma=0.05, dtype=torch.float64)
    with torch.no_grad():
        asr.cells[0].M.copy_(lip.cells[0].M_W)
        asr.cells[0].U.copy_(lip.cells[0].U)
        asr.cells[0].b.copy_(lip.cells[0].b)
    x = torch.randn(20, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(lip(x)[0], asr(x)[0], rtol=0, atol=1e-14)


def test_alpha_scales_the_linear_term():
    rnn = _lipschitz(alpha=0.25, eps=0.5)
    cell = rnn.cells[0]
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    expected = run_lipschitz(x, cell.A, cell.W, cell.U, cell.b, 0.5, alpha=0.25)
    torch.testing.assert_close(rnn(x)[0], expected)


def test_reference_initialisation_std_is_init_std_over_N():
    N = 256
    cell = lr.LipschitzRNNCell(1, N, init_std=0.1)
    for M in (cell.M_A, cell.M_W):
        assert abs(M.mean().item()) < 3 * (0.1 / N) / N
        assert M.std().item() == pytest.approx(0.1 / N, rel=0.02)
    bound = 1.0  # nn.Linear default with fan_in = p = 1
    assert cell.U.abs().max() <= bound and cell.b.abs().max() <= bound


@pytest.mark.parametrize(("N", "expected"), [(128, 34_314), (64, 8_970)])
def test_parameter_count_of_the_smnist_model(N, expected):
    # 2N² + (p + 1)N + (N + 1)q with p = 1, q = 10
    model = lr.SequenceClassifier(lr.LipschitzRNN(1, N), num_classes=10)
    assert lr.count_parameters(model) == expected


def test_analysis_properties_are_read_only_and_have_the_documented_shapes():
    cell = lr.LipschitzRNN(3, 7).cells[0]
    assert cell.A.shape == cell.W.shape == (7, 7)
    assert cell.U.shape == (7, 3) and cell.b.shape == (7,)
    assert isinstance(cell.eps, float)
    for name in ("A", "W"):
        with pytest.raises(AttributeError):
            setattr(cell, name, torch.zeros(7, 7))


def test_A_and_W_are_built_once_per_forward_not_per_step(monkeypatch):
    rnn = lr.LipschitzRNN(1, 4, method="rk4", backend="reference")
    calls = {"n": 0}
    original = lr.SymmetricSkew.forward

    def counting(self, M):
        calls["n"] += 1
        return original(self, M)

    monkeypatch.setattr(lr.SymmetricSkew, "forward", counting)
    rnn(torch.randn(50, 2, 1))
    assert calls["n"] == 2  # A and W, once each, for 50 steps of 4 stages


def test_gradients_reach_every_parameter():
    model = lr.SequenceClassifier(lr.LipschitzRNN(2, 6, gated=True), 3)
    model(torch.randn(9, 4, 2)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_relu_nonlinearity():
    rnn = _lipschitz(nonlinearity="relu")
    cell = rnn.cells[0]
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    h = torch.zeros(2, 8, dtype=torch.float64)
    for t in range(5):
        h = h + cell.eps * (h @ cell.A.T + torch.relu(h @ cell.W.T + x[t] @ cell.U.T + cell.b))
    # the fused CPU recurrence is tanh-only: `auto` says so and runs the reference
    with pytest.warns(UserWarning, match="falls back from 'cpu'.*'relu'"):
        _, h_n = rnn(x)
    torch.testing.assert_close(h_n[0], h)


def test_cell_single_step_matches_layer_first_step():
    rnn = _lipschitz(method="midpoint")
    x = torch.randn(1, 4, 3, dtype=torch.float64)
    h0 = torch.randn(1, 4, 8, dtype=torch.float64)
    torch.testing.assert_close(rnn.cells[0](x[0], h0[0]), rnn(x, h0)[0][0])


def test_antisymmetric_matches_hand_written_loop():
    for gated in (False, True):
        rnn = lr.AntisymmetricRNN(3, 8, eps=0.2, gamma=0.1, gated=gated, init_std=4.0, dtype=torch.float64)
        cell = rnn.cells[0]
        torch.testing.assert_close(cell.W, S(cell.M, 1.0, 0.1))
        x = torch.randn(15, 2, 3, dtype=torch.float64)
        gate = {"Ug": cell.U_g, "bg": cell.b_g} if gated else {}
        torch.testing.assert_close(rnn(x)[0], run_asr(x, cell.W, cell.U, cell.b, 0.2, **gate))


def test_antisymmetric_initialisation():
    cell = lr.AntisymmetricRNNCell(4, 400, init_std=2.0)
    assert cell.M.std().item() == pytest.approx(2.0 / 400**0.5, rel=0.02)
    assert cell.U.std().item() == pytest.approx(1.0 / 4**0.5, rel=0.1)
    assert cell.b.abs().max() == 0
