"""Weight averaging: the run evaluates, reports and saves the exponential moving average of its weights."""

import json

import pytest
import torch

from lipschitz_rnn.cli import main
from lipschitz_rnn.train import evaluate_run, load_checkpoint
from lipschitz_rnn.train.ema import WeightAverage
from test_train_toytasks import read_jsonl, write_config


def test_the_average_follows_the_recurrence_from_the_initial_weights():
    model = torch.nn.Linear(3, 2)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    average = WeightAverage(model, decay=0.9)
    expected = dict(start)
    for k in range(1, 4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(k))
        average.update(model)
        expected = {n: 0.9 * expected[n] + 0.1 * p.detach() for n, p in model.named_parameters()}
    for name, p in average.model.named_parameters():
        torch.testing.assert_close(p, expected[name])
        assert not p.requires_grad  # the average is not trained
    # the trained model itself is untouched by the averaging
    torch.testing.assert_close(model.weight.detach(), start["weight"] + 6.0)


def test_buffers_are_copied_and_the_mode_follows_the_trained_model():
    model = torch.nn.BatchNorm1d(2)
    average = WeightAverage(model, decay=0.5)
    model.running_mean.fill_(3.0)
    model.eval()
    synced = average.synced(model)
    assert torch.equal(synced.running_mean, torch.full((2,), 3.0)) and not synced.training


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1, 1.5])
def test_a_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(torch.nn.Linear(1, 1), decay)


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ema")
    out = directory / "run"
    overrides = ["train.epochs=3", "train.ema_decay=0.9", "train.checkpoint_every_steps=5"]
    assert main(["train", str(write_config(directory)), *overrides, "--out", str(out)]) == 0
    return out


def test_the_checkpoint_weights_are_the_average_and_the_state_holds_the_trained_ones(averaged_run):
    weights, state = load_checkpoint(averaged_run / "checkpoints" / "last")
    trained = state["trained_weights"]
    assert trained.keys() == weights.keys()
    assert any(not torch.equal(weights[n], trained[n]) for n in weights)


@pytest.mark.parametrize("checkpoint", ["best", "last"])
def test_evaluating_a_checkpoint_gives_the_metrics_the_run_recorded(averaged_run, checkpoint):
    history = read_jsonl(averaged_run / "metrics.jsonl")
    summary = json.loads((averaged_run / "summary.json").read_text())
    epoch = summary["best_epoch"] if checkpoint == "best" else len(history)
    for split in ("val", "test"):
        result = evaluate_run(averaged_run, checkpoint, split, device="cpu")
        assert result["accuracy"] == pytest.approx(history[epoch - 1][split]["accuracy"])


def test_without_averaging_the_state_holds_no_second_copy(tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path)), "train.epochs=1", "--out", str(out)]) == 0
    assert load_checkpoint(out / "checkpoints" / "last")[1]["trained_weights"] is None


def test_the_average_differs_from_training_without_it(tmp_path, averaged_run):
    # same seed, same data order: only the evaluated weights differ, so the training loss does not
    out = tmp_path / "plain"
    overrides = ["train.epochs=3", "train.checkpoint_every_steps=5"]
    assert main(["train", str(write_config(tmp_path)), *overrides, "--out", str(out)]) == 0
    plain, averaged = read_jsonl(out / "metrics.jsonl"), read_jsonl(averaged_run / "metrics.jsonl")
    assert [r["train"] for r in plain] == [r["train"] for r in averaged]
    assert [r["val"]["loss"] for r in plain] != [r["val"]["loss"] for r in averaged]


def test_resuming_with_an_average_from_a_checkpoint_without_one_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path)), "train.epochs=1", "--out", str(out)]) == 0
    config = out / "config.toml"  # a hand edit: the checkpoint has no trained weights to continue from
    assert "ema_decay = 0.0\n" in config.read_text()
    config.write_text(config.read_text().replace("ema_decay = 0.0\n", "ema_decay = 0.5\n"))
    assert main(["train", "--resume", str(out), "train.epochs=2"]) != 0
    assert "train.ema_decay is set but the checkpoint holds no trained weights" in capsys.readouterr().err
