"""Hessian analysis against dense Hessians of tiny models (float64, built independently by torch.func)."""

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

import lipschitz_rnn as lr
from lipschitz_rnn.analysis import (
    InputHessian,
    ParameterHessian,
    batch_first_forward,
    condition_number,
    condition_number_from,
    default_loss,
    hessian_density,
    hessian_eigenvalues,
    hessian_extreme_eigenvalues,
    hessian_mode,
    hessian_trace,
    input_hessian_eigenvalues,
    input_hessian_trace,
    lanczos,
    reference_backend,
    ritz_value_resolved,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning"),
    pytest.mark.usefixtures("one_thread"),
]

STEPS, FEATURES, CLASSES = 5, 2, 3


def lipschitz_classifier(batch_first=False, seed=0):
    torch.manual_seed(seed)
    # init_std = 1 so that the recurrent weights matter (N(0, (1/N)^2) entries)
    rnn = lr.build_model("lipschitz", FEATURES, 3, batch_first=batch_first, init_std=1.0, eps=0.3, dtype=torch.float64)
    return lr.SequenceClassifier(rnn, CLASSES).double()


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(STEPS * FEATURES, 4), nn.Tanh(), nn.Linear(4, CLASSES)).double()


def toy_batches(seed=1, sizes=(6, 4)):
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(n, STEPS, FEATURES, generator=generator, dtype=torch.float64),
            torch.randint(0, CLASSES, (n,), generator=generator),
        )
        for n in sizes
    ]


def dense_parameter_hessian(model, batches):
    """∇²_θ Σ_b (n_b / n) CE(f_θ(x_b), y_b), by torch.autograd.functional.hessian on the flat parameters."""
    forward = batch_first_forward(model)
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    total = sum(len(x) for x, _ in batches)

    def loss(theta):
        params = {n: t.view(s) for n, t, s in zip(names, theta.split([s.numel() for s in shapes]), shapes)}
        call = lambda x: functional_call(model, params, (x,))  # noqa: E731
        run = call if forward is model else lambda x: call(x.transpose(0, 1))
        return sum(F.cross_entropy(run(x), y) * len(x) / total for x, y in batches)

    with reference_backend(model):
        return torch.autograd.functional.hessian(loss, flat)


MODELS = {"lipschitz": lipschitz_classifier, "mlp": mlp}


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    model = MODELS[request.param]()
    batches = toy_batches()
    dense = dense_parameter_hessian(model, batches)
    return model, batches, dense, torch.linalg.eigvalsh(dense)


def test_hessian_vector_products_build_the_dense_hessian(case):
    model, batches, dense, _ = case
    built = ParameterHessian(model, batches).dense()
    torch.testing.assert_close(built, dense, rtol=1e-9, atol=1e-12)


def test_the_toy_hessians_are_indefinite(case):
    # so that "smallest" (most negative) differs from "smallest in magnitude"
    _, _, _, eigenvalues = case
    assert eigenvalues[0] < 0 < eigenvalues[-1]
    assert eigenvalues.abs().min() < abs(eigenvalues[0])


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_extreme_eigenvalues_match_the_dense_eigendecomposition(case, k, which):
    model, batches, _, eigenvalues = case
    result = hessian_eigenvalues(model, None, batches, k=k, which=which, tol=1e-9)
    expected = eigenvalues.flip(0)[:k] if which == "largest" else eigenvalues[:k]
    assert result.converged
    assert result.eigenvalues.shape == (k,)
    torch.testing.assert_close(result.eigenvalues, expected, rtol=1e-4, atol=1e-10)


def test_eigenvectors_are_unit_eigenvectors_of_the_hessian(case):
    model, batches, dense, _ = case
    result = hessian_eigenvalues(model, None, batches, k=2, tol=1e-9, return_eigenvectors=True)
    vectors = result.eigenvectors
    torch.testing.assert_close(vectors.T @ vectors, torch.eye(2, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(dense @ vectors, vectors * result.eigenvalues, atol=1e-7, rtol=0)


def test_residuals_bound_the_eigenvalue_errors_before_convergence(case):
    model, batches, _, eigenvalues = case
    result = hessian_eigenvalues(model, None, batches, k=1, max_iter=4, tol=1e-12)
    assert not result.converged and result.iterations == 4
    assert abs(float(result.eigenvalues[0] - eigenvalues[-1])) <= float(result.residuals[0]) + 1e-12


def test_one_lanczos_run_gives_both_ends(case):
    model, batches, _, eigenvalues = case
    largest, smallest = hessian_extreme_eigenvalues(model, None, batches, k=2, tol=1e-9)
    torch.testing.assert_close(largest.eigenvalues, eigenvalues.flip(0)[:2], rtol=1e-4, atol=1e-10)
    torch.testing.assert_close(smallest.eigenvalues, eigenvalues[:2], rtol=1e-4, atol=1e-10)
    assert largest.iterations == smallest.iterations


def test_condition_number_is_the_ratio_of_the_extreme_curvatures(case):
    model, batches, _, eigenvalues = case
    result = condition_number(model, None, batches, tol=1e-9)
    lam_max, lam_min = float(eigenvalues[-1]), float(eigenvalues[0])
    assert result.lambda_max == pytest.approx(lam_max, rel=1e-4)
    assert result.lambda_min == pytest.approx(lam_min, rel=1e-4)
    assert result.value == pytest.approx(max(abs(lam_max), abs(lam_min)) / min(abs(lam_max), abs(lam_min)), rel=1e-3)


def test_condition_number_definition():
    assert condition_number_from(100.0, 2.0) == 50.0  # definite: the textbook lambda_max / lambda_min
    assert condition_number_from(-2.0, -100.0) == 50.0  # negative definite
    assert condition_number_from(10.0, -0.5) == 20.0  # indefinite: dominant over opposite extreme
    assert condition_number_from(0.5, -10.0) == 20.0
    assert condition_number_from(3.0, 0.0) == math.inf


def test_a_ritz_value_is_resolved_only_when_its_residual_is_within_its_size():
    assert ritz_value_resolved(-0.557, 0.0077)  # the Lipschitz sMNIST model's lambda_min
    assert not ritz_value_resolved(0.03, 0.6)  # the plain ASR model's: only an upper bound
    assert ritz_value_resolved(2.0, 2.0)  # the boundary counts as resolved


def test_hutchinson_trace_is_within_three_standard_errors_of_the_exact_trace(case):
    model, batches, dense, _ = case
    result = hessian_trace(model, None, batches, num_probes=100, seed=0)
    exact = float(dense.trace())
    assert result.samples.shape == (100,)
    assert result.estimate == pytest.approx(float(result.samples.mean()))
    assert result.stderr > 0
    assert abs(result.estimate - exact) <= 3 * result.stderr


def test_hutchinson_samples_are_rademacher_quadratic_forms(case):
    # z in {-1, 1}^n  =>  E[z^T H z] = tr H and Var = 2 Σ_{i≠j} H_ij²: the reported SE estimates that.
    model, batches, dense, _ = case
    result = hessian_trace(model, None, batches, num_probes=400, seed=3)
    off_diagonal = dense - torch.diag(dense.diag())
    expected_stderr = math.sqrt(2 * float((off_diagonal**2).sum()) / 400)
    assert result.stderr == pytest.approx(expected_stderr, rel=0.2)


def test_rademacher_probes_give_the_exact_trace_of_a_diagonal_hessian():
    # z_i² = 1 for Rademacher z, so z^T D z = tr D for every probe (Gaussian probes would scatter).
    class Weights(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.linspace(-1.0, 1.0, 7, dtype=torch.float64))

        def forward(self, x):
            return self.w.expand(len(x), -1)

    curvature = torch.arange(1.0, 8.0, dtype=torch.float64)  # loss = Σ c_i w_i² / 2: H = diag(c)
    loss_fn = lambda out, y: (curvature * out[0] ** 2).sum() / 2  # noqa: E731
    batch = (torch.zeros(2, 1, dtype=torch.float64), torch.zeros(2, dtype=torch.long))
    result = hessian_trace(Weights(), loss_fn, batch, num_probes=5)
    torch.testing.assert_close(result.samples, torch.full((5,), 28.0, dtype=torch.float64))
    assert result.estimate == pytest.approx(28.0) and result.stderr == pytest.approx(0.0, abs=1e-12)


def test_trace_standard_error_shrinks_with_more_probes():
    model, batches = mlp(), toy_batches()
    few = hessian_trace(model, None, batches, num_probes=10, seed=0)
    many = hessian_trace(model, None, batches, num_probes=250, seed=0)
    assert many.stderr < few.stderr / 2.5  # ~ 1/sqrt(num_probes): expected ratio 5


def test_trace_is_reproducible_by_seed():
    model, batches = mlp(), toy_batches()
    first = hessian_trace(model, None, batches, num_probes=8, seed=7)
    again = hessian_trace(model, None, batches, num_probes=8, seed=7)
    other = hessian_trace(model, None, batches, num_probes=8, seed=8)
    assert torch.equal(first.samples, again.samples)
    assert not torch.equal(first.samples, other.samples)


def test_slq_density_integrates_to_one_and_its_mean_estimates_trace_over_n(case):
    model, batches, dense, _ = case
    result = hessian_density(model, None, batches, num_runs=40, lanczos_steps=12, seed=0)
    n = dense.shape[0]
    assert result.nodes.shape == result.weights.shape == (40, 12)
    torch.testing.assert_close(result.weights.sum(dim=1), torch.ones(40, dtype=torch.float64))
    assert float(torch.trapezoid(result.density, result.grid)) == pytest.approx(1.0, abs=1e-3)
    assert float(torch.trapezoid(result.grid * result.density, result.grid)) == pytest.approx(result.mean, abs=1e-6)
    # each run's mean is v^T H v for a normalised Rademacher v: unbiased for tr H / n
    per_run = (result.nodes * result.weights).sum(dim=1)
    stderr = float(per_run.std() / math.sqrt(40))
    assert abs(result.mean - float(dense.trace()) / n) <= 3 * stderr


def test_slq_with_full_krylov_space_puts_its_nodes_on_the_eigenvalues(case):
    model, batches, _, eigenvalues = case
    result = hessian_density(model, None, batches, num_runs=1, lanczos_steps=len(eigenvalues), seed=0)
    weighted = result.nodes[result.weights > 1e-10]
    distance = (weighted[:, None] - eigenvalues[None]).abs().min(dim=1).values
    assert float(distance.max()) < 1e-8 * float(eigenvalues.abs().max())


def test_density_on_a_given_grid_and_sigma():
    model, batches = mlp(), toy_batches()
    grid = torch.linspace(-1.0, 1.0, 11)
    result = hessian_density(model, None, batches, num_runs=2, lanczos_steps=5, sigma=0.05, grid=grid)
    assert result.sigma == 0.05
    torch.testing.assert_close(result.grid, grid.double())
    assert result.density.shape == (11,) and bool((result.density >= 0).all())


# --------------------------------------------------------------------------- input Hessian


def dense_input_hessians(model, x, y):
    """Each sample's ∇²_x CE(f(x_i), y_i), by torch.autograd.functional.hessian on the flat sequence."""
    forward = batch_first_forward(model)

    def sample_hessian(xi, yi):
        loss = lambda flat: F.cross_entropy(forward(flat.view(1, STEPS, FEATURES)), yi.view(1))  # noqa: E731
        return torch.autograd.functional.hessian(loss, xi.reshape(-1))

    with reference_backend(model):
        return torch.stack([sample_hessian(xi, yi) for xi, yi in zip(x, y)])


@pytest.fixture(scope="module", params=sorted(MODELS))
def input_case(request):
    model = MODELS[request.param]()
    x, y = toy_batches(seed=5, sizes=(5,))[0]
    dense = dense_input_hessians(model, x, y)
    return model, (x, y), dense, torch.linalg.eigvalsh(dense)


def test_input_hessian_vector_products_are_the_per_sample_hessians(input_case):
    model, batch, dense, _ = input_case
    torch.testing.assert_close(InputHessian(model, batch).dense(), dense, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_input_hessian_extreme_eigenvalues_per_sample(input_case, which):
    model, batch, _, eigenvalues = input_case
    result = input_hessian_eigenvalues(model, None, batch, k=2, which=which, tol=1e-9)
    expected = eigenvalues.flip(1)[:, :2] if which == "largest" else eigenvalues[:, :2]
    assert result.eigenvalues.shape == (5, 2) and result.converged
    torch.testing.assert_close(result.eigenvalues, expected, rtol=1e-4, atol=1e-10)


def test_input_hessian_trace_per_sample(input_case):
    model, batch, dense, _ = input_case
    result = input_hessian_trace(model, None, batch, num_probes=200, seed=0)
    exact = dense.diagonal(dim1=1, dim2=2).sum(dim=1)
    assert result.estimate.shape == result.stderr.shape == (5,)
    assert result.samples.shape == (200, 5)
    assert bool(((result.estimate - exact).abs() <= 3 * result.stderr + 1e-12).all())


# --------------------------------------------------------------------------- modes and layouts


def test_reference_backend_is_set_inside_and_restored_after_even_on_error():
    model = lipschitz_classifier()
    assert model.rnn.backend == "auto"
    with reference_backend(model):
        assert model.rnn.backend == "reference"
    assert model.rnn.backend == "auto"
    with pytest.raises(RuntimeError, match="boom"), reference_backend(model):
        raise RuntimeError("boom")
    assert model.rnn.backend == "auto"


def test_every_hessian_product_runs_on_the_reference_backend_in_eval_mode():
    model = lipschitz_classifier(batch_first=True)
    model.train()
    seen = []

    def forward(x):
        seen.append((model.rnn.backend, model.training, torch.backends.cudnn.enabled))
        return model(x)

    hessian_eigenvalues(model, None, toy_batches(), max_iter=3, forward=forward)
    hessian_trace(model, None, toy_batches(), num_probes=2, forward=forward)
    input_hessian_trace(model, None, toy_batches()[0], num_probes=2, forward=forward)
    assert seen and set(seen) == {("reference", False, False)}
    assert model.rnn.backend == "auto" and model.training and model.rnn.training


def test_dropout_is_off_so_the_hessian_is_deterministic():
    torch.manual_seed(0)
    rnn = lr.build_model("lipschitz", FEATURES, 3, num_layers=2, dropout=0.5, dtype=torch.float64)
    model = lr.SequenceClassifier(rnn, CLASSES).double().train()
    operator = ParameterHessian(model, toy_batches())
    v = torch.randn(operator.dim, dtype=torch.float64)
    assert torch.equal(operator.matvec(v), operator.matvec(v))


def test_time_major_and_batch_first_models_have_the_same_hessian():
    time_major = lipschitz_classifier(batch_first=False)
    batch_first = lipschitz_classifier(batch_first=True)
    batch_first.load_state_dict(time_major.state_dict())
    v = torch.randn(ParameterHessian(time_major, toy_batches()).dim, dtype=torch.float64)
    torch.testing.assert_close(
        ParameterHessian(time_major, toy_batches()).matvec(v), ParameterHessian(batch_first, toy_batches()).matvec(v)
    )


def test_torch_gru_classifier_is_twice_differentiable_in_hessian_mode():
    torch.manual_seed(0)
    model = lr.SequenceClassifier(lr.build_model("gru", FEATURES, 2), CLASSES).double().train()
    batches = toy_batches(sizes=(4,))
    top = hessian_eigenvalues(model, None, batches, tol=1e-9)
    expected = torch.linalg.eigvalsh(dense_parameter_hessian(model, batches))[-1]
    assert float(top.eigenvalues[0]) == pytest.approx(float(expected), rel=1e-4)


def test_per_step_targets_use_batch_first_logits():
    torch.manual_seed(0)
    model = lr.SequenceClassifier(lr.build_model("vanilla", FEATURES, 3), CLASSES, readout="all").double()
    x = torch.randn(4, STEPS, FEATURES, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (4, STEPS))
    with torch.no_grad():
        logits = batch_first_forward(model)(x)
        expected = model(x.transpose(0, 1)).transpose(0, 1)
    assert logits.shape == (4, STEPS, CLASSES)
    torch.testing.assert_close(logits, expected)
    per_token = F.cross_entropy(logits.reshape(-1, CLASSES), y.reshape(-1))
    assert float(default_loss(logits, y)) == pytest.approx(float(per_token))
    assert hessian_eigenvalues(model, None, (x, y), max_iter=5).eigenvalues.shape == (1,)


def test_default_loss_is_mse_for_float_targets():
    out, y = torch.tensor([[1.0], [2.0]]), torch.tensor([0.0, 0.0])
    assert float(default_loss(out, y)) == pytest.approx(2.5)


def test_hessian_mode_restores_per_module_training_flags():
    model = lipschitz_classifier()
    model.train()
    model.D.eval()
    with hessian_mode(model):
        assert not any(module.training for module in model.modules())
    assert model.training and model.rnn.training and not model.D.training


def test_lanczos_finds_repeated_eigenvalues_with_their_multiplicity():
    matrix = torch.diag(torch.tensor([3.0, 3.0, 3.0, 1.0, 0.0, 0.0, -2.0, -2.0], dtype=torch.float64))
    start = torch.ones(1, 8, dtype=torch.float64)  # sees each distinct eigenvalue once
    run = lanczos(lambda v: v @ matrix, start, max_steps=8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(run.ritz()[0][0], torch.linalg.eigvalsh(matrix), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"which": "middle"}, ValueError, "which"),
        ({"k": 0}, ValueError, "k must be"),
        ({"k": 1000}, ValueError, "k must be <="),
        ({"k": 1.5}, TypeError, "k must be an int"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"max_iter": 1, "k": 3}, ValueError, "max_iter"),
    ],
)
def test_bad_eigenvalue_arguments_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        hessian_eigenvalues(mlp(), None, toy_batches(), **kwargs)


def test_bad_data_is_rejected():
    with pytest.raises(ValueError, match="at least one"):
        hessian_trace(mlp(), None, [])
    with pytest.raises(TypeError, match="data must be"):
        hessian_trace(mlp(), None, torch.zeros(3))
    with pytest.raises(ValueError, match="num_probes"):
        hessian_trace(mlp(), None, toy_batches(), num_probes=1)
    with pytest.raises(ValueError, match=r"v must have shape"):
        ParameterHessian(mlp(), toy_batches()).matvec(torch.zeros(3, dtype=torch.float64))
