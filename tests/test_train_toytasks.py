"""Small deterministic tasks for the harness tests, and the batch contract they (and real tasks) follow.

Importing this module registers three tasks (configs load it with ``[experiment] imports``):

* ``toy_sign``: classify whether a noisy sequence's first feature sums to more than 0 (accuracy);
* ``toy_regress``: regress the mean of the first feature (mse); ``poison_epoch``/``poison_step``
  make the targets of later training batches infinite, to test divergence;
* ``toy_chars``: next-symbol prediction on one long stream, stateful (truncated BPTT), bpc.

It also holds the helpers the other ``test_train_*`` / ``test_cli_*`` files share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

from lipschitz_rnn.data import TASKS, SequenceTask

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent


class ToyTask(SequenceTask):
    """Samples in memory; batches follow the SequenceTask contract of lipschitz_rnn.data.base."""

    def __init__(self, name, x: dict, y: dict, metric: str, readout: str, num_classes: int, poison=None) -> None:
        super().__init__(
            name=name,
            input_size=x["train"].shape[-1],
            num_classes=num_classes,
            seq_len=x["train"].shape[1],
            metric=metric,
            readout=readout,
            source=f"synthetic ({name})",
            info={"generator": "torch.Generator seed 1234"},
            sizes={split: len(v) for split, v in x.items()},
        )
        self.x, self.y, self.poison = x, y, poison

    def num_batches(self, split: str, batch_size: int) -> int:
        n = len(self.x[split])
        return n // batch_size if split == "train" else -(-n // batch_size)

    def batches(self, split, batch_size, *, epoch=0, seed=0, start=0, rank=0, world_size=1) -> Iterator:
        if batch_size % world_size:
            raise ValueError("batch_size must be divisible by world_size")
        n = len(self.x[split])
        if split == "train":  # shuffled by (seed, epoch); full batches only
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        else:
            order = torch.arange(n)
        for k in range(start, self.num_batches(split, batch_size)):
            rows = order[k * batch_size : (k + 1) * batch_size]
            rows = rows.tensor_split(world_size)[rank] if split != "train" else rows.chunk(world_size)[rank]
            x, y = self.x[split][rows], self.y[split][rows].clone()
            if split == "train" and self.poison and epoch == self.poison[0] and k >= self.poison[1]:
                y.fill_(float("inf"))
            yield x, y


class ToyStream(SequenceTask):
    """One token stream cut into ``batch_size`` parallel rows and windows of ``bptt`` steps (stateful)."""

    def __init__(self, tokens: dict, vocab: int, bptt: int) -> None:
        super().__init__(
            name="toy_chars",
            input_size=vocab,
            num_classes=vocab,
            seq_len=bptt,
            metric="bpc",
            readout="all",
            source="synthetic (toy_chars)",
            stateful=True,
            sizes={split: len(t) for split, t in tokens.items()},
        )
        self.tokens, self.vocab, self.bptt = tokens, vocab, bptt

    def _rows(self, split, batch_size):
        t = self.tokens[split]
        per_row = (len(t) - 1) // batch_size
        inputs = t[: per_row * batch_size].view(batch_size, per_row)
        targets = t[1 : per_row * batch_size + 1].view(batch_size, per_row)
        return inputs, targets

    def num_batches(self, split, batch_size):
        return self._rows(split, batch_size)[0].shape[1] // self.bptt

    def batches(self, split, batch_size, *, epoch=0, seed=0, start=0, rank=0, world_size=1):
        inputs, targets = self._rows(split, batch_size)
        per_rank = batch_size // world_size
        rows = slice(rank * per_rank, (rank + 1) * per_rank)
        for k in range(start, self.num_batches(split, batch_size)):
            window = slice(k * self.bptt, (k + 1) * self.bptt)
            x = torch.nn.functional.one_hot(inputs[rows, window], self.vocab).float()
            yield x, targets[rows, window]


def _sequences(n: int, seq_len: int, features: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(n, seq_len, features, generator=generator)


def toy_sign(n_train: int = 128, n_eval: int = 48, seq_len: int = 10, features: int = 2, val: bool = True):
    g = torch.Generator().manual_seed(1234)
    splits = {"train": n_train, "val": n_eval, "test": n_eval} if val else {"train": n_train, "test": n_eval}
    x = {s: _sequences(n, seq_len, features, g) for s, n in splits.items()}
    y = {s: (v[:, :, 0].sum(1) > 0).long() for s, v in x.items()}
    return ToyTask("toy_sign", x, y, "accuracy", "last", 2)


def toy_regress(n_train: int = 128, seq_len: int = 10, poison_epoch: int = -1, poison_step: int = 0):
    g = torch.Generator().manual_seed(1234)
    x = {s: _sequences(n, seq_len, 2, g) for s, n in {"train": n_train, "val": 32, "test": 32}.items()}
    y = {s: v[:, :, 0].mean(1) * 3 for s, v in x.items()}
    return ToyTask("toy_regress", x, y, "mse", "last", 1, poison=(poison_epoch, poison_step))


def toy_chars(length: int = 4000, vocab: int = 5, bptt: int = 8):
    g = torch.Generator().manual_seed(1234)
    # a Markov chain: the next symbol is (previous + 1) mod vocab most of the time
    steps = torch.where(torch.rand(length, generator=g) < 0.8, 1, torch.randint(0, vocab, (length,), generator=g))
    stream = torch.cumsum(steps, 0) % vocab
    cut = [int(0.8 * length), int(0.9 * length)]
    tokens = {"train": stream[: cut[0]], "val": stream[cut[0] : cut[1]], "test": stream[cut[1] :]}
    return ToyStream(tokens, vocab, bptt)


for _name, _builder in (("toy_sign", toy_sign), ("toy_regress", toy_regress), ("toy_chars", toy_chars)):
    if _name not in TASKS:
        TASKS.add(_name, _builder)


# -- helpers shared by the harness tests ------------------------------------------------------

BASE_CONFIG = """
[experiment]
name = "{name}"
imports = ["test_train_toytasks"]

[task]
name = "{task}"

[model]
name = "{model}"
hidden_size = 8

[train]
epochs = 2
batch_size = 16
eval_batch_size = 32
lr = 0.01
seed = 0
device = "cpu"

[log]
progress = false
tensorboard = false
plots = false
"""


def write_config(directory: Path, name: str = "toy", task: str = "toy_sign", model: str = "lipschitz", extra=""):
    path = Path(directory) / f"{name}.toml"
    path.write_text(BASE_CONFIG.format(name=name, task=task, model=model) + extra)
    return path


def subprocess_env(threads: int = 1) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``python -m lipschitz_rnn ARGS`` in a fresh process (one thread: bit-identical arithmetic)."""
    return subprocess.run(
        [sys.executable, "-m", "lipschitz_rnn", *map(str, args)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def weights(run_dir: Path, which: str = "last") -> dict:
    from lipschitz_rnn.train import load_checkpoint

    return load_checkpoint(Path(run_dir) / "checkpoints" / which)[0]


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def without_times(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("epoch_time_s", "train_time_s", "ms_per_step")}


def snapshot(directory: Path) -> dict:
    """Every file under ``directory`` with its bytes, to prove nothing changed."""
    return {p.relative_to(directory): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


# -- the batch contract ---------------------------------------------------------------------------


def _all(task, split, batch_size, **kwargs):
    return list(task.batches(split, batch_size, **kwargs))


@pytest.mark.parametrize("build", [toy_sign, toy_chars])
def test_toy_tasks_follow_the_batch_contract(build):
    task = build()
    full = _all(task, "train", 16, epoch=1, seed=3)
    assert len(full) == task.num_batches("train", 16)
    # the order is a pure function of (seed, epoch)
    again = _all(task, "train", 16, epoch=1, seed=3)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full, again))
    # start skips exactly the first batches
    tail = _all(task, "train", 16, epoch=1, seed=3, start=2)
    assert len(tail) == len(full) - 2 and torch.equal(tail[0][0], full[2][0])
    # the ranks' slices put together are the global batch
    halves = zip(*(_all(task, "train", 16, epoch=1, seed=3, rank=r, world_size=2) for r in range(2)))
    for (x0, y0), (x1, y1), (x, y) in ((a, b, c) for (a, b), c in zip(halves, full)):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    # evaluation splits: fixed order, every sample once
    evaluation = _all(task, "test", 16)
    assert sum(len(x) for x, _ in evaluation) in (task.sizes["test"], task.num_batches("test", 16) * 16)


def test_toy_sign_order_changes_with_epoch():
    task = toy_sign()
    first = _all(task, "train", 16, epoch=0, seed=0)[0][0]
    second = _all(task, "train", 16, epoch=1, seed=0)[0][0]
    assert not torch.equal(first, second)


def test_toy_regress_poison_makes_later_targets_infinite():
    task = toy_regress(poison_epoch=1, poison_step=2)
    targets = [y for _, y in task.batches("train", 16, epoch=1)]
    assert torch.isfinite(targets[1]).all() and torch.isinf(targets[2]).all()
    assert all(torch.isfinite(y).all() for _, y in task.batches("train", 16, epoch=0))
