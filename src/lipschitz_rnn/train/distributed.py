"""Devices and data-parallel training through PyTorch's own engine (DistributedDataParallel).

Launched by ``torchrun --nproc_per_node=K -m lipschitz_rnn train ...``, every process reads
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from the environment, joins a process group (NCCL on
CUDA, gloo on CPU) and trains on its slice of each global batch; DDP averages the gradients.
Run as a plain process, everything here is a no-op.

Example:
    >>> ctx = setup("cpu")
    >>> ctx.world_size, ctx.is_main, ctx.device
    (1, True, device(type='cpu'))
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Context", "env_rank", "resolve_device", "setup"]


@dataclass
class Context:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def sum_dtype(self) -> torch.dtype:
        """The dtype of the loop's running sums and reductions: float64, but float32 on Apple's MPS, which has none."""
        return torch.float32 if self.device.type == "mps" else torch.float64


def resolve_device(setting: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """``auto`` -> this process's GPU if there is one, else CPU; ``cuda`` -> ``cuda:LOCAL_RANK``."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {setting!r} requested but CUDA is not available (use device=cpu or auto)")
        if setting == "cuda":
            return torch.device("cuda", local_rank)
        if world_size > 1:
            raise ValueError(f"device {setting!r} names one GPU; with torchrun use device='cuda' or 'auto'")
        index = int(setting.split(":")[1])
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {setting!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return torch.device(setting)
    if setting == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but MPS is not available")
    return torch.device(setting)


def env_rank() -> int:
    """This process's rank as torchrun sets it (``RANK``); 0 for a single process."""
    return int(os.environ.get("RANK", "0"))


def setup(device_setting: str) -> Context:
    """The process's rank, world size and device; joins the process group under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = env_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_setting, local_rank, world_size)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # DistributedDataParallel imports torch._dynamo, which keeps references to what it finds
        # in torch's modules: imported after the group exists, it holds the group, which then
        # outlives destroy_process_group(), with its gloo worker threads (see teardown for what
        # one did at exit). Imported first, it does not. (`import torch._dynamo` here would make
        # `torch` a local name of this function.)
        importlib.import_module("torch._dynamo")
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Context(rank, world_size, local_rank, device)


def teardown(ctx: Context, *, wait_for_peers: bool = False) -> None:
    """Leave the process group; a no-op for a single process.

    ``wait_for_peers=True`` (after a normal end, when every process gets here) first waits at a
    barrier, so that no process closes its connections while another still works: process 0
    writes plots and the summary after the last collective. After an error only some
    processes may get here, so the default leaves at once.

    ``destroy_process_group()`` frees the group, and the group's destructor joins its gloo
    worker threads, only if nothing else holds it (:func:`setup` imports torch._dynamo first
    for that). A worker that outlived it destroyed the barrier's work (which holds the last
    all-reduce's tensors, whose release needs the GIL) while the interpreter was shutting
    down, and the process aborted ("terminate called without an active exception"; one to three
    two-process CPU runs in a hundred on a loaded machine, as core dumps showed).
    """
    if ctx.distributed and dist.is_initialized():
        if wait_for_peers:  # NCCL's barrier runs on a GPU: this process's own (None: gloo's default)
            dist.barrier(device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: Context) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when there is more than one process."""
    if not ctx.distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(tensor: Tensor, ctx: Context) -> Tensor:
    """Sum ``tensor`` over processes (in place) and return it."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


# -- hidden state of stateful (TBPTT) tasks: (layers, batch, size) tensors, or tuples of them --


def gather_state(state: Any, ctx: Context) -> Any:
    """Every rank's slice of a carried hidden state, concatenated along the batch (dim 1)."""
    if state is None or not ctx.distributed:
        return state
    if isinstance(state, (tuple, list)):
        return tuple(gather_state(s, ctx) for s in state)
    parts = [torch.empty_like(state) for _ in range(ctx.world_size)]
    dist.all_gather(parts, state.contiguous())
    return torch.cat(parts, dim=1)


def slice_state(state: Any, ctx: Context, device: Optional[torch.device] = None) -> Any:
    """This rank's contiguous slice of a global hidden state (the inverse of :func:`gather_state`)."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(slice_state(s, ctx, device) for s in state)
    state = state.to(device or ctx.device)
    if not ctx.distributed:
        return state
    per_rank = state.shape[1] // ctx.world_size
    return state[:, ctx.rank * per_rank : (ctx.rank + 1) * per_rank].contiguous()
