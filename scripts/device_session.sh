#!/usr/bin/env bash
# One GPU session, run from the repository root on a CUDA machine whose python has torch and
# triton (data/ must hold the MNIST and PTB registry wheels):
#   OUT=out bash scripts/device_session.sh
# 1. the GPU tests of the fused kernels, and every experiment config for a few steps on the GPU;
# 2. the recurrence benchmark: every size with TF32 (the default, as cuDNN's RNN), and the
#    headline size with strict fp32;
# 3. one sMNIST epoch (N = 128, T = 784, batch 128) through the harness, timed.
# Logs and JSON go to $OUT.
set -uo pipefail
out=${OUT:-out}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1 LIPSCHITZ_RNN_DATA=${LIPSCHITZ_RNN_DATA:-data}
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} | tee "$out/env.txt"

python -m pytest -q -p no:cacheprovider -m gpu tests/test_backend_triton.py 2>&1 | tail -4 | tee "$out/gpu-tests.txt"
python -m pytest -q -p no:cacheprovider tests/test_train_every_config.py 2>&1 | tail -2 | tee -a "$out/gpu-tests.txt"

python benchmarks/recurrence.py --output "$out/recurrence-h100.json" 2>&1 | tee "$out/benchmark.txt"
python benchmarks/recurrence.py --no-tf32 --sizes 64x784 128x784 --impls triton cudnn_rnn_tanh cudnn_lstm \
  --output "$out/recurrence-h100-fp32.json" 2>&1 | tee -a "$out/benchmark.txt"

python -m lipschitz_rnn train configs/smnist/lipschitz_euler_n128.toml train.epochs=2 log.progress=false \
  log.tensorboard=false --out "$out/smnist-epochs" 2>&1 | tail -8 | tee "$out/epoch-timing.txt"
