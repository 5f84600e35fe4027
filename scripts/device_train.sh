#!/usr/bin/env bash
# Train experiments one after another on one GPU within a time budget, resuming those a
# previous session started.
#   OUT=out TIME_LIMIT=540 bash scripts/device_train.sh configs/smnist/lipschitz_euler_n128.toml:0,1,2 ...
# Each argument is CONFIG:SEEDS. Runs live in runs/<experiment>/seed<k> (carry runs/ between
# sessions). The run still going when TIME_LIMIT seconds have passed is killed and resumes
# from its last checkpoint next time. Runs go one at a time: without MPS, processes sharing
# a GPU are time-sliced, and three concurrent runs measured 31 s per sMNIST epoch each
# instead of 2.2 s alone. Everything comes back as $OUT/runs.tgz, with $OUT/status.txt.
set -uo pipefail
out=${OUT:-out}
deadline=$((SECONDS + ${TIME_LIMIT:-540}))
export PYTHONPATH=src PYTHONUNBUFFERED=1 LIPSCHITZ_RNN_DATA=${LIPSCHITZ_RNN_DATA:-data}
mkdir -p "$out" runs
for spec in "$@"; do
  config=${spec%%:*}
  name=$(python -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['experiment']['name'])" "$config")
  for seed in $(echo "${spec#*:}" | tr ',' ' '); do
    dir=runs/$name/seed$seed
    [ -f "$dir/summary.json" ] && continue  # finished in an earlier session
    left=$((deadline - SECONDS))
    [ "$left" -lt 30 ] && continue
    if [ -f "$dir/meta.json" ] && [ -d "$dir/checkpoints/last" ]; then
      cmd=(python -m lipschitz_rnn train --resume "$dir" log.progress=false)
    else
      rm -rf "$dir"
      cmd=(python -m lipschitz_rnn train "$config" "train.seed=$seed" log.progress=false --out "$dir")
    fi
    mkdir -p "runs/$name"
    timeout --signal=KILL "$left" "${cmd[@]}" >> "runs/$name/seed$seed.stdout" 2>&1
  done
done
for summary in runs/*/seed*/summary.json; do [ -f "$summary" ] && echo "done $summary"; done > "$out/status.txt"
for dir in runs/*/seed*/; do
  [ -f "$dir/summary.json" ] || echo "unfinished $dir $(wc -l < "$dir/metrics.jsonl" 2>/dev/null) epochs"
done >> "$out/status.txt"
cat "$out/status.txt"
tar czf "$out/runs.tgz" runs
