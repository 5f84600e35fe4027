"""Irregularly sampled series with ``dt``: a continuous-time Lipschitz RNN steps by the real time gaps.

The task: tell which of four frequencies a sine wave has, from ``steps`` noisy observations at
sorted uniform random times in ``[0, horizon]`` with a random phase. Three arms, the same model
size, data, seeds and optimiser:

* ``dt``: ``LipschitzRNN(1, N)`` reads the values and steps by the gaps, ``rnn(x, dt=gaps)``
  (each step's size is ``eps * gap``; the gaps are scaled to mean 1, so ``eps`` keeps its meaning);
* ``gaps_as_input``: ``LipschitzRNN(2, N)`` reads ``(value, gap)`` with a fixed step, the usual
  discrete-time way to pass the gaps;
* ``ignore_gaps``: ``LipschitzRNN(1, N)`` reads the values alone with a fixed step.

Each arm gets its own learning rate, step size and length from a stated search on a validation
split (``--search``: ``SEARCH_GRID``, seed 0's data, the last epoch's validation accuracy; the test
split is not read), then trains from each of ``--seeds`` (a seed draws the data and the initial
weights) and reports the test accuracy after its last epoch:

    python examples/irregular_sampling.py --search --seeds 0 1 2 --output examples/results/irregular-sampling-cpu.json

prints each arm's choice and its test accuracy (mean and sample std over the seeds) and writes
every run's curves, the search's trials, the settings, seeds, git commit, device and timings to
``--output``. Without ``--search`` every arm uses the command line's ``--lr``, ``--eps`` and
``--epochs``. On 2 CPU cores a run takes seconds; the search and three seeds, about ten minutes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, replace
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
#: what ``--search`` tries for each arm: every (lr, eps) for the longest length, scored after each length
SEARCH_GRID = {"lr": (0.002, 0.005, 0.01), "eps": (0.03, 0.1, 0.3), "epochs": (20, 40)}
CHOSEN = ("lr", "eps", "epochs")  # what the search sets for each arm


@dataclass
class Settings:
    steps: int = 48
    horizon: float = 12.0
    noise: float = 0.1
    train_size: int = 4000
    val_size: int = 1000
    test_size: int = 1000
    hidden_size: int = 32
    eps: float = 0.1
    epochs: int = 20
    batch_size: int = 50
    lr: float = 0.005
    seed: int = 0


Split = tuple[Tensor, Tensor, Tensor]


def make_split(size: int, settings: Settings, seed: int) -> Split:
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


def make_data(settings: Settings) -> dict[str, Split]:
    """Seed ``settings.seed``'s train, val and test splits, the gaps scaled by the training gaps' mean."""
    sizes = {"train": settings.train_size, "val": settings.val_size, "test": settings.test_size}
    splits = {
        name: make_split(size, settings, seed=3 * settings.seed + i) for i, (name, size) in enumerate(sizes.items())
    }
    scale = float(splits["train"][1].mean())
    return {name: (values, gaps / scale, labels) for name, (values, gaps, labels) in splits.items()}


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


def accuracy(model: ArmModel, split: Split, batch_size: int = 500) -> float:
    values, gaps, labels = split
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            part = slice(start, start + batch_size)
            correct += int((model(values[part], gaps[part]).argmax(-1) == labels[part]).sum())
    return 100.0 * correct / len(labels)


def train_arm(arm: str, settings: Settings, data: dict[str, Split], scored: tuple[str, ...]) -> dict:
    """Train one arm from ``settings.seed``: the accuracy on each ``scored`` split after every epoch."""
    torch.manual_seed(settings.seed)
    model = ArmModel(arm, settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    values, gaps, labels = data["train"]
    order_generator = torch.Generator().manual_seed(settings.seed)
    curves: dict[str, list[float]] = {split: [] for split in scored}
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
        for split in scored:
            curves[split].append(round(accuracy(model, data[split]), 2))
    return {"accuracy_per_epoch": curves, "train_s": time.perf_counter() - start}


def search(settings: Settings, grid: dict = SEARCH_GRID) -> tuple[dict[str, dict], list[dict]]:
    """Each arm's (lr, eps, epochs) with the best last-epoch validation accuracy on seed 0's data (first on ties).

    A trial trains ``max(grid["epochs"])`` epochs; a shorter length is scored on the same run's curve,
    which is what a run of that length would have given (a constant rate: nothing depends on the length).
    """
    base = replace(settings, seed=0, epochs=max(grid["epochs"]))
    data = make_data(base)
    trials, choices = [], {}
    for arm in ARMS:
        best = None
        for rate, eps in itertools.product(grid["lr"], grid["eps"]):
            curve = train_arm(arm, replace(base, lr=rate, eps=eps), data, ("val",))["accuracy_per_epoch"]["val"]
            for epochs in grid["epochs"]:
                trial = {"arm": arm, "lr": rate, "eps": eps, "epochs": epochs, "val_accuracy": curve[epochs - 1]}
                trials.append(trial)
                if best is None or trial["val_accuracy"] > best["val_accuracy"]:
                    best = trial
        choices[arm] = {key: best[key] for key in (*CHOSEN, "val_accuracy")}
    return choices, trials


def run(
    settings: Settings, seeds: tuple[int, ...] = (0,), output: Optional[Path] = None, search_grid: Optional[dict] = None
) -> dict:
    """The search (if ``search_grid``), then every arm from every seed; the record, also written to ``output``."""
    started = time.perf_counter()
    choices, trials = search(settings, search_grid) if search_grid else ({}, [])
    arm_settings = {
        arm: replace(settings, **{key: choices[arm][key] for key in CHOSEN}) if choices else settings for arm in ARMS
    }
    runs: dict[str, dict] = {}
    for seed in seeds:
        data = make_data(replace(settings, seed=seed))
        runs[str(seed)] = {
            arm: train_arm(arm, replace(arm_settings[arm], seed=seed), data, ("val", "test")) for arm in ARMS
        }
    summary = {}
    for arm in ARMS:
        finals = [runs[str(seed)][arm]["accuracy_per_epoch"]["test"][-1] for seed in seeds]
        spread = float(np.std(finals, ddof=1)) if len(finals) > 1 else 0.0
        summary[arm] = {"mean": float(np.mean(finals)), "std": spread, "per_seed": finals}
    commit, dirty = git_commit()
    record = {
        "example": "examples/irregular_sampling.py",
        "settings": {key: value for key, value in asdict(settings).items() if key != "seed"},
        "search_grid": search_grid,
        "choices": choices,
        "arm_settings": {arm: {key: getattr(chosen, key) for key in CHOSEN} for arm, chosen in arm_settings.items()},
        "seeds": list(seeds),
        "frequencies": list(FREQUENCIES),
        "chance": 100.0 / len(FREQUENCIES),
        "metric": "test accuracy (%) after the last epoch",
        "summary": summary,
        "runs": runs,
        "search_trials": trials,
        "total_s": time.perf_counter() - started,
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
    for name, value in asdict(Settings()).items():
        if name != "seed":
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run of every arm per seed")
    parser.add_argument("--search", action="store_true", help="choose each arm's lr, eps, epochs on validation")
    parser.add_argument("--output", type=Path, default=None, help="write the record here (JSON)")
    args = vars(parser.parse_args(argv))
    output, seeds, searched = args.pop("output"), tuple(args.pop("seeds")), args.pop("search")
    record = run(Settings(**args), seeds, output, SEARCH_GRID if searched else None)
    for arm, result in record["summary"].items():
        chosen = ", ".join(f"{key} {value}" for key, value in record["arm_settings"][arm].items())
        values = ", ".join(f"{value:.2f}" for value in result["per_seed"])
        print(f"{arm:>14} ({chosen}): test accuracy {result['mean']:.2f} ± {result['std']:.2f} % (seeds: {values})")
    print(f"chance {record['chance']:.0f}%" + (f"; record: {output}" if output else ""))


if __name__ == "__main__":
    main()
