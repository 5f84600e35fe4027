"""How the input maps and the readout are drawn (``model.linear_init``): PyTorch's ``nn.Linear``
default, or Xavier-normal weights with zero biases as an early version of the reference code did.
The recurrent matrices are never touched."""

import math

import pytest
import torch

import lipschitz_rnn as lr
from lipschitz_rnn.data import build_task
from lipschitz_rnn.train.config import load_config
from lipschitz_rnn.train.loop import build_model_for_task
from test_train_toytasks import write_config


def _classifier(input_size: int = 1, hidden_size: int = 128, **options) -> lr.SequenceClassifier:
    torch.manual_seed(0)
    return lr.SequenceClassifier(lr.build_model("lipschitz", input_size, hidden_size, **options), 10)


def test_xavier_normal_draws_the_input_map_and_readout_with_xavier_std_and_zero_biases():
    model = lr.init_linear_maps_(_classifier(input_size=64, hidden_size=512), "xavier_normal")
    cell = model.rnn.cells[0]
    for weight, fan_in, fan_out in ((cell.U, 64, 512), (model.D.weight, 512, 10)):
        expected = math.sqrt(2.0 / (fan_in + fan_out))
        assert weight.std().item() == pytest.approx(expected, rel=0.1)
        assert weight.mean().abs().item() < 0.1 * expected
    assert torch.count_nonzero(cell.b) == 0 and torch.count_nonzero(model.D.bias) == 0


def test_the_recurrent_matrices_and_a_gate_keep_their_draws():
    plain, redrawn = _classifier(gated=True), lr.init_linear_maps_(_classifier(gated=True), "xavier_normal")
    for name in ("M_A", "M_W", "U_g", "b_g"):
        assert torch.equal(getattr(plain.rnn.cells[0], name), getattr(redrawn.rnn.cells[0], name)), name
    assert not torch.equal(plain.rnn.cells[0].U, redrawn.rnn.cells[0].U)


def test_default_leaves_the_model_and_the_random_stream_as_they_were():
    model = _classifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    assert lr.init_linear_maps_(model, "default") is model
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="linear init must be one of"):
        lr.init_linear_maps_(_classifier(), "orthogonal")


def test_the_config_key_reaches_the_built_model(tmp_path):
    cfg = load_config(write_config(tmp_path), ["model.linear_init=xavier_normal"])
    task = build_task(cfg.task.name, **cfg.task.options)
    model = build_model_for_task(cfg, task)
    assert torch.count_nonzero(model.D.bias) == 0 and torch.count_nonzero(model.rnn.cells[0].b) == 0
    default = build_model_for_task(load_config(write_config(tmp_path)), task)
    assert torch.count_nonzero(default.D.bias) > 0
