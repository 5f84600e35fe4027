"""Two processes under torchrun (DistributedDataParallel, gloo on CPU) train like one process on one global batch."""

import json
import subprocess
import sys

import pytest
import torch

from lipschitz_rnn.cli import main
from test_train_toytasks import read_jsonl, subprocess_env, weights, write_config

OVERRIDES = ["train.limit_train_batches=4", "train.checkpoint_every_steps=3", "train.batch_size=16"]


@pytest.mark.parametrize("task", ["toy_sign", "toy_chars"])
def test_two_gloo_processes_match_one_process(tmp_path, task):
    config = write_config(tmp_path, task=task)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "lipschitz_rnn", "train", str(config), *OVERRIDES, "--out", str(tmp_path / "ddp")]
    ddp = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert main(["train", str(config), *OVERRIDES, "--out", str(tmp_path / "one")]) == 0

    meta = json.loads((tmp_path / "ddp" / "meta.json").read_text())
    assert meta["world_size"] == 2
    two, one = weights(tmp_path / "ddp"), weights(tmp_path / "one")
    start = torch.load(tmp_path / "one" / "checkpoints" / "best" / "state.pt", weights_only=True)
    assert start["global_step"] >= 4  # the weights compared below have trained
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6, msg=name)
    # the metrics are reduced over both processes: the same numbers as one process
    for r2, r1 in zip(read_jsonl(tmp_path / "ddp" / "metrics.jsonl"), read_jsonl(tmp_path / "one" / "metrics.jsonl")):
        for split in ("train", "val", "test"):
            for key, value in r1[split].items():
                assert r2[split][key] == pytest.approx(value, rel=1e-4, abs=1e-5), (split, key)
