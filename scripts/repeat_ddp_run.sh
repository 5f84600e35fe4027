#!/usr/bin/env bash
# Run the two-process CPU (gloo) training of tests/test_train_ddp.py N times and count the runs
# that fail: a check for rare failures at start-up or shutdown that one test run cannot see.
#   bash scripts/repeat_ddp_run.sh 60          (about 9 s a run on two cores)
# Each failing run's output is kept as $WORK/fail.K; WORK defaults to a new temporary folder.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
work=${WORK:-$(mktemp -d)}
export PYTHONPATH="src:tests${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1
python -c "from test_train_toytasks import write_config; write_config('$work', task='toy_sign')"
# the test's own overrides, so that this repeats exactly the run the test makes
read -ra overrides < <(python -c "from test_train_ddp import OVERRIDES; print(' '.join(OVERRIDES))")
[ "${#overrides[@]}" -gt 0 ] || { echo "repeat_ddp_run.sh: could not read OVERRIDES from tests/test_train_ddp.py" >&2; exit 2; }
failures=0
for k in $(seq 1 "$runs"); do
  rm -rf "$work/out"
  if ! python -m torch.distributed.run --standalone --nproc_per_node=2 -m lipschitz_rnn train "$work/toy.toml" \
      "${overrides[@]}" --out "$work/out" > "$work/log" 2>&1; then
    failures=$((failures + 1))
    cp "$work/log" "$work/fail.$k"
    grep -m1 -h "terminate\|Error" "$work/log"
  fi
done
echo "failures: $failures of $runs two-process runs (logs of failures in $work)"
[ "$failures" -eq 0 ]
