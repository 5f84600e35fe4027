"""A graceful stop: the first SIGTERM/SIGINT stops training after the current step with a checkpoint that --resume
continues exactly; exit status 128 + the signal; a second signal acts as before; handlers are put back.

The in-process tests send the signal from inside a training step (``loss_and_stats``), so it lands at a known
step. A handler of the test's own is installed for both signals around each of them: it is what training must
put back, what a second signal must meet, and it turns a signal that training failed to catch into a test
failure instead of the end of pytest.
"""

import copy
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import lipschitz_rnn.train.loop as loop
from lipschitz_rnn.cli import main
from lipschitz_rnn.train import distributed
from lipschitz_rnn.train.signals import StopSignals
from test_train_resume import assert_same_run
from test_train_toytasks import TESTS, subprocess_env, write_config

# 8 steps per epoch, 2 epochs, a periodic checkpoint every 3 global steps (after steps 3, 6, 9, 12, 15)
OVERRIDES = ["train.limit_train_batches=8", "train.checkpoint_every_steps=3"]
TORCHRUN_TWO = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


class SignalArrived(Exception):
    """Raised by the test's own handler: the signal reached the handler that was there before training."""


@pytest.fixture
def previous_handlers():
    """Handlers of the test's own for SIGTERM and SIGINT, in place before training starts."""

    def handler(signum, frame):
        raise SignalArrived(signal.Signals(signum).name)

    before = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield handler
    for signum, old in before.items():
        signal.signal(signum, old)


def assert_handlers_are(handler):
    assert signal.getsignal(signal.SIGTERM) is handler and signal.getsignal(signal.SIGINT) is handler


@pytest.fixture
def signal_at(monkeypatch):
    """``signal_at(n, names, eval_call=None)``: send ``names`` (in order) to this process during the n-th training
    step (or the ``eval_call``-th evaluation batch); ``restore()`` takes the hook out again."""
    real = loop.loss_and_stats

    def arm(step, names, eval_call=None):
        calls = {"train": 0, "eval": 0}

        def hook(*args):
            kind = "train" if torch.is_grad_enabled() else "eval"
            calls[kind] += 1
            if calls[kind] == (step if kind == "train" else eval_call):
                for name in names:
                    os.kill(os.getpid(), getattr(signal, name))
            return real(*args)

        monkeypatch.setattr(loop, "loss_and_stats", hook)

    arm.restore = lambda: monkeypatch.setattr(loop, "loss_and_stats", real)
    return arm


def state_of(run_dir):
    return torch.load(Path(run_dir) / "checkpoints" / "last" / "state.pt", weights_only=True)


def log_of(run_dir):
    return (Path(run_dir) / "train.log").read_text()


@pytest.mark.parametrize(
    ("name", "status", "task", "model_options"),
    [
        ("SIGTERM", 143, "toy_sign", []),
        ("SIGINT", 130, "toy_sign", []),
        ("SIGTERM", 143, "toy_chars", []),  # stateful: the carried hidden state is in the checkpoint
        ("SIGTERM", 143, "toy_sign", ["train.ema_decay=0.8", "model.num_layers=2", "model.dropout=0.3"]),
    ],
)
def test_a_signal_stops_after_the_current_step_and_resume_is_exact(
    tmp_path, capsys, previous_handlers, signal_at, name, status, task, model_options
):
    config = write_config(tmp_path, task=task)
    overrides = [*OVERRIDES, *model_options]
    assert main(["train", str(config), *overrides, "--out", str(tmp_path / "whole")]) == 0

    cut = tmp_path / "cut"
    signal_at(14, [name])  # epoch 2, step 6: two steps after the last periodic checkpoint (global step 12)
    assert main(["train", str(config), *overrides, "--out", str(cut)]) == status
    signal_at.restore()
    assert_handlers_are(previous_handlers)  # put back when training returned
    state = state_of(cut)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 6, 14)  # the step finished
    assert not (cut / "summary.json").exists()
    stopped = f"stopped by {name} at epoch 2, step 6 of 8 (global step 14); checkpoint written to {cut}"
    resume = f"resume with: lipschitz-rnn train --resume {cut}"
    assert stopped in log_of(cut) and resume in log_of(cut)
    assert stopped in capsys.readouterr().err

    assert main(["train", "--resume", str(cut)]) == 0
    assert "resumed at epoch 2, step 6" in log_of(cut)
    assert_same_run(tmp_path / "whole", cut)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda-bptt"])
def test_on_a_gpu_a_signal_stops_after_the_current_step_and_resume_is_exact(
    tmp_path, previous_handlers, signal_at, backend
):
    # the vote tensor and the loop's sums live on the GPU ('cuda' names cuda:0); the fused backends are
    # deterministic, so the stopped-and-resumed run must end bit-identical to the whole one there too
    config = write_config(tmp_path)
    overrides = [*OVERRIDES, "model.hidden_size=16", "train.device=cuda", f"train.backend={backend}"]  # triton: N >= 16
    assert main(["train", str(config), *overrides, "--out", str(tmp_path / "whole")]) == 0
    cut = tmp_path / "cut"
    signal_at(14, ["SIGTERM"])
    assert main(["train", str(config), *overrides, "--out", str(cut)]) == 143
    signal_at.restore()
    assert_handlers_are(previous_handlers)
    assert state_of(cut)["global_step"] == 14
    assert main(["train", "--resume", str(cut)]) == 0
    assert "resumed at epoch 2, step 6" in log_of(cut)
    assert_same_run(tmp_path / "whole", cut)


def test_a_signal_in_the_last_step_of_an_epoch_stops_before_its_evaluation_and_resumes_exactly(
    tmp_path, previous_handlers, signal_at
):
    # inside a warm-up ramp the rate changes every step: the epoch's record keeps the rate of its last step
    config = write_config(tmp_path)
    overrides = [*OVERRIDES, "train.warmup_steps=20"]
    assert main(["train", str(config), *overrides, "--out", str(tmp_path / "whole")]) == 0
    cut = tmp_path / "cut"
    signal_at(8, ["SIGTERM"])
    assert main(["train", str(config), *overrides, "--out", str(cut)]) == 143
    signal_at.restore()
    state = state_of(cut)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"], state["history"]) == (0, 8, 8, [])
    assert "stopped by SIGTERM after the last step of epoch 1 (global step 8), before its evaluation" in log_of(cut)
    assert main(["train", "--resume", str(cut)]) == 0
    assert_same_run(tmp_path / "whole", cut)


def test_a_signal_during_evaluation_stops_at_the_end_of_that_epoch(tmp_path, previous_handlers, signal_at):
    config = write_config(tmp_path)
    assert main(["train", str(config), *OVERRIDES, "--out", str(tmp_path / "whole")]) == 0
    cut = tmp_path / "cut"
    signal_at(None, ["SIGTERM"], eval_call=1)  # epoch 1's first validation batch
    assert main(["train", str(config), *OVERRIDES, "--out", str(cut)]) == 143
    signal_at.restore()
    state = state_of(cut)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"], len(state["history"])) == (1, 0, 8, 1)
    assert "stopped by SIGTERM after epoch 1 (global step 8); checkpoint written to" in log_of(cut)
    assert main(["train", "--resume", str(cut)]) == 0
    assert_same_run(tmp_path / "whole", cut)


def test_a_signal_after_the_last_epochs_training_lets_the_run_finish(tmp_path, previous_handlers, signal_at):
    run = tmp_path / "run"
    signal_at(None, ["SIGTERM"], eval_call=5)  # epoch 2's first (each epoch: 2 val batches, 2 test batches)
    assert main(["train", str(write_config(tmp_path)), *OVERRIDES, "--out", str(run)]) == 0
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert_handlers_are(previous_handlers)


def test_a_second_signal_while_stopping_meets_the_previous_handler(tmp_path, previous_handlers, signal_at):
    # the default handlers: KeyboardInterrupt, termination (test_real_processes_... checks them in a real process)
    cut = tmp_path / "cut"
    signal_at(14, ["SIGTERM", "SIGINT"])
    with pytest.raises(SignalArrived, match="SIGINT"):
        main(["train", str(write_config(tmp_path)), *OVERRIDES, "--out", str(cut)])
    assert state_of(cut)["global_step"] == 12  # stopped at once: the last periodic checkpoint stays
    assert_handlers_are(previous_handlers)


def test_a_signal_that_was_ignored_stays_ignored(tmp_path, previous_handlers, signal_at):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as for a job started with `&` from a script
    run = tmp_path / "run"
    signal_at(14, ["SIGINT"])
    assert main(["train", str(write_config(tmp_path)), *OVERRIDES, "--out", str(run)]) == 0
    assert (run / "summary.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is previous_handlers


def test_training_outside_the_main_thread_leaves_signals_alone(tmp_path, previous_handlers, monkeypatch):
    seen, result = [], {}
    real = loop.loss_and_stats

    def record(*args):
        seen.append((signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)))
        return real(*args)

    monkeypatch.setattr(loop, "loss_and_stats", record)
    args = ["train", str(write_config(tmp_path)), *OVERRIDES, "--out", str(tmp_path / "run")]
    thread = threading.Thread(target=lambda: result.update(status=main(args)))
    thread.start()
    thread.join()
    assert result == {"status": 0}  # signal.signal would have raised ValueError in this thread
    assert seen and set(seen) == {(previous_handlers, previous_handlers)}


def test_stop_on_signals_false_leaves_signals_alone(tmp_path, previous_handlers, monkeypatch):
    seen = []
    real = loop.loss_and_stats
    monkeypatch.setattr(loop, "loss_and_stats", lambda *a: seen.append(signal.getsignal(signal.SIGTERM)) or real(*a))
    loop.train(loop.load_config(write_config(tmp_path)), tmp_path / "run", stop_on_signals=False)
    assert seen and set(seen) == {previous_handlers}


@pytest.mark.parametrize("at_epoch_end", [False, True])
def test_a_stop_voted_by_another_process_stops_this_one_at_the_same_step(
    tmp_path, previous_handlers, monkeypatch, at_epoch_end
):
    # one process's view: the signal reached another process, whose vote arrives through the all-reduce
    # (per step: the 3 sums and one vote per signal, SIGTERM first; at the end of an epoch: the votes alone)
    real = distributed.all_reduce_sum
    calls = {"step": 0, "epoch": 0}

    def others_vote(tensor, ctx):
        kind = {5: "step", 2: "epoch"}.get(tensor.numel())  # (an evaluation's sums: 3)
        if kind is None:
            return real(tensor, ctx)
        calls[kind] += 1
        if (kind, calls[kind]) == (("epoch", 1) if at_epoch_end else ("step", 11)):
            tensor[-2] += 1.0  # another process received SIGTERM
        return real(tensor, ctx)

    monkeypatch.setattr(distributed, "all_reduce_sum", others_vote)
    cut = tmp_path / "cut"
    assert main(["train", str(write_config(tmp_path)), *OVERRIDES, "--out", str(cut)]) == 143
    state = state_of(cut)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == ((1, 0, 8) if at_epoch_end else (1, 3, 11))


def test_the_stop_exception_survives_pickling_and_copying():
    # a process pool (concurrent.futures, multiprocessing) pickles a worker's exception to send it back; one that
    # cannot be rebuilt breaks the whole pool ("terminated abruptly") instead of reaching the caller
    stop = loop.TrainingInterrupted(
        "stopped", signum=15, run_dir=Path("r"), epoch=1, step_in_epoch=3, global_step=11, resume_command="resume"
    )
    for again in (pickle.loads(pickle.dumps(stop)), copy.copy(stop)):
        assert isinstance(again, loop.TrainingInterrupted) and isinstance(again, SystemExit)
        assert (again.code, str(again), again.signum, again.run_dir) == (143, "stopped", 15, Path("r"))
        assert (again.epoch, again.step_in_epoch, again.global_step, again.resume_command) == (1, 3, 11, "resume")


@pytest.mark.parametrize("device", [torch.device("cpu"), torch.device("cpu", 0), "cpu"])
def test_the_vote_tensor_is_made_once_for_a_device_however_it_is_named(device):
    # a tensor's device need not equal the one it was made for ('cuda' makes cuda:0, cpu:0 makes cpu): compared with
    # the tensor's, the vote was made anew, and marked again, at every step
    stop = StopSignals()
    first = stop.counts(device)
    assert all(stop.counts(device) is first for _ in range(3))
    stop.received = signal.SIGINT
    assert stop.counts(device) is first and first.tolist() == [0.0, 1.0] and stop.counts(device) is first


# -- real processes ------------------------------------------------------------------------------


def _signalled(config, out, step, names, ranks="all", launcher=(sys.executable,)):
    """A training process (or torchrun's) that signals itself at a training step (tests/signal_at_step.py)."""
    script = [str(TESTS / "signal_at_step.py"), str(step), ",".join(names), ranks]
    return subprocess.Popen(
        [*launcher, *script, "train", str(config), *OVERRIDES, "--out", str(out)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_real_processes_exit_143_after_one_sigterm_and_at_once_after_a_second(tmp_path):
    config = write_config(tmp_path)
    # side by side: each pays for its own start-up
    runs = {
        names: _signalled(config, tmp_path / "-".join(names), 14, names)
        for names in (("SIGTERM",), ("SIGTERM", "SIGTERM"), ("SIGINT", "SIGINT"))
    }
    outputs = {names: process.communicate(timeout=120) for names, process in runs.items()}
    codes = {names: process.returncode for names, process in runs.items()}
    assert codes == {("SIGTERM",): 143, ("SIGTERM", "SIGTERM"): -signal.SIGTERM, ("SIGINT", "SIGINT"): -signal.SIGINT}
    out, err = outputs[("SIGTERM",)]
    stopped = tmp_path / "SIGTERM"
    assert "stopped by SIGTERM at epoch 2, step 6 of 8 (global step 14)" in out  # the log line, on stdout
    assert f"resume with: lipschitz-rnn train --resume {stopped}" in err  # and the command line's message
    assert state_of(stopped)["global_step"] == 14
    for names in (("SIGTERM", "SIGTERM"), ("SIGINT", "SIGINT")):  # stopped at once: the periodic checkpoint stays
        assert state_of(tmp_path / "-".join(names))["global_step"] == 12
    assert "KeyboardInterrupt" in outputs[("SIGINT", "SIGINT")][1]


def test_two_processes_stop_at_the_same_step_when_only_one_receives_the_signal(tmp_path):
    # under torchrun (gloo on CPU): process 1 receives SIGTERM in its 10th step; process 0 receives nothing
    cut = tmp_path / "cut"
    run = _signalled(write_config(tmp_path), cut, 10, ["SIGTERM"], ranks="1", launcher=TORCHRUN_TWO)
    _, err = run.communicate(timeout=300)
    assert run.returncode != 0, err[-3000:]  # torchrun reports its workers' exit statuses as a failure
    # its report of each process ("exitcode  : 143 (pid: ...)"): 128 + SIGTERM; or killed by SIGTERM (-15), which
    # torchrun sends the others once one has exited, and which may reach one after the barrier that follows the
    # checkpoint, where its handlers are back (for process 1 it is a second signal)
    codes = re.findall(r"exitcode +: (-?\d+) ", err)
    assert len(codes) == 2 and set(codes) <= {"143", "-15"} and "143" in codes, err[-3000:]
    state = state_of(cut)  # written by process 0, which stopped after the same step
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 10)
    resume = f"resume with: torchrun --nproc_per_node=2 -m lipschitz_rnn train --resume {cut}"
    assert "stopped by SIGTERM at epoch 2, step 2 of 8 (global step 10)" in log_of(cut) and resume in log_of(cut)
    assert err.count("lipschitz-rnn train: stopped by SIGTERM") == 1  # printed by process 0 alone


@pytest.mark.slow
def test_two_processes_stopped_by_a_signal_resume_exactly(tmp_path):
    config = write_config(tmp_path)
    env = subprocess_env()
    whole = [*TORCHRUN_TWO, "-m", "lipschitz_rnn", "train", str(config), *OVERRIDES, "--out", str(tmp_path / "whole")]
    assert subprocess.run(whole, env=env, capture_output=True, timeout=300).returncode == 0
    cut = tmp_path / "cut"
    _signalled(config, cut, 10, ["SIGTERM"], ranks="0", launcher=TORCHRUN_TWO).communicate(timeout=300)
    assert state_of(cut)["global_step"] == 10
    resume = [*TORCHRUN_TWO, "-m", "lipschitz_rnn", "train", "--resume", str(cut)]
    resumed = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(tmp_path / "whole", cut)
