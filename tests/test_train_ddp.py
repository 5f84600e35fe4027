"""Two processes under torchrun (DistributedDataParallel, gloo on CPU) train like one process on one global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from lipschitz_rnn.cli import main
from test_train_toytasks import read_jsonl, subprocess_env, weights, write_config

OVERRIDES = ["train.limit_train_batches=4", "train.checkpoint_every_steps=3", "train.batch_size=16"]
TORCHRUN_TWO = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.mark.parametrize(
    ("task", "extra"),
    [
        ("toy_sign", []),
        ("toy_chars", []),
        # each epoch ends with a batch of 3 samples: split 2 + 1, each process's mean weighted by its share
        ("adding", ["task.length=10", "task.train_size=19", "task.val_size=16", "task.test_size=16"]),
        # ... and of 1 sample: one process has none (its mean would be NaN; it contributes zero gradients)
        ("adding", ["task.length=10", "task.train_size=17", "task.val_size=16", "task.test_size=16"]),
    ],
)
def test_two_gloo_processes_match_one_process(tmp_path, task, extra):
    config = write_config(tmp_path, task=task)
    overrides = [*OVERRIDES, *extra]
    command = [*TORCHRUN_TWO, "-m", "lipschitz_rnn", "train", str(config), *overrides, "--out", str(tmp_path / "ddp")]
    ddp = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert main(["train", str(config), *overrides, "--out", str(tmp_path / "one")]) == 0

    meta = json.loads((tmp_path / "ddp" / "meta.json").read_text())
    assert meta["world_size"] == 2
    two, one = weights(tmp_path / "ddp"), weights(tmp_path / "one")
    last = torch.load(tmp_path / "one" / "checkpoints" / "last" / "state.pt", weights_only=True)
    assert last["global_step"] >= 4  # the weights compared below have trained
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6, msg=name)
    # the metrics are reduced over both processes: the same numbers as one process
    for r2, r1 in zip(read_jsonl(tmp_path / "ddp" / "metrics.jsonl"), read_jsonl(tmp_path / "one" / "metrics.jsonl")):
        for split in ("train", "val", "test"):
            for key, value in r1[split].items():
                assert r2[split][key] == pytest.approx(value, rel=1e-4, abs=1e-5), (split, key)


# -- leaving the process group -------------------------------------------------------------------


@pytest.fixture
def process_group_calls(monkeypatch):
    """A stand-in process group of two that records what is called on it, in order."""
    from lipschitz_rnn.train import distributed

    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(
        distributed.dist,
        "barrier",
        lambda device_ids=None: calls.append(
            "barrier" if device_ids is None else f"barrier {dict(device_ids=device_ids)}"
        ),
    )
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(distributed, "setup", lambda device: distributed.Context(1, 2, 1, torch.device("cpu")))
    return calls


def test_teardown_waits_for_every_process_only_when_asked(process_group_calls):
    from lipschitz_rnn.train import distributed

    ctx = distributed.Context(1, 2, 1, torch.device("cpu"))
    distributed.teardown(ctx, wait_for_peers=True)
    assert process_group_calls == ["barrier", "destroy"]
    process_group_calls.clear()
    distributed.teardown(ctx)
    assert process_group_calls == ["destroy"]
    process_group_calls.clear()
    distributed.teardown(distributed.Context(0, 1, 0, torch.device("cpu")), wait_for_peers=True)
    assert process_group_calls == []  # one process: nothing to leave
    distributed.teardown(distributed.Context(1, 2, 1, torch.device("cuda", 1)), wait_for_peers=True)
    assert process_group_calls == ["barrier {'device_ids': [1]}", "destroy"]  # NCCL: on this process's GPU


def test_a_finished_run_waits_for_the_others_before_leaving(tmp_path, monkeypatch, process_group_calls):
    from lipschitz_rnn.train import loop

    monkeypatch.setattr(loop, "_train", lambda *args: process_group_calls.append("train") or {"done": True})
    assert loop.train(loop.load_config(write_config(tmp_path))) == {"done": True}
    assert process_group_calls == ["train", "barrier", "destroy"]


def test_a_failed_run_leaves_without_waiting(tmp_path, monkeypatch, process_group_calls):
    # after an error the other processes may never reach a barrier: waiting there would hang
    from lipschitz_rnn.train import loop

    def fail(*args):
        raise loop.ConfigError("only this process failed")

    monkeypatch.setattr(loop, "_train", fail)
    with pytest.raises(loop.ConfigError, match="only this process failed"):
        loop.train(loop.load_config(write_config(tmp_path)))
    assert process_group_calls == ["destroy"]


def test_a_run_stopped_by_a_signal_waits_for_the_others_before_leaving(tmp_path, monkeypatch, process_group_calls):
    # every process stops after the same step (tests/test_train_signals.py); one that left at once would end with
    # 143, and torchrun would terminate process 0 while it writes the checkpoint
    from lipschitz_rnn.train import loop

    def stopped(*args):
        process_group_calls.append("train")
        raise loop.TrainingInterrupted(
            "stopped", signum=15, run_dir=tmp_path, epoch=0, step_in_epoch=1, global_step=1, resume_command="..."
        )

    monkeypatch.setattr(loop, "_train", stopped)
    with pytest.raises(loop.TrainingInterrupted) as stop:
        loop.train(loop.load_config(write_config(tmp_path)))
    assert stop.value.code == 143 and isinstance(stop.value, SystemExit)
    assert process_group_calls == ["train", "barrier", "destroy"]


@pytest.mark.parametrize(("key", "value"), [("batch_size", 15), ("eval_batch_size", 33)])
def test_global_batches_that_two_processes_cannot_split_are_refused_before_anything_is_written(
    tmp_path, process_group_calls, key, value
):
    from lipschitz_rnn.train import loop

    out = tmp_path / "run"
    with pytest.raises(loop.ConfigError, match=f"train.{key}: {value} is not divisible by the 2 processes"):
        loop.train(loop.load_config(write_config(tmp_path), [f"train.{key}={value}"]), out)
    assert not out.exists()


def test_each_process_draws_its_own_dropout_masks_as_a_function_of_the_step():
    from lipschitz_rnn.train.loop import process_step_seed

    seeds = {(rank, step): process_step_seed(0, step, rank) for rank in range(4) for step in range(50)}
    assert len(set(seeds.values())) == len(seeds)  # no two processes or steps share a stream
    assert process_step_seed(0, 7, 1) == process_step_seed(0, 7, 1)  # the same again on resume
    assert process_step_seed(1, 7, 1) != process_step_seed(0, 7, 1)
    assert all(0 <= seed < 2**63 for seed in seeds.values())


def test_setup_imports_dynamo_before_joining_the_group(monkeypatch):
    # torch._dynamo imported after the group exists (DistributedDataParallel imports it) would
    # hold the group past destroy_process_group(); the CUDA branch runs here without a GPU
    from types import SimpleNamespace

    from lipschitz_rnn.train import distributed

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed, "resolve_device", lambda setting, local_rank, world_size: torch.device("cuda", 1))
    monkeypatch.setattr(
        distributed, "importlib", SimpleNamespace(import_module=lambda name: calls.append(f"import {name}"))
    )
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.torch.cuda, "set_device", lambda device: calls.append(f"set_device {device}"))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: calls.append(f"init {backend}"))
    ctx = distributed.setup("cuda")
    assert calls == ["set_device cuda:1", "import torch._dynamo", "init nccl"]
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.device) == (1, 2, 1, torch.device("cuda", 1))


LEAVE_SCRIPT = """
import os
import sys
import torch
from lipschitz_rnn.train import distributed

ctx = distributed.setup("cpu")
model = distributed.wrap(torch.nn.Linear(3, 1), ctx)
model(torch.ones(2, 3)).sum().backward()
distributed.all_reduce_sum(torch.ones(2), ctx)
del model
distributed.teardown(ctx, wait_for_peers=True)
threads = [open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task")]
with open(os.path.join(sys.argv[1], f"threads-rank{ctx.rank}.txt"), "w") as report:  # a file each: no interleaving
    report.write(" ".join(threads))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads thread names from /proc (Linux)")
def test_leaving_the_group_stops_its_gloo_threads(tmp_path):
    # A gloo worker thread that outlived the group released the last collective's tensors while
    # the interpreter shut down, and the process aborted ("terminate called without an active
    # exception", one to three two-process runs in a hundred on a loaded machine).
    script = tmp_path / "leave.py"
    script.write_text(LEAVE_SCRIPT)
    ran = subprocess.run(
        [*TORCHRUN_TWO, str(script), str(tmp_path)], env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    for rank in (0, 1):
        threads = (tmp_path / f"threads-rank{rank}.txt").read_text().split()
        assert threads and not [name for name in threads if "gloo" in name], (rank, threads)


def test_the_loop_sums_in_float64_but_in_float32_on_apple_mps_which_has_no_float64(tmp_path, monkeypatch):
    from lipschitz_rnn.train import distributed
    from lipschitz_rnn.train.distributed import Context

    assert Context(0, 1, 0, torch.device("cpu")).sum_dtype == torch.float64
    assert Context(0, 1, 0, torch.device("cuda", 0)).sum_dtype == torch.float64
    assert Context(0, 1, 0, torch.device("mps")).sum_dtype == torch.float32
    # every sum the loop reduces (per step, per evaluation, the epoch's stop votes) takes the context's dtype:
    # a CPU run whose context says float32, as MPS's would, reduces float32 tensors only
    monkeypatch.setattr(Context, "sum_dtype", property(lambda self: torch.float32))
    reduced = []
    all_reduce_sum = distributed.all_reduce_sum

    def spy(tensor, ctx):
        reduced.append(tensor.dtype)
        return all_reduce_sum(tensor, ctx)

    monkeypatch.setattr(distributed, "all_reduce_sum", spy)
    config = write_config(tmp_path)
    assert main(["train", str(config), "train.epochs=2", "--out", str(tmp_path / "run")]) == 0
    assert len(reduced) > 4 and set(reduced) == {torch.float32}
