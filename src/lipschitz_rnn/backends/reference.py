"""The reference recurrence: a plain PyTorch loop over time, autograd for the backward.

Readable and slow; every fast backend is tested against it. The input projection is
hoisted into one GEMM and the recurrent matrices are built once, as in every backend.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import BACKENDS


def alive_mask(lengths: Optional[Tensor], steps: int, device: torch.device) -> Optional[Tensor]:
    """``(T, B, 1)`` bool mask, true where step ``t`` is inside sequence ``b``."""
    if lengths is None:
        return None
    return (torch.arange(steps)[:, None] < lengths[None, :]).unsqueeze(-1).to(device)


class ReferenceBackend:
    name = "reference"
    device_type = None

    def handles(self, cell) -> bool:
        return True

    def unsupported_reason(self, cell, x, step_scale, lengths) -> Optional[str]:
        return None

    def scan(
        self, cell, x: Tensor, h0: Tensor, step_scale: Optional[Tensor], lengths: Optional[Tensor]
    ) -> tuple[Tensor, Tensor]:
        steps = x.shape[0]
        weights = cell.recurrent_weights()
        u = cell.project_input(x)
        alive = alive_mask(lengths, steps, x.device)
        h = h0
        outputs = []
        # unbind, not u[t]: indexing makes autograd zero-fill all of u once per step (O(T²))
        for t, u_t in enumerate(u.unbind(0)):
            eps = None if step_scale is None else cell.eps * step_scale[t]
            h_next = cell.step(u_t, h, weights, eps)
            h = h_next if alive is None else torch.where(alive[t], h_next, h)
            outputs.append(cell.output(h))
        out = torch.stack(outputs)
        if alive is not None:
            out = out.masked_fill(~alive, 0.0)
        return out, h


BACKENDS.add("reference", ReferenceBackend())
