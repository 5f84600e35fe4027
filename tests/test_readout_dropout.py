"""Dropout before the linear readout (``model.readout_dropout``): a regulariser of the readout's
input that leaves the recurrence, evaluation and runs without it exactly as they were."""

import pytest
import torch

import lipschitz_rnn as lr
from lipschitz_rnn.cli import main
from lipschitz_rnn.train import load_checkpoint
from test_train_toytasks import read_jsonl, write_config


def _classifier(dropout: float, readout: str = "all") -> lr.SequenceClassifier:
    torch.manual_seed(0)
    return lr.SequenceClassifier(lr.build_model("lipschitz", 3, 16), 5, readout=readout, dropout=dropout)


def test_training_drops_hidden_values_and_scales_the_rest_before_the_readout():
    model = _classifier(0.5)
    x = torch.randn(7, 4, 3)
    output, _ = model.rnn(x)
    torch.manual_seed(1)
    logits = model(x)
    torch.manual_seed(1)  # the same mask, drawn on the readout's input
    mask = torch.nn.functional.dropout(torch.ones_like(output), 0.5, training=True)
    torch.testing.assert_close(logits, model.D(output * mask))
    assert set(mask.unique().tolist()) == {0.0, 2.0}


@pytest.mark.parametrize("readout", ["last", "all"])
def test_evaluation_and_zero_dropout_are_the_plain_readout(readout):
    x = torch.randn(6, 2, 3)
    plain = _classifier(0.0, readout)
    dropped = _classifier(0.3, readout)  # same seed: the same weights
    dropped.eval()
    torch.testing.assert_close(dropped(x), plain(x))
    # dropout 0 draws no random numbers, so runs without it keep their random stream
    state = torch.get_rng_state()
    plain.train()(x)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("dropout", [-0.1, 1.0, float("nan")])
def test_a_dropout_outside_zero_to_one_is_refused(dropout):
    with pytest.raises(ValueError, match="dropout"):
        _classifier(dropout)


def test_the_config_key_reaches_the_trained_model_and_the_resolved_config(tmp_path):
    out = tmp_path / "run"
    overrides = ["train.epochs=2", "model.readout_dropout=0.25"]
    assert main(["train", str(write_config(tmp_path)), *overrides, "--out", str(out)]) == 0
    assert "readout_dropout = 0.25" in (out / "config.toml").read_text()
    plain = tmp_path / "plain"
    assert main(["train", str(write_config(tmp_path)), "train.epochs=2", "--out", str(plain)]) == 0
    dropped_records, plain_records = read_jsonl(out / "metrics.jsonl"), read_jsonl(plain / "metrics.jsonl")
    assert len(dropped_records) == len(plain_records) == 2
    # same seed, same data order: only the dropped readout inputs make the training differ
    assert dropped_records[0]["train"]["loss"] != plain_records[0]["train"]["loss"]
    # the dropout has no parameters: checkpoints keep the layout of runs without it
    dropped_weights = load_checkpoint(out / "checkpoints" / "last")[0]
    assert dropped_weights.keys() == load_checkpoint(plain / "checkpoints" / "last")[0].keys()
