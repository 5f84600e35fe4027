"""Dropout outside the recurrence: before the linear readout (``model.readout_dropout``) and on the
RNN's inputs (``model.input_dropout``). Regularisers that leave the recurrence, evaluation and runs
without them exactly as they were."""

import pytest
import torch

import lipschitz_rnn as lr
from lipschitz_rnn.cli import main
from lipschitz_rnn.train import load_checkpoint
from test_train_toytasks import read_jsonl, write_config

KINDS = {"readout": "dropout", "input": "input_dropout"}  # which dropout: SequenceClassifier's argument


def _classifier(rate: float, readout: str = "all", kind: str = "readout") -> lr.SequenceClassifier:
    torch.manual_seed(0)
    rnn = lr.build_model("lipschitz", 3, 16)
    return lr.SequenceClassifier(rnn, 5, readout=readout, **{KINDS[kind]: rate})


def _mask(like: torch.Tensor, rate: float, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.nn.functional.dropout(torch.ones_like(like), rate, training=True)


def test_training_drops_hidden_values_and_scales_the_rest_before_the_readout():
    model = _classifier(0.5)
    x = torch.randn(7, 4, 3)
    output, _ = model.rnn(x)
    torch.manual_seed(1)
    logits = model(x)
    mask = _mask(output, 0.5, seed=1)  # the same mask, drawn on the readout's input
    torch.testing.assert_close(logits, model.D(output * mask))
    assert set(mask.unique().tolist()) == {0.0, 2.0}


def test_training_drops_input_values_and_scales_the_rest_before_the_recurrence():
    model = _classifier(0.25, kind="input")
    x = torch.nn.functional.one_hot(torch.randint(0, 3, (7, 4)), 3).float()  # tokens, as char-level PTB's
    torch.manual_seed(1)
    logits = model(x)
    mask = _mask(x, 0.25, seed=1)  # the same mask, drawn on the RNN's input
    torch.testing.assert_close(logits, model.D(model.rnn(x * mask)[0]))
    kept = (x * mask).sum(-1)  # one-hot: each step's token is dropped whole or kept at 1 / (1 - p)
    assert torch.isclose(kept, torch.tensor(0.0)).logical_or(torch.isclose(kept, torch.tensor(4 / 3))).all()
    assert (kept == 0).any() and (kept > 0).any()


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("readout", ["last", "all"])
def test_evaluation_and_zero_dropout_are_the_plain_model(readout, kind):
    x = torch.randn(6, 2, 3)
    plain = _classifier(0.0, readout, kind)
    dropped = _classifier(0.3, readout, kind)  # same seed: the same weights
    dropped.eval()
    torch.testing.assert_close(dropped(x), plain(x))
    # dropout 0 draws no random numbers, so runs without it keep their random stream
    state = torch.get_rng_state()
    plain.train()(x)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("rate", [-0.1, 1.0, float("nan")])
def test_a_dropout_outside_zero_to_one_is_refused(rate, kind):
    with pytest.raises(ValueError, match=KINDS[kind]):
        _classifier(rate, kind=kind)


@pytest.mark.parametrize("key", ["readout_dropout", "input_dropout"])
def test_the_config_key_reaches_the_trained_model_and_the_resolved_config(tmp_path, key):
    out = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path)), "train.epochs=2", f"model.{key}=0.25", "--out", str(out)]) == 0
    assert f"{key} = 0.25" in (out / "config.toml").read_text()
    plain = tmp_path / "plain"
    assert main(["train", str(write_config(tmp_path)), "train.epochs=2", "--out", str(plain)]) == 0
    dropped_records, plain_records = read_jsonl(out / "metrics.jsonl"), read_jsonl(plain / "metrics.jsonl")
    assert len(dropped_records) == len(plain_records) == 2
    # same seed, same data order: only the dropped values make the training differ
    assert dropped_records[0]["train"]["loss"] != plain_records[0]["train"]["loss"]
    # the dropout has no parameters: checkpoints keep the layout of runs without it
    dropped_weights = load_checkpoint(out / "checkpoints" / "last")[0]
    assert dropped_weights.keys() == load_checkpoint(plain / "checkpoints" / "last")[0].keys()
