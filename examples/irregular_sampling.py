"""Irregularly sampled series with ``dt``: a continuous-time Lipschitz RNN steps by the real time gaps.

The task: tell which of four frequencies a sine wave has, from ``steps`` noisy observations at
sorted uniform random times in ``[0, horizon]`` with a random phase. Three arms, the same model
size, data, seed and optimiser, settings fixed before any run (no tuning):

* ``dt``: ``LipschitzRNN(1, N)`` reads the values and steps by the gaps, ``rnn(x, dt=gaps)``
  (each step's size is ``eps * gap``; the gaps are scaled to mean 1, so ``eps`` keeps its meaning);
* ``gaps_as_input``: ``LipschitzRNN(2, N)`` reads ``(value, gap)`` with a fixed step, the usual
  discrete-time way to pass the gaps;
* ``ignore_gaps``: ``LipschitzRNN(1, N)`` reads the values alone with a fixed step.

    python examples/irregular_sampling.py --seeds 0 1 2 --output examples/results/irregular-sampling-cpu.json

prints each arm's test accuracy after the last epoch (mean and sample std over the seeds; a seed
draws the data and the initial weights) and writes every run's curve, with the settings, seeds,
git commit, device and timings, to ``--output``. On 2 CPU cores each run takes seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

import lipschitz_rnn as lr
from lipschitz_rnn.train.loop import git_commit

#: frequencies of the four classes, in cycles per unit of time
FREQUENCIES = (0.3, 0.4, 0.5, 0.6)
ARMS = ("dt", "gaps_as_input", "ignore_gaps")


@dataclass
class Settings:
    steps: int = 48
    horizon: float = 12.0
    noise: float = 0.1
    train_size: int = 4000
    test_size: int = 1000
    hidden_size: int = 32
    eps: float = 0.1
    epochs: int = 20
    batch_size: int = 50
    lr: float = 0.005
    seed: int = 0


def make_split(size: int, settings: Settings, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(values (B, T, 1), gaps (B, T), labels (B,))``; ``gaps[:, t]`` is the time since observation ``t - 1``
    (for ``t = 0``, since time 0), so their running sum is each observation's time."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(0.0, settings.horizon, size=(size, settings.steps)), axis=1)
    labels = rng.integers(0, len(FREQUENCIES), size=size)
    phases = rng.uniform(0.0, 2 * math.pi, size=(size, 1))
    omega = 2 * math.pi * np.asarray(FREQUENCIES)[labels][:, None]
    values = np.sin(omega * times + phases) + settings.noise * rng.standard_normal(times.shape)
    gaps = np.diff(times, axis=1, prepend=0.0)
    return (
        torch.from_numpy(values.astype(np.float32)).unsqueeze(-1),
        torch.from_numpy(gaps.astype(np.float32)),
        torch.from_numpy(labels),
    )


class ArmModel(nn.Module):
    """The RNN of one arm with a linear readout on the last step."""

    def __init__(self, arm: str, settings: Settings) -> None:
        super().__init__()
        if arm not in ARMS:
            raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
        self.arm = arm
        inputs = 2 if arm == "gaps_as_input" else 1
        rnn = lr.LipschitzRNN(inputs, settings.hidden_size, eps=settings.eps, batch_first=True)
        self.classifier = lr.SequenceClassifier(rnn, len(FREQUENCIES))

    def forward(self, values: Tensor, gaps: Tensor) -> Tensor:
        if self.arm == "dt":
            return self.classifier(values, dt=gaps)
        if self.arm == "gaps_as_input":
            return self.classifier(torch.cat([values, gaps.unsqueeze(-1)], dim=-1))
        return self.classifier(values)


def accuracy(model: ArmModel, values: Tensor, gaps: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            part = slice(start, start + batch_size)
            correct += int((model(values[part], gaps[part]).argmax(-1) == labels[part]).sum())
    return 100.0 * correct / len(labels)


def train_arm(arm: str, settings: Settings, train: tuple, test: tuple) -> dict:
    """Train one arm from the seed; the test accuracy after each epoch and the wall time."""
    torch.manual_seed(settings.seed)
    model = ArmModel(arm, settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    values, gaps, labels = train
    order_generator = torch.Generator().manual_seed(settings.seed)
    curve = []
    start = time.perf_counter()
    for _ in range(settings.epochs):
        model.train()
        order = torch.randperm(len(labels), generator=order_generator)
        for first in range(0, len(labels), settings.batch_size):
            batch = order[first : first + settings.batch_size]
            loss = nn.functional.cross_entropy(model(values[batch], gaps[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        curve.append(round(accuracy(model, *test), 2))
    return {"test_accuracy": curve[-1], "test_accuracy_per_epoch": curve, "train_s": time.perf_counter() - start}


def run_seed(settings: Settings) -> dict:
    """Every arm on the data and initial weights of ``settings.seed``."""
    train = make_split(settings.train_size, settings, seed=2 * settings.seed)
    test = make_split(settings.test_size, settings, seed=2 * settings.seed + 1)
    scale = float(train[1].mean())  # gaps scaled to mean 1, the same factor for both splits
    train, test = (train[0], train[1] / scale, train[2]), (test[0], test[1] / scale, test[2])
    return {"gap_scale": scale, "arms": {arm: train_arm(arm, settings, train, test) for arm in ARMS}}


def run(settings: Settings, seeds: tuple[int, ...] = (0,), output: Optional[Path] = None) -> dict:
    runs = {seed: run_seed(Settings(**{**asdict(settings), "seed": seed})) for seed in seeds}
    summary = {}
    for arm in ARMS:
        finals = [runs[seed]["arms"][arm]["test_accuracy"] for seed in seeds]
        spread = float(np.std(finals, ddof=1)) if len(finals) > 1 else 0.0
        summary[arm] = {"mean": float(np.mean(finals)), "std": spread, "per_seed": finals}
    commit, dirty = git_commit()
    record = {
        "example": "examples/irregular_sampling.py",
        "settings": {key: value for key, value in asdict(settings).items() if key != "seed"},
        "seeds": list(seeds),
        "frequencies": list(FREQUENCIES),
        "chance": 100.0 / len(FREQUENCIES),
        "summary": summary,
        "runs": {str(seed): result for seed, result in runs.items()},
        "git_commit": commit,
        "git_dirty": dirty,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Settings()
    for name, value in asdict(defaults).items():
        if name != "seed":
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run of every arm per seed")
    parser.add_argument("--output", type=Path, default=None, help="write the record here (JSON)")
    args = vars(parser.parse_args(argv))
    output, seeds = args.pop("output"), tuple(args.pop("seeds"))
    record = run(Settings(**args), seeds, output)
    for arm, result in record["summary"].items():
        values = ", ".join(f"{value:.2f}" for value in result["per_seed"])
        print(f"{arm:>14}: test accuracy {result['mean']:.2f} ± {result['std']:.2f} % (seeds: {values})")
    print(f"chance {record['chance']:.0f}%" + (f"; record: {output}" if output else ""))


if __name__ == "__main__":
    main()
