#!/usr/bin/env bash
# The robustness table (issue 6): Hessian spectra and perturbation curves of the sMNIST N = 128
# models, one process per model and part, spread over the GPUs (run beside the training
# queue, under its MPS daemon when there is one). Waits for a run still training.
#   TIME_LIMIT=520 bash scripts/device_analysis.sh
# Results: runs/analysis-smnist/{hessian,perturbation}/<experiment>/<experiment>-seed0.json, with each folder's
# plots; `lipschitz-rnn report` over them merges the parts into the robustness table. A part whose JSON exists
# is not computed again (analyze refuses to overwrite it: exit 2, in that part's log).
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1 LIPSCHITZ_RNN_DATA=${LIPSCHITZ_RNN_DATA:-data}
deadline=$((SECONDS + ${TIME_LIMIT:-520}))
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || echo 1)
out=runs/analysis-smnist
# The settings (stated in RESULTS.md): 4,096 training samples, 60 Lanczos steps for the
# extremes, 16 Hutchinson probes, one 32-step density run, 32 samples for the input Hessian,
# 3 noise draws per level over the whole test set.
common=(--samples 4096 --batch-size 2048 --lanczos-steps 60 --num-probes 16 --density-runs 1 --density-steps 32
        --input-samples 32)
hessian=(--parts hessian "${common[@]}")
input_hessian=(--parts input_hessian "${common[@]}")
both_hessians=(--parts hessian,input_hessian "${common[@]}")
perturbation=(--parts perturbation --draws 3 --batch-size 2000)
i=0
# MODELS and PARTS select a subset (PARTS: hessian, input_hessian, both_hessians, perturbation)
models=${MODELS:-"smnist_lipschitz_euler_n128 smnist_lipschitz_midpoint_n128 smnist_antisymmetric_n128
                 smnist_antisymmetric_gated_n128 smnist_residual_n128 smnist_lstm_n128"}
for name in $models; do
  run=runs/$name/seed0
  for part in ${PARTS:-both_hessians perturbation}; do
    gpu=$((i % gpus)); i=$((i + 1))
    declare -n options=$part
    (
      until [ -f "$run/summary.json" ]; do [ $SECONDS -ge $deadline ] && exit 0; sleep 5; done
      mkdir -p "$out/$part"
      # best-validation weights; "last" where an earlier machine's copy of the run lost "best"
      checkpoint=best; [ -d "$run/checkpoints/best" ] || checkpoint=last
      CUDA_VISIBLE_DEVICES=$gpu timeout --signal=KILL $((deadline - SECONDS)) \
        python -m lipschitz_rnn analyze "$run" --checkpoint $checkpoint --out "$out/$part/$name" --seed 0 "${options[@]}" \
        > "$out/$part/$name.log" 2>&1 || echo "analysis $part of $name: exit $?" >> "$out/$part/$name.log"
    ) &
  done
done
wait
