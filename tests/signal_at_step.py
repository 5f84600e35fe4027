"""``python tests/signal_at_step.py STEP SIGNALS RANKS ARGS...``: the ``lipschitz-rnn`` command line (ARGS), which
sends itself SIGNALS (comma-separated names, in order) during its STEP-th training step (1-based, counted in this
process), in the processes whose ``RANK`` is in RANKS (comma-separated; ``all`` for every one).

Used by ``tests/test_train_signals.py`` for a signal that arrives at a known step of a real process (and of each
process under torchrun, which runs scripts as well as modules).
"""

import os
import signal
import sys

import torch

import lipschitz_rnn.train.loop as loop
from lipschitz_rnn.cli import main

step, names, ranks = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
here = ranks == "all" or os.environ.get("RANK", "0") in ranks.split(",")
real = loop.loss_and_stats
calls = 0


def signalling_loss_and_stats(*args):
    global calls
    if torch.is_grad_enabled():  # training steps, not evaluation
        calls += 1
        if calls == step and here:
            for name in names:
                os.kill(os.getpid(), getattr(signal, name))
    return real(*args)


loop.loss_and_stats = signalling_loss_and_stats
raise SystemExit(main(sys.argv[4:]))
