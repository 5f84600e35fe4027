"""``python -m lipschitz_rnn ...`` (and ``torchrun ... -m lipschitz_rnn train ...``): the command line."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
