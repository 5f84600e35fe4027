"""A run whose loss turns NaN/Inf stops with a clear message, exits non-zero and keeps its last good checkpoint."""

import json

import torch

from lipschitz_rnn.cli import main
from lipschitz_rnn.train import load_checkpoint
from test_train_toytasks import read_jsonl, weights, write_config


def _diverging_run(tmp_path, every: int):
    # targets of epoch 2 (index 1) become infinite from its 4th batch (index 3) on
    config = write_config(tmp_path, task="toy_regress")
    out = tmp_path / "run"
    code = main(
        [
            "train",
            str(config),
            "task.poison_epoch=1",
            "task.poison_step=3",
            f"train.checkpoint_every_steps={every}",
            "--out",
            str(out),
        ]
    )
    return code, out


def test_divergence_exits_non_zero_with_a_message_and_a_summary(tmp_path, capsys):
    code, out = _diverging_run(tmp_path, every=0)
    assert code == 3
    err = capsys.readouterr().err
    assert "diverged at epoch 2, step 4" in err and "last good" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_at"] == {"epoch": 2, "step": 4}
    assert len(read_jsonl(out / "metrics.jsonl")) == 1  # only the finished epoch
    assert "training diverged" in (out / "train.log").read_text()


def test_the_last_checkpoint_is_the_last_good_step(tmp_path):
    code, out = _diverging_run(tmp_path, every=1)
    assert code == 3
    w, state = load_checkpoint(out / "checkpoints" / "last")
    # a checkpoint after every step: the last one is after the 3 good steps of epoch 2
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 3, 11)
    assert all(torch.isfinite(t).all() for t in w.values())


def test_the_end_of_epoch_checkpoint_survives_untouched(tmp_path):
    code, out = _diverging_run(tmp_path, every=0)
    assert code == 3
    _, state = load_checkpoint(out / "checkpoints" / "last")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 0)
    # the same weights as the best checkpoint saved at that epoch's end (epoch 1 was the only one)
    best, last = weights(out, "best"), weights(out, "last")
    assert all(torch.equal(best[k], last[k]) for k in last)
