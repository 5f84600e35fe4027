"""Replay the next training step of a run from its last checkpoint, instrumented; writes nothing in the run.

    python scripts/replay_step.py runs/ptb_char_.../seed1 --output replay.json

A run that diverged stopped before the optimizer step, and its last checkpoint (with
``train.checkpoint_every_steps``, a few steps before) holds the weights, optimizer state, RNG states
and carried hidden state that make the failing step happen again. This script restores them as
``lipschitz-rnn train --resume`` does, replays steps until the loss or gradient norm is not finite
(at most ``--steps``), and reports for each step: the largest carried and reached hidden state (and
the first time step where it was not finite), the loss, the gradient norm of every parameter, and
the per-epoch stability numbers of each recurrent layer (``stability_numbers``: spectral abscissae,
‖A‖₂, ‖W‖₂, the explicit step's largest |R(ελ(A))|) before the step. The optimizer steps between
replayed steps, as in training. A run trained under torchrun is replayed on one process, with the
whole batch. ``--checkpoint best`` replays the step after the best epoch from its weights alone, and
``--mode eval`` replays with dropout off (see ``replay``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lipschitz_rnn.train.loop import (
    _forward,
    _make_optimizer,
    _set_lr,
    learning_rate,
    load_run,
    loss_and_stats,
    restore_training_state,
    run_provenance,
)
from lipschitz_rnn.train.metrics import stability_numbers


def _largest(t: torch.Tensor) -> float:
    return float(t.detach().abs().max()) if t.numel() else 0.0


def replay(
    run_dir: Path,
    steps: int = 1,
    device: str = "auto",
    dtype: str = "float32",
    checkpoint: str = "last",
    mode: str = "train",
) -> dict[str, Any]:
    """Replay up to ``steps`` training steps after a checkpoint; stop at the first non-finite one.

    ``dtype="float64"`` replays in double precision from the same state (dropout masks may then differ).
    ``checkpoint="best"`` replays the first step of the epoch after the best one from its weights alone: a
    best checkpoint holds no optimizer, RNG or carried state, so one step, from a zero hidden state, with
    dropout masks drawn after ``torch.manual_seed(train.seed)`` (not the run's). When the best epoch was the
    run's last good one, as when a run diverged at the first step of the next epoch, these are the weights
    that step saw. ``mode="eval"`` replays with dropout off (``model.eval()``), the loss and gradients still
    computed: beside a ``"train"`` replay it shows whether dropout's perturbation is what overflows.
    """
    if checkpoint not in ("last", "best") or mode not in ("train", "eval"):
        raise ValueError(
            f"checkpoint must be 'last' or 'best' and mode 'train' or 'eval', got {checkpoint!r}, {mode!r}"
        )
    if checkpoint == "best" and steps != 1:
        raise ValueError("a best checkpoint holds no optimizer state: it replays one step (steps=1)")
    started = time.perf_counter()
    run = load_run(run_dir, checkpoint, device)
    cfg, task, model, state, ctx = run["cfg"], run["task"], run["model"], run["state"], run["ctx"]
    if run["cfg"].train.ema_decay:
        raise SystemExit(f"{run_dir}: replay does not handle train.ema_decay runs")
    precision = {"float32": torch.float32, "float64": torch.float64}[dtype]
    model.to(precision)
    optimizer = _make_optimizer(model, cfg)
    if checkpoint == "last":
        # as --resume does; the optimizer's state_dict loading casts the moments to the parameters' dtype
        hidden = restore_training_state(model, optimizer, state, ctx, where=run_dir)
        epoch, start = state["epoch"], state["step_in_epoch"]
    else:
        torch.manual_seed(cfg.train.seed)
        hidden, epoch, start = None, state["epoch"], 0  # the epoch after the best one, from its start
    if hidden is not None:
        hidden = tuple(h.to(precision) for h in hidden) if isinstance(hidden, tuple) else hidden.to(precision)
    global_step = state["global_step"]
    reached: list[torch.Tensor] = []
    handle = model.rnn.register_forward_hook(lambda _m, _i, out: reached.append(out[0].detach()))
    model.train(mode == "train")
    records = []
    batches = task.batches("train", cfg.train.batch_size, epoch=epoch, seed=cfg.train.seed, start=start)
    for step, (x, y) in enumerate(batches, start=start):
        if len(records) >= steps:
            break
        lr = learning_rate(cfg, epoch, global_step + len(records))  # the rate the loop gives this step
        _set_lr(optimizer, lr)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step + 1,
            "lr": lr,
            "layers_before": stability_numbers(model),
        }
        x, y = x.to(ctx.device), y.to(ctx.device)
        if x.is_floating_point():
            x = x.to(precision)
        if hidden is not None:
            record["carried_hidden_max_abs"] = max(
                _largest(h) for h in (hidden if isinstance(hidden, tuple) else (hidden,))
            )
        reached.clear()
        logits, hidden = _forward(model, x, hidden, task.stateful)  # the loop's: carried, detached, reset
        outputs = reached[0].transpose(0, 1) if model.batch_first else reached[0]  # (T, B, N)
        finite_t = torch.isfinite(outputs).flatten(1).all(dim=1)
        record["hidden_max_abs"] = _largest(outputs[finite_t]) if bool(finite_t.any()) else None
        record["hidden_max_abs_by_time"] = [
            _largest(chunk[torch.isfinite(chunk)]) for chunk in outputs.split(max(1, outputs.shape[0] // 10))
        ]
        record["first_nonfinite_time_step"] = None if bool(finite_t.all()) else int((~finite_t).nonzero()[0])
        record["logits_max_abs"] = _largest(logits[torch.isfinite(logits)])
        record["logits_all_finite"] = bool(torch.isfinite(logits).all())
        loss, _, _ = loss_and_stats(logits, y, task.metric)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        record["loss"] = float(loss.detach())
        norms = {name: float(p.grad.norm()) for name, p in model.named_parameters() if p.grad is not None}
        record["grad_norm"] = math.sqrt(sum(v * v for v in norms.values()))
        record["grad_norm_by_parameter"] = norms
        records.append(record)
        if not (math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])):
            break
        optimizer.step()
    handle.remove()
    return {
        **run_provenance(run, run_dir),
        "dtype": dtype,
        "seconds": round(time.perf_counter() - started, 3),
        "checkpoint": {
            "kind": checkpoint,
            "epoch": epoch + 1,
            "step_in_epoch": start,
            "global_step": state["global_step"],
        },
        "mode": mode,
        "steps": records,
        "diverged": bool(records)
        and not (math.isfinite(records[-1]["loss"]) and math.isfinite(records[-1]["grad_norm"])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, default=1, help="replay at most this many steps (default 1)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument(
        "--checkpoint",
        choices=("last", "best"),
        default="last",
        help="best: the first step of the epoch after the best one, from its weights alone (one step)",
    )
    parser.add_argument("--mode", choices=("train", "eval"), default="train", help="eval: dropout off")
    parser.add_argument("--output", type=Path, help="write the JSON here as well as to stdout")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.checkpoint == "best" and args.steps != 1:
        parser.error("--checkpoint best replays one step (a best checkpoint holds no optimizer state)")
    result = replay(args.run_dir, args.steps, args.device, args.dtype, args.checkpoint, args.mode)
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    for r in result["steps"]:
        print(
            f"step {r['step']}: loss {r['loss']:.4g}, grad norm {r['grad_norm']:.4g}, "
            f"hidden max {r['hidden_max_abs']}, first non-finite t {r['first_nonfinite_time_step']}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
