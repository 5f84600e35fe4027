#!/usr/bin/env bash
# Train several experiments side by side on one GPU, resuming those a previous session started.
# The fused kernel keeps only a few SMs busy, so concurrent runs barely slow each other.
#   OUT=out TIME_LIMIT=540 bash scripts/device_train.sh configs/smnist/lipschitz_euler_n128.toml:0,1,2 ...
# Each argument is CONFIG:SEEDS. Runs live in runs/<experiment>/seed<k> (carry runs/ between
# sessions); a run still going at TIME_LIMIT seconds is killed and resumes from its last
# checkpoint next time. Everything comes back as $OUT/runs.tgz, with $OUT/status.txt.
set -uo pipefail
out=${OUT:-out}
limit=${TIME_LIMIT:-540}
export PYTHONPATH=src PYTHONUNBUFFERED=1 LIPSCHITZ_RNN_DATA=${LIPSCHITZ_RNN_DATA:-data}
mkdir -p "$out" runs
for spec in "$@"; do
  config=${spec%%:*}
  name=$(python -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['experiment']['name'])" "$config")
  for seed in $(echo "${spec#*:}" | tr ',' ' '); do
    dir=runs/$name/seed$seed
    [ -f "$dir/summary.json" ] && continue  # finished in an earlier session
    if [ -f "$dir/meta.json" ] && [ -d "$dir/checkpoints/last" ]; then
      cmd=(python -m lipschitz_rnn train --resume "$dir" log.progress=false)
    else
      rm -rf "$dir"
      cmd=(python -m lipschitz_rnn train "$config" "train.seed=$seed" log.progress=false --out "$dir")
    fi
    mkdir -p "runs/$name"
    timeout --signal=KILL "$limit" "${cmd[@]}" >> "runs/$name/seed$seed.stdout" 2>&1 &
  done
done
wait
for summary in runs/*/seed*/summary.json; do [ -f "$summary" ] && echo "done $summary"; done > "$out/status.txt"
for dir in runs/*/seed*/; do [ -f "$dir/summary.json" ] || echo "unfinished $dir $(wc -l < "$dir/metrics.jsonl" 2>/dev/null) epochs"; done >> "$out/status.txt"
cat "$out/status.txt"
tar czf "$out/runs.tgz" runs
