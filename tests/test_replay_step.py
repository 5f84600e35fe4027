"""scripts/replay_step.py: the step a run diverged at, replayed from its last checkpoint with what went wrong."""

import json
import math

import pytest

from lipschitz_rnn.cli import main
from scripts_loader import load_script
from test_train_toytasks import write_config

replay_step = load_script("scripts/replay_step.py", "replay_step")


def _diverged_run(tmp_path, every: int, *overrides: str):
    # targets of epoch 2 (index 1) become infinite from its 4th batch (index 3) on
    config = write_config(tmp_path, task="toy_regress")
    out = tmp_path / "run"
    poison = ["task.poison_epoch=1", "task.poison_step=3", *overrides]
    code = main(["train", str(config), *poison, f"train.checkpoint_every_steps={every}", "--out", str(out)])
    assert code == 3
    return out


@pytest.fixture
def diverged_run(tmp_path):
    return _diverged_run(tmp_path, every=1)  # a checkpoint after every step: the last is one step before


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_replayed_step_is_the_step_the_run_diverged_at(diverged_run, dtype):
    result = replay_step.replay(diverged_run, steps=5, device="cpu", dtype=dtype)
    assert result["diverged"] and result["dtype"] == dtype
    assert result["config"]["task"]["poison_step"] == 3 and result["seconds"] > 0  # what ran, and how long
    assert result["checkpoint"] == {"kind": "last", "epoch": 2, "step_in_epoch": 3, "global_step": 11}
    (step,) = result["steps"]  # it stops at the first non-finite step
    assert (step["epoch"], step["step"]) == (2, 4)  # what summary.json's diverged_at says
    assert not math.isfinite(step["loss"])
    # the recurrence stayed finite: the poisoned targets, not the hidden state, made the loss infinite
    assert step["first_nonfinite_time_step"] is None and math.isfinite(step["hidden_max_abs"])
    assert step["logits_all_finite"]
    assert set(step["layers_before"]) == {"layer0"} and step["layers_before"]["layer0"]["norm_W"] > 0


def test_finite_steps_replay_with_optimizer_steps_between_and_the_run_is_untouched(tmp_path, capsys):
    run = _diverged_run(tmp_path, every=0)  # the last checkpoint is the end of epoch 1
    before = {str(p): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    output = tmp_path / "replay.json"
    assert replay_step.main([str(run), "--steps", "9", "--device", "cpu", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["checkpoint"]["step_in_epoch"] == 0 and result["diverged"]
    steps = result["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4]  # three finite steps, then the poisoned one
    assert all(math.isfinite(s["loss"]) and math.isfinite(s["grad_norm"]) for s in steps[:3])
    # the optimizer stepped between them: the recurrent weights moved
    norms = [s["layers_before"]["layer0"]["norm_W"] for s in steps]
    assert len(set(norms)) == len(norms)
    assert "step 4: loss" in capsys.readouterr().err
    after = {str(p): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    assert after == before


def test_replayed_steps_take_the_warmup_rate_the_loop_gave_them(tmp_path):
    run = _diverged_run(tmp_path, 0, "train.warmup_steps=1000")  # the ramp outlasts the run
    result = replay_step.replay(run, steps=9, device="cpu")
    first = result["checkpoint"]["global_step"]
    assert first > 0 and [s["step"] for s in result["steps"]] == [1, 2, 3, 4]
    lr = result["config"]["train"]["lr"]
    assert [s["lr"] for s in result["steps"]] == pytest.approx([lr * (first + i + 1) / 1000 for i in range(4)])


def test_a_best_checkpoint_replays_the_next_epochs_first_step_with_or_without_dropout(tmp_path):
    config = write_config(tmp_path, task="toy_chars")  # stateful: the last checkpoint carries a hidden state
    run = tmp_path / "run"
    overrides = ["train.epochs=2", "train.limit_train_batches=3", "model.input_dropout=0.3", "log.plots=false"]
    assert main(["train", str(config), *overrides, "--out", str(run)]) == 0
    best_epoch = json.loads((run / "summary.json").read_text())["best_epoch"]

    train, again, evaluated = (
        replay_step.replay(run, device="cpu", checkpoint="best", mode=mode) for mode in ("train", "train", "eval")
    )
    for result in (train, evaluated):
        assert result["checkpoint"] == {
            "kind": "best",
            "epoch": best_epoch + 1,
            "step_in_epoch": 0,
            "global_step": 3 * best_epoch,
        }
        (step,) = result["steps"]
        assert step["step"] == 1 and "carried_hidden_max_abs" not in step  # from a zero state, not a carried one
    assert train["mode"] == "train" and evaluated["mode"] == "eval"
    assert train["steps"][0]["loss"] == again["steps"][0]["loss"]  # dropout masks from the run's seed: repeatable
    assert train["steps"][0]["loss"] != evaluated["steps"][0]["loss"]  # input dropout on, then off

    with pytest.raises(ValueError, match="replays one step"):
        replay_step.replay(run, steps=2, device="cpu", checkpoint="best")
    with pytest.raises(SystemExit):
        replay_step.main([str(run), "--checkpoint", "best", "--steps", "2"])
