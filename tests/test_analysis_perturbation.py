"""Robustness curves: noise definitions, exact clean level, exact weight restoration, seeded draws."""

import pytest
import torch
from torch import nn

import lipschitz_rnn as lr
from lipschitz_rnn.analysis import (
    DEFAULT_LEVELS,
    clean_input_range,
    evaluate,
    gaussian_noise,
    parameter_noise,
    perturbation_curve,
    perturbation_curves,
    salt_and_pepper,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::lipschitz_rnn.StepSizeWarning"),
    pytest.mark.usefixtures("one_thread"),
]

STEPS, CLASSES = 12, 4


def classifier(seed=0):
    """An untrained Lipschitz RNN whose predictions depend on inputs in [0, 1] (U x + b = U (x - 1/2))."""
    torch.manual_seed(seed)
    model = lr.SequenceClassifier(lr.build_model("lipschitz", 1, 8, init_std=1.0, eps=0.3), CLASSES)
    with torch.no_grad():
        cell = model.rnn.cells[0]
        cell.b.copy_(-0.5 * cell.U[:, 0])
        model.D.bias.zero_()
    return model


def make_batches(count=3, size=40, seed=1):
    """MNIST-like inputs in [0, 1]; labels from the untrained model itself, so the clean accuracy is 1."""
    generator = torch.Generator().manual_seed(seed)
    xs = [torch.rand(size, STEPS, 1, generator=generator) for _ in range(count)]
    model = classifier()
    with torch.no_grad():
        return [(x, model(x.transpose(0, 1)).argmax(-1)) for x in xs]


@pytest.fixture(scope="module")
def data():
    return make_batches()


def logit_metric(logits, y):
    """A continuous score: any change of the input or the weights changes it."""
    return logits[:, 0].double()


def test_default_grids_start_clean_and_increase():
    assert set(DEFAULT_LEVELS) == {"gaussian", "salt_pepper", "parameter"}
    for levels in DEFAULT_LEVELS.values():
        assert levels[0] == 0.0 and list(levels) == sorted(set(levels)) and len(levels) >= 5
    assert max(DEFAULT_LEVELS["salt_pepper"]) <= 1


def test_evaluate_accuracy_counts_correct_argmax_predictions():
    weight = torch.eye(3)

    class Pick(nn.Module):  # logits = the last step's features; no batch_first attribute: x as given
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(weight.clone())

        def forward(self, x):
            return x[:, -1] @ self.w

    x = torch.zeros(4, 2, 3)
    x[torch.arange(4), -1, torch.tensor([0, 1, 2, 2])] = 1.0
    y = torch.tensor([0, 1, 0, 2])
    assert evaluate(Pick(), (x, y)) == 0.75


def test_clean_accuracy_of_the_toy_data_is_one_and_labels_vary(data):
    assert evaluate(classifier(), data) == 1.0
    assert len(torch.cat([y for _, y in data]).unique()) == CLASSES


@pytest.mark.parametrize("kind", ["gaussian", "salt_pepper", "parameter"])
def test_level_zero_gives_the_clean_score_exactly(kind, data):
    model = classifier()
    clean = evaluate(model, data, metric=logit_metric)
    curve = perturbation_curve(model, data, kind, [0.0, 0.3], draws=3, metric=logit_metric)
    assert curve.clean == clean
    assert curve.draws[0] == [clean] * 3 and curve.mean[0] == clean and curve.std[0] == 0.0
    assert all(value != clean for value in curve.draws[1])  # and noise does change it


@pytest.mark.parametrize("kind", ["gaussian", "salt_pepper", "parameter"])
def test_draws_are_reproducible_by_seed(kind, data):
    model = classifier()
    first = perturbation_curve(model, data, kind, [0.1, 0.2], draws=2, seed=3, metric=logit_metric)
    again = perturbation_curve(model, data, kind, [0.1, 0.2], draws=2, seed=3, metric=logit_metric)
    other = perturbation_curve(model, data, kind, [0.1, 0.2], draws=2, seed=4, metric=logit_metric)
    assert first.draws == again.draws
    assert first.draws != other.draws
    assert first.draws[0][0] != first.draws[0][1]  # draws differ from each other


def test_accuracy_degrades_with_the_noise_level(data):
    curves = perturbation_curves(classifier(), data, draws=2, seed=0)
    for kind, curve in curves.items():
        assert curve.mean[0] == 1.0, kind
        assert curve.mean[-1] < 1.0, kind
        assert curve.levels == list(DEFAULT_LEVELS[kind])
        assert len(curve.draws) == len(curve.levels) and all(len(row) == 2 for row in curve.draws)


def test_weights_are_restored_bit_exactly_after_parameter_noise(data):
    model = classifier()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    perturbation_curve(model, data, "parameter", [0.05, 0.5], draws=2)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_weights_are_restored_after_an_error_inside_parameter_noise():
    model = classifier()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"), parameter_noise(model, 0.5, torch.Generator().manual_seed(0)):
        assert not torch.equal(model.D.weight, before["D.weight"])
        raise RuntimeError("boom")
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())


def test_parameter_noise_is_relative_to_each_weight():
    weight = torch.linspace(-2.0, 2.0, 20001)
    weight[::100] = 0.0
    layer = nn.Linear(20001, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    with parameter_noise(layer, 0.1, torch.Generator().manual_seed(0)):
        noisy = layer.weight.detach()[0].clone()
    zero = weight == 0
    assert bool(zero.any()) and bool((noisy[zero] == 0).all())  # zero weights stay zero
    relative = (noisy[~zero] - weight[~zero]) / weight[~zero].abs()
    assert float(relative.std()) == pytest.approx(0.1, rel=0.03)
    assert abs(float(relative.mean())) < 0.003


def test_gaussian_noise_is_white_with_the_given_std():
    x = torch.full((200, 100, 1), 0.5)
    noisy = gaussian_noise(x, 0.2, torch.Generator().manual_seed(0))
    noise = noisy - x
    assert float(noise.std()) == pytest.approx(0.2, rel=0.02)
    assert abs(float(noise.mean())) < 4 * 0.2 / 20000**0.5
    lag_one = torch.corrcoef(torch.stack([noise[:, :-1].reshape(-1), noise[:, 1:].reshape(-1)]))[0, 1]
    assert abs(float(lag_one)) < 0.03  # independent across time steps
    assert torch.equal(noisy, gaussian_noise(x, 0.2, torch.Generator().manual_seed(0)))


def test_salt_and_pepper_sets_a_fraction_of_entries_to_the_range_ends():
    x = torch.full((200, 100, 1), 0.5)
    noisy = salt_and_pepper(x, 0.1, 0.0, 1.0, torch.Generator().manual_seed(0))
    changed = noisy != x
    assert float(changed.double().mean()) == pytest.approx(0.1, rel=0.05)
    assert set(noisy[changed].unique().tolist()) == {0.0, 1.0}
    assert float((noisy[changed] == 1.0).double().mean()) == pytest.approx(0.5, abs=0.03)


def test_salt_and_pepper_uses_the_clean_input_range(data):
    assert clean_input_range(data) == (
        min(float(x.min()) for x, _ in data),
        max(float(x.max()) for x, _ in data),
    )
    low, high = 0.25, 0.75  # force a visible range: every replaced entry takes one of these values
    seen = []

    def recording_metric(logits, y):
        return logits[:, 0].double()

    class Spy(nn.Module):
        batch_first = True

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1, CLASSES))

        def forward(self, x):
            seen.append(x.clone())
            return x[:, -1] @ self.w

    perturbation_curve(Spy(), data, "salt_pepper", [0.5], draws=1, input_range=(low, high), metric=recording_metric)
    noisy = seen[-len(data) :]
    for (x, _), x_noisy in zip(data, noisy):
        replaced = x_noisy != x
        assert bool(replaced.any())
        assert set(x_noisy[replaced].unique().tolist()) <= {low, high}


def test_evaluate_leaves_backend_and_training_mode_alone(data):
    model = classifier().train()
    evaluate(model, data)
    assert model.training and model.rnn.backend == "auto"


def test_a_one_shot_iterator_is_replayed_for_every_draw(data):
    model = classifier()
    curve = perturbation_curve(model, iter(data), "gaussian", [0.0, 0.1], draws=2)
    assert curve.clean == 1.0 and curve.mean[0] == 1.0


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("speckle",), {}, ValueError, "kind must be"),
        (("salt_pepper", [1.5]), {}, ValueError, "probabilities"),
        (("gaussian", [-0.1]), {}, ValueError, "levels"),
        (("gaussian", []), {}, ValueError, "at least one"),
        (("gaussian",), {"draws": 0}, ValueError, "draws"),
        (("gaussian",), {"metric": "f1"}, ValueError, "metric"),
    ],
)
def test_bad_arguments_are_rejected(args, kwargs, error, match, data):
    with pytest.raises(error, match=match):
        perturbation_curve(classifier(), data, *args, **kwargs)


def test_unknown_kinds_in_levels_are_rejected(data):
    with pytest.raises(ValueError, match="unknown kinds"):
        perturbation_curves(classifier(), data, levels={"speckle": [0.1]})
