"""The stability report: each certificate against its definition (REFERENCE.md §2)."""

import json

import pytest
import torch

import lipschitz_rnn as lr
from lipschitz_rnn.stability import certified_cells, spectral_numbers, stability_report, step_amplifications

pytestmark = pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning")


def test_reference_example_values_of_the_stability_functions():
    z = 0.03 * complex(-0.001, 1.0)
    assert abs(lr.get_method("euler").stability_function(z)).item() == pytest.approx(1.00042, abs=1e-5)
    assert abs(lr.get_method("rk2").stability_function(z)).item() == pytest.approx(0.99997, abs=1e-5)
    assert lr.get_method("rk4").stability_coefficients == pytest.approx((1, 1, 1 / 2, 1 / 6, 1 / 24))
    assert lr.get_method("heun").stability_coefficients == lr.get_method("midpoint").stability_coefficients


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4"])
def test_stability_function_is_the_methods_exact_linear_step(method):
    # For f(h) = lambda h, one step multiplies h by R(eps * lambda).
    lam = torch.tensor([[-0.7, 2.0], [-2.0, -0.7]], dtype=torch.float64)  # eigenvalues -0.7 ± 2i
    rk = lr.get_method(method)
    h = torch.tensor([1.0, 0.0], dtype=torch.float64)
    h1 = rk.step(lambda y: y @ lam.T, h, 0.3)
    R = rk.stability_function(0.3 * complex(-0.7, 2.0)).item()
    expected = torch.tensor([R.real, -R.imag], dtype=torch.float64)  # rotation-scaling acting on e1
    torch.testing.assert_close(h1, expected)


def test_published_defaults_fail_C1_at_initialisation():
    torch.manual_seed(0)
    report = stability_report(lr.LipschitzRNNCell(1, 128))  # N=128, init_std=0.1, beta=0.75, gamma=0.001
    assert not report.c1["holds"]
    assert -0.04 < report.c1["margin"] < -0.01  # REFERENCE.md: about -0.025


def test_report_numbers_match_their_definitions():
    cell = lr.LipschitzRNNCell(1, 12, init_std=3.0, beta=0.6, gamma=0.2, alpha=0.5, eps=0.1, method="heun")
    r = stability_report(cell, num_diagonal_samples=8)
    A = (0.5 * cell.A).detach().double()
    W = cell.W.detach().double()
    assert r.alpha == 0.5 and r.method == "heun" and r.eps == 0.1
    assert r.spectral_abscissa_A == pytest.approx(torch.linalg.eigvals(A).real.max().item())
    assert r.lambda_max_A_sym == pytest.approx(torch.linalg.eigvalsh((A + A.T) / 2).max().item())
    assert r.norm_W == pytest.approx(torch.linalg.svdvals(W).max().item())
    assert r.c1["margin"] == pytest.approx(-r.lambda_max_A_sym - r.norm_W)
    R = lr.get_method("heun").stability_function(0.1 * torch.linalg.eigvals(A + W)).abs().max().item()
    assert r.discrete["D=LI"]["max_abs_R"] == pytest.approx(R)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_bendixson_box_formula_and_containment(beta):
    cell = lr.LipschitzRNNCell(1, 20, init_std=5.0, beta=beta, gamma=0.3, dtype=torch.float64)
    r = stability_report(cell)
    M = cell.M_A.detach().double()
    sym = torch.linalg.eigvalsh(M + M.T)
    box = r.bendixson["A"]
    assert box["re_min"] == pytest.approx((1 - beta) * sym.min().item() - 0.3)
    assert box["re_max"] == pytest.approx((1 - beta) * sym.max().item() - 0.3)
    assert box["im_max"] == pytest.approx(beta * torch.linalg.matrix_norm(M - M.T, ord=2).item(), abs=1e-12)
    assert box["contains_spectrum"] and r.bendixson["W"]["contains_spectrum"]


def test_euler_contraction_bound_dominates_the_true_step_norm():
    cell = lr.LipschitzRNNCell(1, 16, init_std=2.0, beta=0.8, gamma=0.5, eps=0.2)
    r = stability_report(cell)
    A, W = cell.A.detach().double(), cell.W.detach().double()
    I = torch.eye(16, dtype=torch.float64)
    for _ in range(50):
        D = torch.diag(torch.rand(16, dtype=torch.float64))
        assert torch.linalg.matrix_norm(I + 0.2 * A + 0.2 * D @ W, ord=2) <= r.euler_contraction["bound"] + 1e-12


def test_a_strongly_dissipative_unit_is_certified():
    # A = skew - 2I (strongly dissipative), W small: margin = 2 - ||W|| > 1
    cell = lr.LipschitzRNNCell(1, 16, beta=1.0, gamma_A=2.0, gamma_W=0.0, init_std=0.5, eps=0.05)
    r = stability_report(cell)
    assert r.c1["holds"] and r.c1["margin"] > 1.0
    assert r.discrete["stable"] and r.euler_contraction["contracts"]


def test_kyp_condition_on_matrices_with_symmetric_W():
    torch.manual_seed(1)
    Q = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))[0]
    W = -Q @ torch.diag(torch.linspace(0.5, 2.0, 6, dtype=torch.float64)) @ Q.T  # symmetric, W < 0
    A = -2.0 * torch.eye(6, dtype=torch.float64)
    r = stability_report(A, W, eps=0.1)
    assert r.c2["applies"] and r.c2["holds"]
    assert r.c2["lambda_min_AtW_plus_WtA"] == pytest.approx(2 * 2 * 0.5)
    r_bad = stability_report(-A, W, eps=0.1)  # A_sym positive: premise fails
    assert r_bad.c2["applies"] and not r_bad.c2["holds"]
    r_skew = stability_report(A, W + torch.triu(torch.ones(6, 6, dtype=torch.float64), 1))
    assert not r_skew.c2["applies"] and "not symmetric" in r_skew.c2["reason"]


def test_antisymmetric_cell_report_has_zero_linear_part():
    r = stability_report(lr.AntisymmetricRNNCell(1, 10, gamma=0.1))
    assert r.alpha == 0.0 and r.norm_A == 0.0
    assert r.spectral_abscissa_W == pytest.approx(-0.1)


def _move_away_from_initialisation(cell: torch.nn.Module) -> torch.nn.Module:
    """The cell with N(0, 1) added to every parameter (seed 0): at initialisation A and W are nearly diagonal."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return cell


@pytest.mark.parametrize(
    "cell",
    [
        lr.LipschitzRNNCell(2, 12, method="euler", eps=0.3, beta=0.75, gamma=1.0),
        lr.LipschitzRNNCell(2, 12, method="midpoint", gated=True),
        lr.LipschitzRNNCell(2, 12, method="exp_euler", eps=0.3, beta=0.75, gamma=1.0),
        lr.AntisymmetricRNNCell(2, 12, gamma=0.1, gated=True),
    ],
    ids=["euler", "midpoint-gated", "exp_euler", "antisymmetric-gated"],
)
def test_per_epoch_numbers_are_the_full_reports(cell):
    _move_away_from_initialisation(cell)
    report = stability_report(cell)
    expected = {
        "max_re_eig_A": report.spectral_abscissa_A,
        "max_re_eig_W": report.spectral_abscissa_W,
        "lambda_max_A_sym": report.lambda_max_A_sym,
        "norm_A": report.norm_A,
        "norm_W": report.norm_W,
        "c1_margin": report.c1["margin"],
        "max_abs_R_eps_lambda_D0": report.discrete["D=0"]["max_abs_R"],
    }
    assert spectral_numbers(cell) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_certified_cells_are_the_lipschitz_and_antisymmetric_layers():
    layer = lr.LipschitzRNN(1, 4, num_layers=2)
    assert list(certified_cells(layer)) == ["layer0", "layer1"]
    assert certified_cells(layer)["layer1"] is layer.cells[1]
    assert certified_cells(lr.AntisymmetricRNN(1, 4))["layer0"] is not None
    assert certified_cells(torch.nn.LSTM(1, 4)) == {}


def test_report_is_json_and_readable_text():
    r = stability_report(lr.LipschitzRNNCell(2, 8, method="rk4"))
    data = json.loads(r.to_json(include_eigenvalues=True))
    assert data["method"] == "rk4" and len(data["eigenvalues"]["A"]) == 8
    text = str(r)
    for needle in ("spectral abscissa", "C1 contraction margin", "Bendixson box A", "max|R(eps*lambda)|", "Euler"):
        assert needle in text


def test_bad_arguments():
    with pytest.raises(TypeError, match="LipschitzRNNCell, an AntisymmetricRNNCell or matrices"):
        stability_report(lr.VanillaRNNCell(1, 3))
    with pytest.raises(TypeError, match="not a whole layer"):
        stability_report(lr.LipschitzRNN(1, 3))
    with pytest.raises(ValueError, match="square and of one shape"):
        stability_report(torch.zeros(3, 3), torch.zeros(4, 4))


A_STABLE, W_SMALL = -torch.eye(4, dtype=torch.float64), 0.1 * torch.eye(4, dtype=torch.float64)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        # a negative L raised the C1 margin (here to +1.1 from the true 0.9): a certificate must not pass on it
        ({"lipschitz_constant": -1.0}, ValueError, "lipschitz_constant must be >= 0"),
        ({"lipschitz_constant": float("nan")}, ValueError, "lipschitz_constant must be finite"),
        ({"eps": float("inf")}, ValueError, "eps must be finite"),
        ({"eps": 0.0}, ValueError, "eps must be > 0"),
    ],
)
def test_report_arguments_are_checked(kwargs, error, match):
    with pytest.raises(error, match=match):
        stability_report(A_STABLE, W_SMALL, **kwargs)


def test_a_tensor_eps_gives_a_plain_json_report():
    report = stability_report(A_STABLE, W_SMALL, eps=torch.tensor(0.1))
    assert json.loads(report.to_json())["eps"] == pytest.approx(0.1)


@pytest.mark.parametrize("which", ["A", "W"])
def test_non_finite_or_complex_matrices_are_named(which):
    bad = {"A": A_STABLE.clone(), "W": W_SMALL.clone()}
    bad[which][0, 1] = float("nan")
    with pytest.raises(ValueError, match=f"{which} contains NaN or Inf"):
        stability_report(bad["A"], bad["W"], eps=0.1)
    cell = lr.LipschitzRNNCell(1, 4)
    with torch.no_grad():
        getattr(cell, f"M_{which}")[0, 0] = float("inf")
    with pytest.raises(ValueError, match=f"{which} contains NaN or Inf"):
        spectral_numbers(cell)
    complex_pair = {"A": A_STABLE, "W": W_SMALL, which: bad[which].nan_to_num().to(torch.complex128)}
    with pytest.raises(TypeError, match=f"{which} must be real"):
        stability_report(complex_pair["A"], complex_pair["W"], eps=0.1)


def test_eigenvalue_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    r = stability_report(lr.LipschitzRNNCell(1, 16, method="midpoint"))
    path = tmp_path / "eig.png"
    fig = r.plot(path=path)
    assert path.stat().st_size > 10_000
    assert len(fig.axes) == 2


@pytest.mark.parametrize(("method", "gated"), [("euler", False), ("midpoint", True), ("exp_euler", False)])
def test_step_amplifications_are_each_rules_report(method, gated):
    cell = _move_away_from_initialisation(
        lr.LipschitzRNNCell(2, 12, method=method, eps=0.3, beta=0.75, gamma=1.0, gated=gated)
    )
    rules = step_amplifications(cell)
    assert sorted(rules) == sorted(lr.METHODS)
    for rule, numbers in rules.items():  # the oracle: a whole report with the method overridden
        discrete = stability_report(cell, method=rule, num_diagonal_samples=0).discrete
        assert numbers == {"D=0": discrete["D=0"]["max_abs_R"], "D=LI": discrete["D=LI"]["max_abs_R"]}
    assert list(step_amplifications(cell, ["rk4", "exp_euler"])) == ["rk4", "exp_euler"]
    antisymmetric = lr.AntisymmetricRNNCell(2, 12, gamma=0.1, eps=0.2)
    assert step_amplifications(antisymmetric, ["euler"])["euler"]["D=0"] == pytest.approx(1.0, abs=1e-12)  # A = 0
