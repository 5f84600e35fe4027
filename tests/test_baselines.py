"""Baselines: orthogonality of the orthogonal RNNs, coRNN's IMEX step, registry plumbing."""

import pytest
import torch

import lipschitz_rnn as lr
from equations import run_cornn
from lipschitz_rnn.registry import Registry


@pytest.mark.parametrize("name", ["cayley", "exprnn"])
def test_orthogonal_rnns_keep_W_orthogonal_through_training(name):
    rnn = lr.build_model(name, 2, 8, dtype=torch.float64)
    opt = torch.optim.SGD(rnn.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        rnn(torch.randn(5, 3, 2, dtype=torch.float64))[0].pow(2).sum().backward()
        opt.step()
    W = rnn.cells[0].W
    torch.testing.assert_close(W.T @ W, torch.eye(8, dtype=torch.float64))


def test_cayley_signs_and_modrelu():
    cell = lr.CayleyRNNCell(2, 6, num_negative=2, nonlinearity="modrelu", dtype=torch.float64)
    assert torch.det(cell.W).item() == pytest.approx(1.0)  # two reflections
    h = cell(torch.randn(4, 2, dtype=torch.float64))
    z = cell.project_input(torch.zeros(1, 2, dtype=torch.float64))
    assert h.shape == (4, 6) and z.shape == (1, 6)
    with pytest.raises(ValueError, match="num_negative must be <= hidden_size"):
        lr.CayleyRNNCell(2, 6, num_negative=7)


def test_cornn_matches_the_imex_scheme():
    rnn = lr.CoRNN(3, 5, eps=0.05, gamma=1.5, damping=2.0, dtype=torch.float64)
    cell = rnn.cells[0]
    x = torch.randn(12, 2, 3, dtype=torch.float64)
    ys, zs = run_cornn(x, cell.W, cell.W_z, cell.U, cell.b, 0.05, 1.5, 2.0)
    out, h_n = rnn(x)
    torch.testing.assert_close(out, ys)
    torch.testing.assert_close(h_n[0], torch.cat([ys[-1], zs[-1]], -1))
    assert rnn.state_size == 10


def test_residual_rnn_is_euler_on_tanh_field():
    rnn = lr.ResidualRNN(2, 4, eps=0.1, dtype=torch.float64)
    c = rnn.cells[0]
    x = torch.randn(6, 1, 2, dtype=torch.float64)
    h = torch.zeros(1, 4, dtype=torch.float64)
    for t in range(6):
        h = h + 0.1 * torch.tanh(h @ c.W.T + x[t] @ c.U.T + c.b)
    torch.testing.assert_close(rnn(x)[1][0], h)


def test_registry_names_aliases_and_errors():
    reg = Registry("widget")
    reg.add("alpha", 1, "a")
    assert reg.get("A") == 1 and reg.canonical("a") == "alpha" and "alpha" in reg and reg.names() == ["alpha"]
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.add("a", 2)
    with pytest.raises(ValueError, match="unknown widget 'beta'; expected one of: alpha"):
        reg.get("beta")
    assert lr.MODELS.get("rk2") if "rk2" in lr.MODELS else True
    assert lr.get_method("RK2").name == "midpoint"
    assert {"lipschitz", "antisymmetric", "lstm", "gru", "cornn", "cayley", "exprnn", "vanilla", "residual"} <= set(
        lr.model_names()
    )


def test_parametrizations_work_with_torch_parametrize():
    from torch.nn.utils import parametrize

    layer = torch.nn.Linear(5, 5, bias=False).double()
    parametrize.register_parametrization(layer, "weight", lr.SymmetricSkew(beta=1.0, gamma=0.25))
    eig = torch.linalg.eigvals(layer.weight)
    torch.testing.assert_close(eig.real, torch.full((5,), -0.25, dtype=torch.float64))
