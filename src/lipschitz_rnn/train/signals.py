"""A graceful stop: the first SIGTERM or SIGINT asks a run to stop after its current optimizer step.

The training loop installs :class:`StopSignals` for the length of the run. The first signal only
records itself (and puts the previous handlers back); the loop finishes the step it is in, writes
the same mid-epoch ``last`` checkpoint a periodic one is, logs where it stopped and how to resume,
and raises :class:`TrainingInterrupted` (exit status 128 + the signal: 143 for SIGTERM, 130 for
SIGINT). A second signal meets the previous handlers: Ctrl-C raises ``KeyboardInterrupt`` and
SIGTERM terminates at once, which the atomic checkpoint writes survive.

Handlers are installed in the main thread only (``signal.signal`` raises in any other); a run
trained in another thread stops on signals as before. A signal that was ignored when training
started (``SIG_IGN``: SIGINT of a job started with ``&`` from a script) stays ignored.

Example:
    >>> import os, signal
    >>> previous = signal.getsignal(signal.SIGTERM)
    >>> stop = StopSignals()
    >>> stop.install()                                  # in the main thread
    True
    >>> if stop.installed:
    ...     os.kill(os.getpid(), signal.SIGTERM)        # recorded, not acted on
    >>> stop.received == signal.SIGTERM, stop.agreed([1.0, 0.0]) == signal.SIGTERM
    (True, True)
    >>> signal.getsignal(signal.SIGTERM) is previous    # a second SIGTERM acts as before
    True
    >>> stop.restore()
"""

from __future__ import annotations

import functools
import signal
import threading
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["STOP_SIGNALS", "StopSignals", "TrainingInterrupted", "exit_status"]

#: the signals that stop a run gracefully, in order of precedence: where processes of one run received
#: different ones, the first of these that any received names the stop (and the exit status)
STOP_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)


def exit_status(signum: int) -> int:
    """The shell's status of a process ended by ``signum``: 128 + its number (SIGTERM 143, SIGINT 130)."""
    return 128 + int(signum)


class TrainingInterrupted(SystemExit):
    """Training stopped on SIGTERM/SIGINT after writing its ``last`` checkpoint; ``--resume`` continues exactly.

    A ``SystemExit`` whose ``code`` is ``128 + signum``, so a script calling ``train`` exits with the
    status a shell expects of a signalled process when it does not catch it, and ``except Exception``
    (a sweep that goes on to its next run after a failure) does not swallow a request to stop.
    ``lipschitz-rnn train`` catches it, prints the message and returns the code.
    Attributes: ``signum``, ``run_dir``, ``epoch`` (0-based) and ``step_in_epoch`` of the checkpoint,
    ``global_step``, ``resume_command`` and ``message``.
    """

    def __init__(
        self,
        message: str,
        *,
        signum: int,
        run_dir: Any,
        epoch: int,
        step_in_epoch: int,
        global_step: int,
        resume_command: str,
    ) -> None:
        super().__init__(exit_status(signum))
        self.message = message
        self.signum = int(signum)
        self.run_dir = run_dir
        self.epoch = epoch
        self.step_in_epoch = step_in_epoch
        self.global_step = global_step
        self.resume_command = resume_command

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy rebuild an exception from its args, which lack the keyword-only fields: a process pool
        # sending this back from a worker would fail to rebuild it (and break the pool) without them
        fields = ("signum", "run_dir", "epoch", "step_in_epoch", "global_step", "resume_command")
        return functools.partial(type(self), **{name: getattr(self, name) for name in fields}), (self.message,)


class StopSignals:
    """Records the first of ``signals`` instead of acting on it; ``restore`` puts the previous handlers back.

    ``counts(device)`` is this process's vote, one number per signal in the
    loop's sum dtype (1 where it was received), for
    the loop to sum over processes in the all-reduce it makes anyway; ``agreed(summed)`` reads the
    sum back as the signal every process stops on (or ``None``), so all of them stop at the same step.
    """

    def __init__(self, signals: Sequence[int] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}
        self._counts: Optional[Tensor] = None
        self._device: Optional[torch.device] = None
        self._marked = False

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> bool:
        """Catch the signals, from the main thread only; returns whether any handler is installed."""
        if self._previous or threading.current_thread() is not threading.main_thread():
            return self.installed
        try:
            for signum in self.signals:
                if signal.getsignal(signum) == signal.SIG_IGN:
                    continue  # ignored on purpose by whoever started us: leave it so
                self._previous[signum] = signal.signal(signum, self._handle)
        except (ValueError, OSError):  # not the main interpreter's main thread, or a platform without it
            self.restore()
        return self.installed

    def restore(self) -> None:
        """Put back the handlers found by :meth:`install` (idempotent)."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            # None: a handler installed from C, which Python cannot reinstate; the default is the nearest
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
        self.restore()  # a second signal meets the previous behaviour: KeyboardInterrupt, or termination

    def counts(self, device: torch.device, dtype: torch.dtype = torch.float64) -> Tensor:
        """This process's vote as a tensor on ``device``; kept between calls, so a step costs no host copy."""
        device = torch.device(device)
        # compared with the device asked for last, not the tensor's: 'cuda' makes a tensor on cuda:0, which differs
        if self._counts is None or device != self._device or dtype != self._counts.dtype:
            self._counts, self._marked = torch.zeros(len(self.signals), dtype=dtype, device=device), False
            self._device = device
        if self.received is not None and not self._marked:
            self._counts[self.signals.index(self.received)] = 1.0
            self._marked = True
        return self._counts

    def agreed(self, summed: Sequence[float]) -> Optional[int]:
        """The signal to stop on, from the votes summed over processes; ``None`` to go on."""
        for signum, count in zip(self.signals, summed):
            if count > 0:
                return signum
        return None
