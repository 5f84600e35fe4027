"""The recurrent layers and cells under ``torch.autocast``: the recurrence runs in the parameters' dtype.

Autocast would run the input projection and, in the plain-PyTorch backends, every step's
``W h`` in float16/bfloat16, while the fused kernels are float32 only: the same model would
give different numbers on different backends, and a 784-step recurrence would accumulate
half-precision rounding that the stability theory (REFERENCE.md §3) does not account for. So
a layer or cell called under autocast turns it off for its own computation and takes
float16/bfloat16 tensors (an earlier autocast layer's output) in the parameters' dtype; its
outputs are in that dtype, and what follows (a readout, a loss) autocasts as usual.
PyTorch's own ``nn.LSTM``/``nn.GRU`` (the ``lstm``/``gru`` wrappers) keep autocast's rules.

Example::

    with torch.autocast("cuda", dtype=torch.bfloat16):
        output, h_n = rnn(x)            # float32, equal to rnn(x) without autocast
        logits = readout(output[-1])    # bfloat16
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import Tensor

__all__ = ["autocast_active", "autocast_query", "from_autocast"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)

T = TypeVar("T")


def autocast_query() -> Callable[[str], bool]:
    """This torch's way to ask whether ``torch.autocast`` is on for a device type, found once: a cell's
    forward asks at every step of a custom loop, where a failed call per step would cost."""
    try:
        torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 takes no device type: it has one query for CUDA and one for the CPU
        enabled, cpu_enabled = torch.is_autocast_enabled, torch.is_autocast_cpu_enabled

        def older(device_type: str) -> bool:
            if device_type == "cpu":
                return bool(cpu_enabled())
            return device_type == "cuda" and bool(enabled())

        return older
    enabled = torch.is_autocast_enabled
    return lambda device_type: bool(enabled(device_type))


#: whether ``torch.autocast`` is on for ``device_type`` (``"cuda"``, ``"cpu"``, ...)
autocast_active: Callable[[str], bool] = autocast_query()


def from_autocast(value: T, dtype: torch.dtype) -> T:
    """``value`` in ``dtype`` when it is a float16/bfloat16 tensor and ``dtype`` is wider; else unchanged.

    Other mismatches (float64 against float32 parameters, say) stay the caller's error to report.
    """
    if isinstance(value, Tensor) and value.dtype in _LOW_PRECISION and dtype not in _LOW_PRECISION:
        return value.to(dtype)  # type: ignore[return-value]
    return value
