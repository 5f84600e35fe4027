"""The training loop: one experiment, from a validated config to a finished run directory.

    cfg = load_config("configs/smnist/lipschitz_euler_n128.toml", ["train.seed=1"])
    summary = train(cfg, "runs/smnist-euler/seed1")        # new run
    summary = train(resume_config("runs/smnist-euler/seed1"), "runs/smnist-euler/seed1", resume=True)

Per epoch: train on the task's batches (order fixed by seed and epoch), evaluate val and
test, record the stability numbers of Lipschitz/Antisymmetric cells, keep the
best-validation checkpoint and the last one. A checkpoint holds everything the run needs to
continue bit-for-bit (weights, optimizer, RNG states, position in the epoch, running sums,
the carried hidden state of stateful tasks). With ``train.ema_decay`` the run evaluates,
reports and saves as the checkpoint's weights an exponential moving average of the trained
weights (:class:`~lipschitz_rnn.train.ema.WeightAverage`); the trained weights travel in the
checkpoint's state, so resume stays exact and ``evaluate_run`` scores what the run scored.
The learning rate is a pure function of the epoch (step decay or cosine) and, in a warm-up
ramp, of the optimizer step, so there is no scheduler state beyond the position. A non-finite
loss or gradient norm stops the run before the optimizer step: the weights on disk stay the
last good ones. Under torchrun every process runs this same loop on its slice of the batch.

The first SIGTERM or SIGINT (a scheduler's notice, Ctrl-C) stops the run after the optimizer step
it is in: the loop writes the mid-epoch ``last`` checkpoint a periodic one
(``train.checkpoint_every_steps``) would be, logs where it stopped and the command that resumes
it, and raises :class:`TrainingInterrupted` (exit status 130 or 143), so ``--resume`` ends as the
uninterrupted run would have. A signal during evaluation stops the run at the end of that epoch,
whose checkpoint is then the stopping point; after the last epoch's training the run finishes. A
second signal acts as it would without the handlers (``KeyboardInterrupt``, termination). Under
torchrun each process's "stop" vote rides in the all-reduce every step makes already (one more
number per signal, no extra collective), so all processes stop after the same step, whichever
received the signal; at the end of an epoch one small all-reduce of the votes does the same.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import __version__
from ..data import SequenceTask, build_task
from ..models import SequenceClassifier, build_model, count_parameters, init_linear_maps_
from . import distributed
from .checkpoint import (
    RUN_FORMAT,
    CheckpointError,
    atomic_write_json,
    atomic_write_text,
    check_new_run_dir,
    check_run_dir,
    checkpoint_exists,
    load_checkpoint,
    read_json,
    save_checkpoint,
)
from .config import (
    Config,
    ConfigError,
    backend_option,
    check_registries,
    config_to_dict,
    load_config,
    parse_overrides,
    to_toml,
)
from .ema import WeightAverage
from .metrics import RunLog, TensorBoard, stability_numbers, stability_reports, write_metrics, write_plots
from .signals import StopSignals, TrainingInterrupted

__all__ = [
    "TrainingDiverged",
    "TrainingInterrupted",
    "evaluate",
    "evaluate_run",
    "learning_rate",
    "load_run",
    "restore_training_state",
    "resume_command",
    "resume_config",
    "run_provenance",
    "train",
]

#: keys a resumed run may change: they alter neither the arithmetic nor the data order (``train.epochs`` only
#: where the rate does not depend on it, and never below the epochs already run: see ``resume_config``)
RESUME_OVERRIDABLE = ("train.device", "train.epochs", "log.progress", "log.tensorboard", "log.plots", "log.stability")
#: higher is better for accuracy; lower for bits per character and mean squared error
HIGHER_IS_BETTER = {"accuracy": True, "bpc": False, "mse": False}


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


def train(
    cfg: Config,
    run_dir: Optional[Union[str, Path]] = None,
    *,
    resume: bool = False,
    command=None,
    stop_on_signals: bool = True,
) -> dict:
    """Train ``cfg`` into ``run_dir`` (default ``runs/<name>/seed<seed>-<time>``); returns the summary.

    With ``resume=True``, ``run_dir`` is an existing run continued from its last checkpoint
    (``cfg`` from :func:`resume_config`). Raises :class:`ConfigError`, ``RunDirError`` or
    ``CheckpointError`` before writing anything, and :class:`TrainingDiverged` on NaN/Inf.

    While it trains (called from the main thread, with ``stop_on_signals``), the first SIGTERM or
    SIGINT stops the run after the current optimizer step with a ``last`` checkpoint that
    ``resume=True`` continues exactly, and raises :class:`TrainingInterrupted`, a ``SystemExit``
    with code 128 + the signal's number (see the module's docstring). A second signal acts as it
    would have without them. The previous handlers are back in place when this returns or raises.
    """
    ctx = distributed.setup(cfg.train.device)
    stop = StopSignals()
    try:
        try:
            summary = _train(cfg, run_dir, resume, command, ctx, stop, stop_on_signals)
        finally:
            stop.restore()  # before leaving the group: a signal while waiting there acts as it did before
    except TrainingInterrupted:
        # every process stopped after the same step: none leaves before process 0 has written the checkpoint
        # (torchrun takes one worker's exit as the group's failure and terminates the others)
        distributed.teardown(ctx, wait_for_peers=True)
        raise
    except BaseException:
        distributed.teardown(ctx)  # the other processes may never get here: no barrier
        raise
    distributed.teardown(ctx, wait_for_peers=True)
    return summary


def _train(
    cfg: Config, run_dir, resume: bool, command, ctx: distributed.Context, stop: StopSignals, stop_on_signals: bool
) -> dict:
    tc = cfg.train
    check_registries(cfg)
    for key in ("batch_size", "eval_batch_size"):  # both are global batches, split evenly over the processes
        if getattr(tc, key) % ctx.world_size:
            raise ConfigError(f"train.{key}: {getattr(tc, key)} is not divisible by the {ctx.world_size} processes")

    # -- where the run lives; every check passes before anything is written ------------------
    saved = None
    if resume:
        run_dir = Path(run_dir)
        meta = check_run_dir(run_dir)
        if checkpoint_exists(run_dir / "checkpoints" / "last"):
            saved = load_checkpoint(run_dir / "checkpoints" / "last")
            done = saved[1]["epoch"]
            if tc.epochs < done:  # the config would claim fewer epochs than metrics.jsonl and summary.json hold
                raise ConfigError(f"train.epochs: the run has completed {done} epochs; resume with at least {done}")
    else:
        run_dir = Path(run_dir) if run_dir is not None else _default_run_dir(cfg)
        if ctx.is_main:
            check_new_run_dir(run_dir)
    main = ctx.is_main

    # -- data, model, optimizer ----------------------------------------------------------------
    try:
        task = build_task(cfg.task.name, **cfg.task.options)
    except TypeError as exc:  # an option of the wrong type (task.train_subset=1.5): the config's fault
        raise ConfigError(f"[task] {cfg.task.name!r}: {exc}") from None
    task.batch_device = ctx.device  # tasks that synthesise big inputs build them there
    metric = task.metric
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"task {task.name!r}: unknown metric {metric!r}; expected one of {list(HIGHER_IS_BETTER)}")
    has_val = _has_split(task, "val")
    seed_everything(tc.seed)
    model = build_model_for_task(cfg, task).to(ctx.device)
    optimizer = _make_optimizer(model, cfg)
    average = WeightAverage(model, tc.ema_decay) if tc.ema_decay else None
    steps_per_epoch = task.num_batches("train", tc.batch_size)
    if tc.limit_train_batches:
        steps_per_epoch = min(steps_per_epoch, tc.limit_train_batches)

    # -- training position: fresh, or restored from the last checkpoint --------------------------
    first_epoch, start_step, global_step = 0, 0, 0
    best: dict[str, Any] = {"epoch": None, "val": None, "test": None}
    history: list[dict[str, Any]] = []
    running = _fresh_running()
    hidden = None
    if saved is not None:
        weights, state = saved
        hidden = restore_training_state(model, optimizer, state, ctx, weights=weights, average=average, where=run_dir)
        first_epoch, start_step, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        best, history = state["best"], state["history"]
        running = {**_fresh_running(), **state["running"]}  # checkpoints of earlier versions lack the norms

    # -- the run directory (process 0 writes) ----------------------------------------------------
    log = RunLog(run_dir / "train.log" if main else None, echo=main)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            run_dir / "config.toml", to_toml(cfg, header=f"Resolved config (lipschitz-rnn {__version__})")
        )
        command = list(sys.argv) if command is None else list(command)
        if resume:
            meta.setdefault("resumes", []).append(
                {"time": _now(), "command": command, "epoch": first_epoch, "step_in_epoch": start_step}
            )
        else:
            meta = _meta(cfg, task, model, ctx, command)
            if cfg.log.stability:
                atomic_write_json(run_dir / "stability_start.json", _reports_dict(model))
        atomic_write_json(run_dir / "meta.json", meta)
        write_metrics(run_dir / "metrics.jsonl", history)
        where = f"resumed at epoch {first_epoch + 1}, step {start_step}" if resume else "new run"
        log(
            f"{cfg.experiment.name}: {where} in {run_dir}\n"
            f"  task {task.name} ({task.source}), metric {metric}, {steps_per_epoch} steps/epoch\n"
            f"  model {cfg.model.name} N={cfg.model.hidden_size}, {count_parameters(model):,} parameters "
            f"({count_parameters(model, free=True):,} free)\n"
            f"  device {ctx.device} x{ctx.world_size}, seed {tc.seed}"
        )
    tensorboard = TensorBoard(
        run_dir / "tensorboard" if main and cfg.log.tensorboard else None, purge_step=first_epoch + 1
    )
    ddp_model = distributed.wrap(model, ctx)
    ranks = {"rank": ctx.rank, "world_size": ctx.world_size}
    params = [p for p in model.parameters() if p.requires_grad]

    def scored_model() -> nn.Module:
        """The model that is evaluated and whose weights the checkpoints hold."""
        return model if average is None else average.synced(model)

    def checkpoint_state(next_epoch: int, next_step: int) -> dict[str, Any]:
        return {
            "epoch": next_epoch,
            "step_in_epoch": next_step,
            "global_step": global_step,
            "optimizer": optimizer.state_dict(),
            "best": best,
            "history": history,
            "running": dict(running),
            "hidden": distributed.gather_state(hidden, ctx),  # every process takes part
            "rng": _rng_state(ctx.device),
            # with a weight average the weights file holds the average; these continue the training
            "trained_weights": None if average is None else model.state_dict(),
        }

    def interrupted(signum: int, epoch: int, next_step: int) -> TrainingInterrupted:
        """Log where the run stopped (its checkpoint is written) and how to resume; the exception to raise."""
        name = signal.Signals(signum).name
        if next_step == 0:
            where = f"after epoch {epoch} (global step {global_step})"
        elif next_step >= steps_per_epoch:
            where = f"after the last step of epoch {epoch + 1} (global step {global_step}), before its evaluation"
        else:
            where = f"at epoch {epoch + 1}, step {next_step} of {steps_per_epoch} (global step {global_step})"
        resume_with = resume_command(run_dir, ctx)
        message = (
            f"stopped by {name} {where}; checkpoint written to {run_dir / 'checkpoints' / 'last'}\n"
            f"  resume with: {resume_with}"
        )
        tensorboard.close()
        if main:
            log(message)
        return TrainingInterrupted(
            message,
            signum=signum,
            run_dir=run_dir,
            epoch=epoch,
            step_in_epoch=next_step,
            global_step=global_step,
            resume_command=resume_with,
        )

    if stop_on_signals:
        stop.install()  # here, not earlier: a signal while the data loads still ends the process at once

    # -- epochs ------------------------------------------------------------------------------------
    for epoch in range(first_epoch, tc.epochs):
        # a run stopped after an epoch's last step resumes with none of it left: the epoch's record keeps the
        # rate of that last step (in a warm-up ramp, the rate of the step after it would differ)
        lr = learning_rate(cfg, epoch, global_step - 1 if start_step >= steps_per_epoch > 0 else global_step)
        _set_lr(optimizer, lr)
        model.train()
        t0 = time.perf_counter() - running["elapsed_s"]
        bar = _progress_bar(steps_per_epoch, start_step, f"epoch {epoch + 1}/{tc.epochs}", main and cfg.log.progress)
        batches = task.batches("train", tc.batch_size, epoch=epoch, seed=tc.seed, start=start_step, **ranks)
        for step, (x, y) in enumerate(batches, start=start_step):
            if step >= steps_per_epoch:
                break
            if global_step <= tc.warmup_steps:  # in the warm-up ramp, and the first step after it: a rate per step
                lr = learning_rate(cfg, epoch, global_step)
                _set_lr(optimizer, lr)
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            if ctx.distributed:  # dropout: each process its own masks, a function of the step (so resume is exact)
                torch.manual_seed(process_step_seed(tc.seed, global_step, ctx.rank))
            logits, hidden = _forward(ddp_model, x, hidden, task.stateful)
            loss, correct, count = loss_and_stats(logits, y, metric)
            global_count = count
            if ctx.distributed:
                # DDP averages the processes' gradients; the last batch of an epoch may split unevenly (or leave
                # a process none), so each process's mean is weighted by its share of the global batch
                global_count = int(distributed.all_reduce_sum(torch.tensor([count], device=ctx.device), ctx))
                share = count * ctx.world_size / global_count
                loss_for_grad = loss * share if count else logits.sum() * 0.0  # no samples: zero gradients
            else:
                loss_for_grad = loss
            optimizer.zero_grad(set_to_none=True)
            loss_for_grad.backward()
            if tc.clip_grad_norm:
                grad_norm = nn.utils.clip_grad_norm_(params, tc.clip_grad_norm)
            else:
                grad_norm = _grad_norm(params)
            # one sync per step: summed over processes, so all of them agree on divergence, and on stopping: the
            # processes' votes to stop (one number per signal, see StopSignals) ride in the same all-reduce
            dtype = ctx.sum_dtype
            local_loss_sum = loss.detach().to(dtype) * count if count else loss.new_zeros((), dtype=dtype)
            stacked = torch.stack([local_loss_sum, grad_norm.to(dtype), correct.to(dtype)])
            reduced = distributed.all_reduce_sum(torch.cat([stacked, stop.counts(ctx.device, dtype)]), ctx).tolist()
            loss_sum_total, norm_total, correct_total = reduced[:3]
            stop_signal = stop.agreed(reduced[3:])  # the same on every process
            if not (math.isfinite(loss_sum_total) and math.isfinite(norm_total)):
                if bar is not None:
                    bar.close()
                loss_total = loss_sum_total / max(global_count, 1)
                raise _diverged(cfg, run_dir, log, main, epoch, step, loss_total, norm_total, history, best)
            optimizer.step()
            if average is not None:
                average.update(model)
            global_step += 1
            running["loss_sum"] += loss_sum_total
            running["correct"] += correct_total
            running["count"] += global_count
            # the norm before clipping, the same on every process after the all-reduce of the gradients
            norm = norm_total / ctx.world_size
            running["grad_norm_sum"] += norm
            running["grad_norm_max"] = max(running["grad_norm_max"], norm)
            running["steps"] += 1
            if bar is not None:
                shown = _split_record(running, metric)
                bar.set_postfix(loss=f"{shown['loss']:.4f}", **{metric: f"{shown[metric]:.4g}"}, refresh=False)
                bar.update()
            every = tc.checkpoint_every_steps
            periodic = bool(every and global_step % every == 0 and step + 1 < steps_per_epoch)
            if periodic or stop_signal is not None:
                # a stop writes the checkpoint a periodic one is (after an epoch's last step too: the resumed
                # run then starts with that epoch's evaluation)
                running["elapsed_s"] = time.perf_counter() - t0
                state = checkpoint_state(epoch, step + 1)  # every process: it gathers a carried hidden state
                if main:
                    save_checkpoint(run_dir / "checkpoints" / "last", scored_model().state_dict(), state)
            if stop_signal is not None:
                if bar is not None:
                    bar.close()
                raise interrupted(stop_signal, epoch, step + 1)
        if bar is not None:
            bar.close()
        _sync(ctx.device)
        train_time = time.perf_counter() - t0

        train_record = _split_record(running, metric)
        if running["steps"]:  # a checkpoint of an earlier version resumes without them: the epoch's remaining steps
            train_record["grad_norm_mean"] = running["grad_norm_sum"] / running["steps"]
            train_record["grad_norm_max"] = running["grad_norm_max"]
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train": train_record}
        scored = scored_model()
        for split in ("val", "test") if has_val else ("test",):
            record[split] = evaluate(scored, task, split, cfg.train.eval_batch_size, ctx, tc.limit_eval_batches)
        record.update(
            steps=global_step,
            epoch_time_s=time.perf_counter() - t0,
            train_time_s=train_time,
            ms_per_step=1000.0 * train_time / max(steps_per_epoch, 1),
        )
        numbers = stability_numbers(scored) if main and cfg.log.stability else {}
        if numbers:
            record["stability"] = numbers
        history.append(record)
        improved = has_val and _better(record["val"][metric], best["val"], HIGHER_IS_BETTER[metric])
        if improved:
            best = {"epoch": epoch + 1, "val": record["val"][metric], "test": record["test"][metric]}

        running = _fresh_running()
        hidden, start_step = None, 0
        state = checkpoint_state(epoch + 1, 0)
        if main:
            if improved:
                save_checkpoint(run_dir / "checkpoints" / "best", scored.state_dict(), _best_state(state))
            save_checkpoint(run_dir / "checkpoints" / "last", scored.state_dict(), state)
            write_metrics(run_dir / "metrics.jsonl", history)
            tensorboard.write(record)
            log(_epoch_line(record, metric, tc.epochs, improved))
        if epoch + 1 < tc.epochs:
            # a signal during the evaluation or the checkpoint: this epoch's checkpoint is the stopping point; the
            # votes are summed over the processes (one small all-reduce per epoch), so all of them stop here
            votes = distributed.all_reduce_sum(stop.counts(ctx.device, ctx.sum_dtype).clone(), ctx)
            stop_signal = stop.agreed(votes.tolist())
            if stop_signal is not None:
                raise interrupted(stop_signal, epoch + 1, 0)
    tensorboard.close()

    # -- the end: stability after training, plots, summary -------------------------------------------
    summary = _summary(cfg, task, model, ctx, history, best, metric, status="completed")
    if main:
        end = _reports_dict(scored_model()) if cfg.log.stability else {}
        if end:
            atomic_write_json(run_dir / "stability_end.json", end)
        if cfg.log.plots:
            start = read_json(run_dir / "stability_start.json") if (run_dir / "stability_start.json").exists() else {}
            write_plots(run_dir / "plots", history, metric, start, end)
        summary["git_commit"] = meta.get("git_commit")
        atomic_write_json(run_dir / "summary.json", summary)
        log(_summary_lines(summary, run_dir))
    return summary


# -- pieces of the loop ------------------------------------------------------------------------


def build_model_for_task(cfg: Config, task: SequenceTask) -> SequenceClassifier:
    """The configured recurrent layer (batch-first) with a linear readout sized for ``task``."""
    rnn = build_model(
        cfg.model.name,
        task.input_size,
        cfg.model.hidden_size,
        cfg.model.num_layers,
        batch_first=True,
        **backend_option(cfg),
        **cfg.model.options,
    )
    if task.causal and getattr(rnn, "bidirectional", False):
        raise ValueError(
            f"model.bidirectional = true on the {task.name!r} task: its step t's target is a later input "
            "(next-token prediction), which the reverse direction would read; train it unidirectional"
        )
    model = SequenceClassifier(
        rnn,
        task.num_classes,
        readout=task.readout,
        dropout=cfg.model.readout_dropout,
        input_dropout=cfg.model.input_dropout,
    )
    return init_linear_maps_(model, cfg.model.linear_init)


def learning_rate(cfg: Config, epoch: int, global_step: Optional[int] = None) -> float:
    """The learning rate of (0-based) ``epoch`` and optimizer step ``global_step`` (0-based, over the whole run).

    A pure function of the two, so resume needs no scheduler state.
    ``lr_schedule = "step"``: ``lr * lr_decay**k``, k = milestones already passed; with
    ``lr_milestones = [90]``, epochs 1-90 at ``lr`` and epochs 91-100 at ``lr * lr_decay``.
    ``lr_schedule = "cosine"``: ``lr_min + (lr - lr_min) * (1 + cos(pi * epoch / epochs)) / 2``,
    ``lr`` in the first epoch, falling to about ``lr_min`` in the last.
    ``warmup_steps = K > 0``: step g runs at ``min(1, (g + 1) / K)`` times that rate, a linear ramp
    from ``lr / K`` to the full rate at step K - 1 (``global_step=None``: the epoch's rate, no ramp).
    With ``lr = 0.002`` and ``warmup_steps = 1000``: step 0 at 2e-06, step 499 at 0.001, step 999 on at 0.002.
    """
    t = cfg.train
    if t.lr_schedule == "cosine":
        rate = t.lr_min + (t.lr - t.lr_min) * 0.5 * (1.0 + math.cos(math.pi * epoch / t.epochs))
    else:
        rate = t.lr * t.lr_decay ** sum(epoch >= m for m in t.lr_milestones)
    if global_step is not None and global_step < t.warmup_steps:
        rate *= (global_step + 1) / t.warmup_steps
    return rate


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def restore_training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    ctx: distributed.Context,
    *,
    weights: Optional[dict[str, Tensor]] = None,
    average: Optional[WeightAverage] = None,
    where: Union[str, Path] = "checkpoint",
) -> Any:
    """Put a ``last`` checkpoint back into a freshly built model and optimizer, as ``--resume`` does.

    Loads ``weights`` (None: the model holds them already, as ``load_run``'s does; with a weight
    average they are the average, and the trained weights come from the state), the optimizer's
    state and every RNG state. Returns this process's slice of the carried hidden state (None for
    stateless tasks). The position (epoch, step, running sums) is the caller's to take from ``state``;
    ``where`` names the run in errors.
    """
    if average is not None:
        if state.get("trained_weights") is None or weights is None:
            raise CheckpointError(f"{where}: train.ema_decay is set but the checkpoint holds no trained weights")
        average.load_state_dict(weights)
        weights = state["trained_weights"]
    if weights is not None:
        model.load_state_dict(weights)
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"], ctx.device)
    return distributed.slice_state(state["hidden"], ctx)


def loss_and_stats(logits: Tensor, y: Tensor, metric: str) -> tuple[Tensor, Tensor, int]:
    """``(mean loss, number correct, count)`` for a batch; count is samples, or tokens for per-step targets."""
    if metric == "mse":
        prediction = logits.squeeze(-1) if logits.shape[-1] == 1 else logits
        if prediction.shape != y.shape:
            raise ValueError(
                f"mse targets must have the prediction's shape {tuple(prediction.shape)}, got {tuple(y.shape)}"
            )
        return F.mse_loss(prediction, y), logits.new_zeros(()), y.numel()
    flat = logits.reshape(-1, logits.shape[-1])
    targets = y.reshape(-1)
    loss = F.cross_entropy(flat, targets)
    correct = (flat.argmax(dim=-1) == targets).sum().to(logits.dtype)
    return loss, correct, targets.numel()


@torch.no_grad()
def evaluate(
    model: nn.Module, task: SequenceTask, split: str, batch_size: int, ctx: distributed.Context, limit: int = 0
) -> dict[str, float]:
    """Loss and metric of ``model`` on ``split`` (each process takes its slice; sums are reduced)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=ctx.sum_dtype, device=ctx.device)  # loss * count, correct, count
    hidden = None
    # this process's slice of every batch, or of `limit` batches (a fixed subset of the split)
    batches = task.eval_batches(split, batch_size, limit=limit, rank=ctx.rank, world_size=ctx.world_size)
    for x, y in batches:
        if x.shape[0] == 0:
            continue
        logits, hidden = _forward(model, x.to(ctx.device), hidden, task.stateful)
        loss, correct, count = loss_and_stats(logits, y.to(ctx.device), task.metric)
        sums += torch.stack([loss.to(sums.dtype) * count, correct.to(sums.dtype), sums.new_tensor(count)])
    distributed.all_reduce_sum(sums, ctx)
    model.train(was_training)
    loss_sum, correct, count = sums.tolist()
    return _split_record({"loss_sum": loss_sum, "correct": correct, "count": count}, task.metric)


def _forward(model: nn.Module, x: Tensor, hidden: Any, stateful: bool) -> tuple[Tensor, Any]:
    """Logits; stateful tasks carry the hidden state (detached: truncated BPTT) to the next batch."""
    if not stateful:
        return model(x), None
    if hidden is not None and _batch_of(hidden) != x.shape[0]:
        hidden = None  # a short final batch starts from zeros
    logits, hidden = model(x, hidden, return_state=True)
    return logits, _detach(hidden)


def _batch_of(state: Any) -> int:
    return _batch_of(state[0]) if isinstance(state, (tuple, list)) else state.shape[1]


def _detach(state: Any) -> Any:
    if isinstance(state, (tuple, list)):
        return tuple(_detach(s) for s in state)
    return state.detach()


def _grad_norm(params: Sequence[Tensor]) -> Tensor:
    norms = [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def _fresh_running() -> dict[str, float]:
    """Sums over the steps of one epoch so far; saved in every checkpoint so that a resumed epoch adds up the same."""
    return {
        "loss_sum": 0.0,
        "correct": 0.0,
        "count": 0.0,
        "elapsed_s": 0.0,
        # the global gradient norm before clipping: mean and largest over the epoch's steps, which show the
        # spikes that precede a collapse and the scale a clipping threshold should have
        "grad_norm_sum": 0.0,
        "grad_norm_max": 0.0,
        "steps": 0,
    }


def _split_record(sums: dict[str, float], metric: str) -> dict[str, float]:
    """Mean loss, the metric, and how many samples (tokens, for per-step targets) they average."""
    count = max(sums["count"], 1.0)
    loss = sums["loss_sum"] / count
    if metric == "accuracy":
        value = 100.0 * sums["correct"] / count
    else:
        value = loss / math.log(2) if metric == "bpc" else loss
    return {"loss": loss, metric: value, "samples": int(sums["count"])}


def _better(value: float, best: Optional[float], higher: bool) -> bool:
    if not math.isfinite(value):
        return False
    return best is None or (value > best if higher else value < best)


def _has_split(task: SequenceTask, split: str) -> bool:
    if task.sizes:
        return task.sizes.get(split, 0) > 0
    try:
        return task.num_batches(split, 1) > 0
    except (KeyError, ValueError):
        return False


#: ``train.optimizer`` name -> factory(parameters, train config); a new optimizer is one entry
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, tc: torch.optim.Adam(params, lr=tc.lr, weight_decay=tc.weight_decay),
    "sgd": lambda params, tc: torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay),
    # the AntisymmetricRNN paper trained with SGD-momentum or Adagrad [ASR]
    "adagrad": lambda params, tc: torch.optim.Adagrad(params, lr=tc.lr, weight_decay=tc.weight_decay),
    # a common optimizer of LSTM baselines on pixel MNIST (torch's defaults: alpha 0.99, no momentum)
    "rmsprop": lambda params, tc: torch.optim.RMSprop(params, lr=tc.lr, weight_decay=tc.weight_decay),
}


def _make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.train.optimizer](model.parameters(), cfg.train)


def _diverged(cfg, run_dir: Path, log, main: bool, epoch: int, step: int, loss: float, norm: float, history, best):
    """Log and record the divergence; returns the exception to raise."""
    message = (
        f"training diverged at epoch {epoch + 1}, step {step + 1}: loss {loss}, gradient norm {norm}. "
        "Stopped before the optimizer step; the checkpoints on disk are the last good ones."
    )
    if main:
        log(message)
        atomic_write_json(
            run_dir / "summary.json",
            {
                "status": "diverged",
                "experiment": cfg.experiment.name,
                "seed": cfg.train.seed,
                "diverged_at": {"epoch": epoch + 1, "step": step + 1},
                "message": message,
                "epochs_completed": len(history),
                "best": best,
            },
        )
    return TrainingDiverged(message)


#: what the best-validation checkpoint keeps of the training state: it is for evaluation, never resumed
#: from, so it leaves out the optimizer's moments (twice the weights under Adam), the RNG, history and state
BEST_STATE_KEYS = ("epoch", "global_step", "best")


def _best_state(state: dict[str, Any]) -> dict[str, Any]:
    return {key: state[key] for key in BEST_STATE_KEYS}


def _progress_bar(total: int, initial: int, description: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=description, unit="step", leave=False, dynamic_ncols=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _epoch_line(record: dict[str, Any], metric: str, epochs: int, improved: bool) -> str:
    def fmt(split: str) -> str:
        r = record[split]
        value = f"{r[metric]:.2f}%" if metric == "accuracy" else f"{r[metric]:.4f}"
        return f"{split} loss {r['loss']:.4f} {metric} {value}"

    parts = [f"epoch {record['epoch']}/{epochs}"] + [fmt(s) for s in ("train", "val", "test") if s in record]
    parts.append(f"lr {record['lr']:.3g}")
    if "grad_norm_mean" in record["train"]:
        parts.append(f"grad norm {record['train']['grad_norm_mean']:.3g} (max {record['train']['grad_norm_max']:.3g})")
    parts.append(f"{record['epoch_time_s']:.1f} s ({record['ms_per_step']:.1f} ms/step)")
    if "stability" in record:
        s = record["stability"]["layer0"]
        parts.append(
            f"max Re λ(A) {s['max_re_eig_A']:+.4f}, max Re λ(W) {s['max_re_eig_W']:+.4f}, C1 {s['c1_margin']:+.4f}"
            + (f", max |R(ελ(A))| {s['max_abs_R_eps_lambda_D0']:.4f}" if "max_abs_R_eps_lambda_D0" in s else "")
        )
    return " | ".join(parts) + ("  *best*" if improved else "")


# -- run metadata and summary --------------------------------------------------------------------


def _default_run_dir(cfg: Config) -> Path:
    base = Path("runs") / cfg.experiment.name / f"seed{cfg.train.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def git_commit() -> tuple[Optional[str], Optional[bool]]:
    """(commit, dirty) of the checkout holding this package, or (None, None) outside git.

    An exported tree (a copy on a remote machine, with no ``.git`` or a stale one) names its
    commit in the environment variable ``LIPSCHITZ_RNN_GIT_COMMIT``, which then wins
    (dirtiness unknown).
    """
    where = Path(__file__).resolve().parent
    exported = os.environ.get("LIPSCHITZ_RNN_GIT_COMMIT", "").strip()
    if exported:  # named by whoever exported the tree: a stale .git copied with it would mislead
        return exported, None
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return (exported or None), None
    return commit or None, bool(status.strip())


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _model_method(model: nn.Module) -> Optional[str]:
    cells = getattr(model.rnn, "cells", None)
    method = getattr(cells[0], "method", None) if cells else None
    return getattr(method, "name", method)


def _meta(cfg: Config, task: SequenceTask, model: SequenceClassifier, ctx, command) -> dict[str, Any]:
    commit, dirty = git_commit()
    device_name = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else platform.processor()
    return {
        "format": RUN_FORMAT[0],
        "format_version": RUN_FORMAT[1],
        "package_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": str(ctx.device),
        "device_name": device_name,
        "world_size": ctx.world_size,
        "command": command,
        "created": _now(),
        "experiment": cfg.experiment.name,
        "config": config_to_dict(cfg),
        "data": _jsonable(
            {
                "task": task.name,
                "source": task.source,
                "info": task.info,
                "sizes": task.sizes,
                "input_size": task.input_size,
                "num_classes": task.num_classes,
                "seq_len": task.seq_len,
                "metric": task.metric,
                "readout": task.readout,
                "stateful": task.stateful,
            }
        ),
        "model": {
            "name": cfg.model.name,
            "hidden_size": cfg.model.hidden_size,
            "num_layers": cfg.model.num_layers,
            "method": _model_method(model),
            "params": count_parameters(model),
            "free_params": count_parameters(model, free=True),
        },
    }


def _reports_dict(model: nn.Module) -> dict[str, Any]:
    return {name: r.to_dict(include_eigenvalues=True) for name, r in stability_reports(model).items()}


def _summary(cfg, task, model, ctx, history, best, metric, status) -> dict[str, Any]:
    last = history[-1] if history else {}
    epoch_times = [r["epoch_time_s"] for r in history]
    steps_ms = [r["ms_per_step"] for r in history]
    return {
        "status": status,
        "experiment": cfg.experiment.name,
        "paper": cfg.experiment.paper,
        "task": task.name,
        "data_source": task.source,
        "model": cfg.model.name,
        "method": _model_method(model),
        "hidden_size": cfg.model.hidden_size,
        "params": count_parameters(model),
        "free_params": count_parameters(model, free=True),  # skew-only matrices count N(N - 1)/2 (the ASR papers' way)
        "seed": cfg.train.seed,
        "device": str(ctx.device),
        "world_size": ctx.world_size,
        "metric": metric,
        "higher_is_better": HIGHER_IS_BETTER[metric],
        "epochs": len(history),
        # the two test numbers: at the last epoch, and at the epoch of best validation
        "test_last": last.get("test", {}).get(metric),
        "test_best_val": best["test"],
        "best_epoch": best["epoch"],
        "val_best": best["val"],
        "val_last": last.get("val", {}).get(metric),
        "total_time_s": sum(epoch_times),
        "time_per_epoch_s": sum(epoch_times) / len(epoch_times) if epoch_times else None,
        "ms_per_step": sum(steps_ms) / len(steps_ms) if steps_ms else None,
    }


def _summary_lines(summary: dict[str, Any], run_dir: Path) -> str:
    metric = summary["metric"]
    unit = "%" if metric == "accuracy" else ""

    def fmt(value):
        return "n/a" if value is None else f"{value:.4g}{unit}"

    return (
        f"done: {summary['epochs']} epoch{'s' if summary['epochs'] != 1 else ''}, {summary['total_time_s']:.1f} s "
        f"({summary['time_per_epoch_s'] or 0:.1f} s/epoch, {summary['ms_per_step'] or 0:.1f} ms/step)\n"
        f"  test {metric}: {fmt(summary['test_best_val'])} at the best-validation epoch ({summary['best_epoch']}), "
        f"{fmt(summary['test_last'])} at the last epoch\n"
        f"  run directory: {run_dir}"
    )


# -- RNG ---------------------------------------------------------------------------------------------


def process_step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one process at one optimizer step of a data-parallel run.

    Every process starts from the run's seed (identical initial weights), so without this the processes would
    draw identical dropout masks for their different samples. A pure function of (seed, step, rank), so a
    resumed run draws what the uninterrupted one drew; one process keeps the run's single RNG stream.
    """
    digest = hashlib.sha256(f"lipschitz-rnn/dropout/{seed}/{step}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's (when installed) and torch's RNGs (CPU and every CUDA device)."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)  # noqa: NPY002  (the legacy global RNG is what third-party code draws from)
    except ImportError:
        pass
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
        state["numpy"] = (name, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached)
    except ImportError:
        pass
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, cached))  # noqa: NPY002
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


# -- resume and eval -----------------------------------------------------------------------------


def resume_command(run_dir: Union[str, Path], ctx: distributed.Context) -> str:
    """The command that continues the run in ``run_dir`` with as many processes as ``ctx`` has."""
    target = shlex.quote(str(run_dir))
    if not ctx.distributed:
        return f"lipschitz-rnn train --resume {target}"
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
    nodes = max(ctx.world_size // max(per_node, 1), 1)
    launch = "torchrun" + (f" --nnodes={nodes}" if nodes > 1 else "") + f" --nproc_per_node={per_node}"
    command = f"{launch} -m lipschitz_rnn train --resume {target}"
    return command + (" (and this launch's rendezvous options)" if nodes > 1 else "")


def resume_config(run_dir: Union[str, Path], overrides: Sequence[str] = ()) -> Config:
    """The config of an existing run, with the few overrides a resumed run may take."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    for section, key, _ in parse_overrides(overrides):
        if f"{section}.{key}" not in RESUME_OVERRIDABLE:
            raise ConfigError(
                f"{section}.{key}: cannot change when resuming (only {', '.join(RESUME_OVERRIDABLE)}); "
                "start a new run instead"
            )
    recorded = load_config(run_dir / "config.toml")
    cfg = load_config(run_dir / "config.toml", overrides)
    if cfg.train.epochs != recorded.train.epochs and cfg.train.lr_schedule == "cosine":
        # the cosine rate of every epoch depends on the length: the epochs already run would not be those
        # of a run of the new length, yet config.toml would claim they were
        raise ConfigError(
            f"train.epochs: cannot change when resuming a run with lr_schedule = 'cosine' (the rate of every "
            f"epoch depends on it; the run has {recorded.train.epochs}); start a new run instead"
        )
    return cfg


def load_run(run_dir: Union[str, Path], checkpoint: str = "best", device: str = "auto") -> dict[str, Any]:
    """A run's config, task and model with its ``best`` or ``last`` weights: ``{cfg, task, model, state, ctx}``.

    Checks the run directory's format and loads the checkpoint without executing code.
    """
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    cfg = load_config(run_dir / "config.toml")
    check_registries(cfg)
    path = run_dir / "checkpoints" / checkpoint
    if not checkpoint_exists(path):
        hint = (
            " (a run has a 'best' once an epoch has been scored on a validation split; use --checkpoint last)"
            if checkpoint == "best"
            else ""
        )
        raise CheckpointError(f"no checkpoint at {path}{hint}")
    weights, state = load_checkpoint(path)
    ctx = distributed.Context(0, 1, 0, distributed.resolve_device(device))
    task = build_task(cfg.task.name, **cfg.task.options)
    task.batch_device = ctx.device
    model = build_model_for_task(cfg, task)
    model.load_state_dict(weights)
    model.to(ctx.device)
    return {"cfg": cfg, "task": task, "model": model, "state": state, "ctx": ctx}


def run_provenance(run: dict[str, Any], run_dir: Union[str, Path]) -> dict[str, Any]:
    """What a diagnostic of a loaded run (``load_run``'s dict) ran on: the run, its config, the device and commits.

    For the JSON of scripts that probe a run (``scripts/replay_step.py``, ``scripts/window_start_probe.py``).
    """
    cfg, ctx = run["cfg"], run["ctx"]
    return {
        "run_dir": str(run_dir),
        "experiment": cfg.experiment.name,
        "seed": cfg.train.seed,
        "device": str(ctx.device),
        "device_name": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
        "git_commit": git_commit()[0],
        "run_git_commit": read_json(Path(run_dir) / "meta.json").get("git_commit"),
        "config": config_to_dict(cfg),
    }


def evaluate_run(
    run_dir: Union[str, Path], checkpoint: str = "best", split: str = "test", device: str = "auto"
) -> dict[str, Any]:
    """Evaluate a run's ``best`` or ``last`` checkpoint on ``split``; writes nothing."""
    if split not in ("test", "val", "train"):
        raise ValueError(f"split must be 'test', 'val' or 'train', got {split!r}")
    run = load_run(run_dir, checkpoint, device)
    cfg, task = run["cfg"], run["task"]
    result = evaluate(run["model"], task, split, cfg.train.eval_batch_size, run["ctx"], cfg.train.limit_eval_batches)
    return {
        "run_dir": str(run_dir),
        "experiment": cfg.experiment.name,
        "checkpoint": checkpoint,
        "epoch": run["state"]["epoch"],
        "split": split,
        "metric": task.metric,
        "limit_eval_batches": cfg.train.limit_eval_batches,
        **result,
    }
