"""Exact resume: an interrupted run continued with --resume ends bit-identical to an uninterrupted one (CPU)."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import lipschitz_rnn.train.loop as loop
from lipschitz_rnn.cli import main
from test_train_toytasks import read_jsonl, subprocess_env, weights, without_times, write_config


class Interrupted(Exception):
    pass


def assert_same_run(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name  # bit-identical, not merely close
    assert [without_times(r) for r in read_jsonl(a / "metrics.jsonl")] == [
        without_times(r) for r in read_jsonl(b / "metrics.jsonl")
    ]
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert (sa["test_best_val"], sa["test_last"], sa["best_epoch"]) == (
        sb["test_best_val"],
        sb["test_last"],
        sb["best_epoch"],
    )


@pytest.mark.parametrize(
    ("task", "model", "model_options"),
    [
        ("toy_sign", "lipschitz", ["model.method=midpoint"]),
        # dropout between layers draws from torch's RNG: its state must be restored too
        ("toy_sign", "lipschitz", ["model.num_layers=2", "model.dropout=0.3"]),
        ("toy_sign", "antisymmetric_gated", []),
        # a weight average: the averaged and the trained weights are both in the checkpoint
        ("toy_sign", "lipschitz", ["train.ema_decay=0.8"]),
        # the interruption falls inside a warm-up ramp: the step's rate follows from the restored step count
        ("toy_sign", "lipschitz", ["train.warmup_steps=20"]),
        # the ASR paper's optimizers: their state (momentum buffers, Adagrad's sums) is in the checkpoint
        ("toy_sign", "antisymmetric", ["train.optimizer=sgd", "train.momentum=0.9", "train.lr=0.05"]),
        ("toy_sign", "antisymmetric", ["train.optimizer=adagrad", "train.lr=0.05"]),
        ("toy_sign", "lstm", ["train.optimizer=rmsprop", "train.lr=0.01"]),  # RMSprop's square averages
        ("toy_chars", "lipschitz", []),  # stateful: the carried hidden state is in the checkpoint
        ("toy_chars", "lstm", []),  # ... as a (h, c) pair
    ],
)
def test_resume_after_an_interruption_mid_epoch_is_exact(tmp_path, monkeypatch, task, model, model_options):
    config = write_config(tmp_path, task=task, model=model)
    # 8 steps per epoch, a checkpoint every 3 global steps: the last one before the
    # interruption is after global step 12 (epoch 2, step 4); step 13 is lost and redone
    overrides = ["train.limit_train_batches=8", "train.checkpoint_every_steps=3", *model_options]
    assert main(["train", str(config), *overrides, "--out", str(tmp_path / "whole")]) == 0

    calls = {"train": 0}
    real = loop.loss_and_stats

    def interrupt_at_step_14(*args):
        if torch.is_grad_enabled():  # training steps only, not evaluation
            calls["train"] += 1
            if calls["train"] == 14:
                raise Interrupted
        return real(*args)

    monkeypatch.setattr(loop, "loss_and_stats", interrupt_at_step_14)
    with pytest.raises(Interrupted):
        main(["train", str(config), *overrides, "--out", str(tmp_path / "cut")])
    monkeypatch.setattr(loop, "loss_and_stats", real)
    assert not (tmp_path / "cut" / "summary.json").exists()

    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    assert "resumed at epoch 2, step 4" in (tmp_path / "cut" / "train.log").read_text()
    assert_same_run(tmp_path / "whole", tmp_path / "cut")
    meta = json.loads((tmp_path / "cut" / "meta.json").read_text())
    assert meta["resumes"][0]["epoch"] == 1 and meta["resumes"][0]["step_in_epoch"] == 4


def test_resume_can_extend_a_finished_run_to_more_epochs(tmp_path):
    config = write_config(tmp_path)
    assert main(["train", str(config), "train.epochs=3", "--out", str(tmp_path / "three")]) == 0
    assert main(["train", str(config), "train.epochs=2", "--out", str(tmp_path / "two")]) == 0
    assert main(["train", "--resume", str(tmp_path / "two"), "train.epochs=3"]) == 0
    assert_same_run(tmp_path / "three", tmp_path / "two")


def test_resume_may_not_change_the_length_of_a_cosine_schedule(tmp_path, capsys):
    # the cosine rate of every epoch depends on the length: the epochs already run would not be a longer run's
    config = write_config(tmp_path)
    run = tmp_path / "cosine"
    assert main(["train", str(config), "train.lr_schedule=cosine", "--out", str(run)]) == 0
    before = (run / "config.toml").read_text(), (run / "metrics.jsonl").read_text()
    assert main(["train", "--resume", str(run), "train.epochs=3"]) == 2
    assert "train.epochs: cannot change when resuming a run with lr_schedule = 'cosine'" in capsys.readouterr().err
    assert ((run / "config.toml").read_text(), (run / "metrics.jsonl").read_text()) == before


def test_resume_may_not_shorten_a_run_below_its_completed_epochs(tmp_path, capsys):
    config = write_config(tmp_path)
    run = tmp_path / "two"
    assert main(["train", str(config), "--out", str(run)]) == 0
    before = (run / "config.toml").read_text()
    assert main(["train", "--resume", str(run), "train.epochs=1"]) == 2
    assert "train.epochs: the run has completed 2 epochs; resume with at least 2" in capsys.readouterr().err
    assert (run / "config.toml").read_text() == before


def _train_process(config, out, *overrides):
    return subprocess.Popen(
        [sys.executable, "-m", "lipschitz_rnn", "train", str(config), *overrides, "--out", str(out)],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path, process, timeout=120.0):
    """The moment ``path`` appears (or ``process`` ends, or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return time.monotonic()


def test_resume_after_sigkill_at_a_random_moment_is_exact(tmp_path):
    config = write_config(tmp_path, extra="")
    overrides = [
        "task.seq_len=100",
        "task.n_train=512",
        "model.hidden_size=32",
        "train.epochs=3",
        "train.checkpoint_every_steps=2",
    ]
    # The uninterrupted run first, alone: it times the window from the first checkpoint to the
    # summary on this machine, so the kill lands inside training however fast the machine is
    # (a fixed delay once let a fast machine finish the run before the kill).
    whole = _train_process(config, tmp_path / "whole", *overrides)
    first = _wait_for(tmp_path / "whole" / "checkpoints" / "last", whole)
    window = _wait_for(tmp_path / "whole" / "summary.json", whole) - first
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    assert window > 0.05, f"the run trains for only {window:.3f} s after its first checkpoint; make it longer"

    victim = _train_process(config, tmp_path / "killed", *overrides)
    _wait_for(tmp_path / "killed" / "checkpoints" / "last", victim)
    delay = random.uniform(0.0, 0.5 * window)
    time.sleep(delay)
    assert victim.poll() is None, f"the run ended before the kill (delay {delay:.2f} s of {window:.2f} s)"
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed" / "summary.json").exists(), f"killed after training (delay {delay:.2f} s)"

    resumed = subprocess.run(
        [sys.executable, "-m", "lipschitz_rnn", "train", "--resume", str(tmp_path / "killed")],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "whole", tmp_path / "killed")
