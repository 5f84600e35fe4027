"""Weights saved by the authors' reference code (row convention) import to identical outputs."""

import pytest
import torch

import lipschitz_rnn as lr
from equations import reference_code_forward


def _reference_state_dict(n=16, p=1, q=10, std=0.5):
    return {
        "B": torch.randn(n, n, dtype=torch.float64) * std,
        "C": torch.randn(n, n, dtype=torch.float64) * std,
        "E.weight": torch.randn(n, p, dtype=torch.float64),
        "E.bias": torch.randn(n, dtype=torch.float64),
        "D.weight": torch.randn(q, n, dtype=torch.float64),
        "D.bias": torch.randn(q, dtype=torch.float64),
    }


@pytest.mark.parametrize("solver", ["euler", "midpoint"])
def test_imported_model_reproduces_the_reference_forward(solver):
    sd = _reference_state_dict()
    x = torch.rand(4, 60, 1, dtype=torch.float64)  # the reference feeds batch-first sequences
    expected = reference_code_forward(sd, x, eps=0.03, beta=0.75, gamma=0.001, solver=solver)
    model = lr.from_reference_state_dict(sd, eps=0.03, beta=0.75, gamma=0.001, method=solver)
    torch.testing.assert_close(model(x.transpose(0, 1)), expected)
    # the transposition matters: the row-convention A is our A transposed
    torch.testing.assert_close(
        model.rnn.cells[0].A.T,
        0.75 * (sd["B"] - sd["B"].T) + 0.25 * (sd["B"] + sd["B"].T) - 0.001 * torch.eye(16, dtype=torch.float64),
    )


def test_module_prefix_and_safe_file_loading(tmp_path):
    sd = {f"module.{k}": v for k, v in _reference_state_dict().items()}
    path = tmp_path / "ref.pt"
    torch.save(sd, path)
    model = lr.load_reference_checkpoint(path, eps=0.03)
    assert model.rnn.cells[0].M_A.shape == (16, 16)


def test_pickled_objects_are_refused_without_running_them(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole pickled module, as the reference driver saves
    with pytest.raises(ValueError, match="not a plain state dict"):
        lr.load_reference_checkpoint(path, eps=0.03)


def test_missing_keys_are_named():
    sd = _reference_state_dict()
    del sd["C"]
    with pytest.raises(ValueError, match=r"missing the reference keys \['C'\]"):
        lr.from_reference_state_dict(sd, eps=0.03)


@pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning")
def test_antisymmetric_reference_model():
    n, gamma, eps = 8, 0.01, 0.1
    Wt = torch.randn(n, n, dtype=torch.float64)
    sd = {
        "W.weight": Wt,
        "E.weight": torch.randn(n, 2, dtype=torch.float64),
        "E.bias": torch.randn(n, dtype=torch.float64),
        "D.weight": torch.randn(3, n, dtype=torch.float64),
        "D.bias": torch.randn(3, dtype=torch.float64),
    }
    x = torch.randn(2, 10, 2, dtype=torch.float64)
    W = Wt - Wt.T - gamma * torch.eye(n, dtype=torch.float64)
    h = torch.zeros(2, n, dtype=torch.float64)
    for i in range(10):
        h = h + eps * torch.tanh(h @ W + x[:, i] @ sd["E.weight"].T + sd["E.bias"])
    expected = h @ sd["D.weight"].T + sd["D.bias"]
    model = lr.from_reference_state_dict(sd, eps=eps, gamma=gamma, model="asymRNN")
    torch.testing.assert_close(model(x.transpose(0, 1)), expected)
