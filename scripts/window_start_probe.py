"""Where a stateful run's first training window starts matters: probe it from a zero and from a carried state.

    python scripts/window_start_probe.py runs/ptb_char_.../seed1 --output probe.json

A stateful task (char-level PTB) resets the hidden state to zeros at the start of every epoch and
carries it across the epoch's windows. This script takes a run's best checkpoint (the weights after
its best epoch), the first ``--windows`` training batches of the next epoch, and runs them forward
(no optimizer steps) under several mode sequences: every window in training mode (dropout on) from a
zero state, as the loop runs them; and the first one or two windows in evaluation mode (dropout
off), the rest in training mode from the state those carried. Each sequence runs with ``--draws``
dropout seeds. It reports each window's loss (None where it is not finite) and the largest hidden
value reached. It writes nothing in the run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

from lipschitz_rnn.train.loop import _forward, load_run, loss_and_stats, run_provenance
from lipschitz_rnn.train.metrics import stability_numbers


def _finite_or_none(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


def probe(run_dir: Path, windows: int = 4, draws: int = 3, device: str = "auto") -> dict[str, Any]:
    """Losses of the next epoch's first ``windows`` windows under each mode sequence and dropout draw."""
    started = time.perf_counter()
    run = load_run(run_dir, "best", device)
    cfg, task, model, state, ctx = run["cfg"], run["task"], run["model"], run["state"], run["ctx"]
    if not task.stateful:
        raise SystemExit(f"{run_dir}: task {task.name!r} carries no state across windows")
    epoch = state["epoch"]  # 0-based index of the epoch after the best one
    batches = task.batches("train", cfg.train.batch_size, epoch=epoch, seed=cfg.train.seed, start=0)
    batches = [(x.to(ctx.device), y.to(ctx.device)) for _, (x, y) in zip(range(windows), batches)]
    reached: list[torch.Tensor] = []
    handle = model.rnn.register_forward_hook(lambda _m, _i, out: reached.append(out[0].detach()))
    sequences = {
        "train from zero": ["train"] * windows,
        "eval 1, then train": ["eval"] + ["train"] * (windows - 1),
        "eval 2, then train": ["eval"] * 2 + ["train"] * (windows - 2),
    }
    results = []
    for name, modes in sequences.items():
        for draw in range(draws):
            torch.manual_seed(draw)
            hidden, losses, largest = None, [], []
            for (x, y), mode in zip(batches, modes):
                model.train(mode == "train")
                if hidden is not None and not all(torch.isfinite(h).all() for h in _states(hidden)):
                    losses.append(None)  # the carried state is no longer finite: the rest cannot run
                    largest.append(None)
                    continue
                reached.clear()
                with torch.no_grad():
                    logits, hidden = _forward(model, x, hidden, task.stateful)
                loss, _, _ = loss_and_stats(logits, y, task.metric)
                out = reached[0]
                losses.append(_finite_or_none(float(loss)))
                largest.append(_finite_or_none(float(out[torch.isfinite(out)].abs().max())))
            results.append(
                {"sequence": name, "modes": modes, "dropout_seed": draw, "loss": losses, "hidden_max_abs": largest}
            )
    handle.remove()
    return {
        **run_provenance(run, run_dir),
        "seconds": round(time.perf_counter() - started, 3),
        "checkpoint": {"kind": "best", "epoch_after": epoch + 1, "global_step": state["global_step"]},
        "layers": stability_numbers(model),
        "results": results,
    }


def _states(hidden: Any) -> tuple[torch.Tensor, ...]:
    return tuple(hidden) if isinstance(hidden, (tuple, list)) else (hidden,)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--windows", type=int, default=4, help="windows from the epoch's start (default 4, >= 2)")
    parser.add_argument("--draws", type=int, default=3, help="dropout seeds per mode sequence (default 3)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, help="write the JSON here as well as to stdout")
    args = parser.parse_args(argv)
    if args.windows < 2 or args.draws < 1:
        parser.error("--windows must be >= 2 and --draws >= 1")
    result = probe(args.run_dir, args.windows, args.draws, args.device)
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    for r in result["results"]:
        print(f"{r['sequence']}, dropout seed {r['dropout_seed']}: losses {r['loss']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
