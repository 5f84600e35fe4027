"""Free-parameter counts: what a parametrisation keeps of M, and the papers' parameter counts.

The AntisymmetricRNN and expRNN papers count M − Mᵀ as N(N − 1)/2 parameters; torch counts
the N² entries of M. ``count_parameters(model, free=True)`` counts the former way.
"""

import pytest
import torch

import lipschitz_rnn as lr


@pytest.mark.parametrize(
    "parametrization",
    [
        lr.SymmetricSkew(beta=0.75, gamma=0.001),
        lr.SymmetricSkew(beta=0.5, gamma=0.0),
        lr.SymmetricSkew(beta=1.0, gamma=0.1),
        lr.SymmetricSkew(beta=0.0, gamma=0.1),
        lr.CayleyOrthogonal(6, num_negative=2),
        lr.ExpOrthogonal(),
    ],
    ids=["beta0.75", "beta0.5", "beta1", "beta0", "cayley", "exp"],
)
def test_free_parameters_is_the_rank_of_the_parametrisations_jacobian(parametrization):
    n = 6
    M = 0.3 * torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    jacobian = torch.autograd.functional.jacobian(parametrization, M).reshape(n * n, n * n)
    assert torch.linalg.matrix_rank(jacobian).item() == parametrization.free_parameters(n)


@pytest.mark.parametrize(
    ("model", "p", "N", "kwargs", "torch_count", "free_count", "paper"),
    [
        # [ASR] MNIST rows: "10k" at N = 128, plain and gated
        ("antisymmetric", 1, 128, {}, 17_930, 9_674, 10_000),
        ("antisymmetric", 1, 128, {"gated": True}, 18_186, 9_930, 10_000),
        # [ASR] CIFAR-10 rows (3 inputs per step): "36k" plain and "37k" gated at N = 256
        ("antisymmetric", 3, 256, {}, 69_130, 36_234, 36_000),
        ("antisymmetric", 3, 256, {"gated": True}, 70_154, 37_258, 37_000),
        # the Lipschitz RNN's A and W keep all N² entries (0 < β < 1): "34k" either way
        ("lipschitz", 1, 128, {}, 34_314, 34_314, 34_000),
        # expRNN with modReLU, N = 360: "69k"
        ("exprnn", 1, 360, {"nonlinearity": "modrelu"}, 134_290, 69_310, 69_000),
    ],
)
def test_free_counts_give_the_papers_parameter_counts(model, p, N, kwargs, torch_count, free_count, paper):
    classifier = lr.SequenceClassifier(lr.build_model(model, p, N, **kwargs), num_classes=10)
    assert lr.count_parameters(classifier) == torch_count
    assert lr.count_parameters(classifier, free=True) == free_count
    assert round(free_count, -3) == paper


def test_free_counts_follow_separate_betas_and_frozen_matrices():
    N = 16
    cell = lr.LipschitzRNNCell(1, N, beta_A=1.0, beta_W=0.75)  # A skew − γI: only N(N − 1)/2 of M_A counts
    assert lr.count_parameters(cell) - lr.count_parameters(cell, free=True) == N * N - N * (N - 1) // 2
    cell.M_A.requires_grad_(False)  # a frozen matrix is not counted at all
    assert lr.count_parameters(cell, free=True) == lr.count_parameters(cell)
    plain = torch.nn.LSTM(1, N)  # modules without parametrised matrices count as torch does
    assert lr.count_parameters(plain, free=True) == lr.count_parameters(plain)
