#!/usr/bin/env bash
# Run the two-process CPU (gloo) training of tests/test_train_ddp.py N times and count the runs
# that fail: a check for rare failures at start-up or shutdown that one test run cannot see.
#   bash scripts/repeat_ddp_run.sh 60              (about 9 s a run on two cores)
#   PARALLEL=4 bash scripts/repeat_ddp_run.sh 80   (four loops at once, 320 runs: a loaded machine,
#                                                   where the shutdown failures showed most)
# Each failing run's output is kept as $WORK/fail.K (loop L of PARALLEL: $WORK/L/fail.K), with its
# core dump where the system writes one to the working directory; WORK defaults to a new folder.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
parallel=${PARALLEL:-1}
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
export PYTHONPATH="$PWD/src:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1 PYTHONFAULTHANDLER=1
python -c "from test_train_toytasks import write_config; write_config('$work', task='toy_sign')"
# the test's own overrides, so that this repeats exactly the run the test makes
read -ra overrides < <(python -c "from test_train_ddp import OVERRIDES; print(' '.join(OVERRIDES))")
[ "${#overrides[@]}" -gt 0 ] || { echo "repeat_ddp_run.sh: could not read OVERRIDES from tests/test_train_ddp.py" >&2; exit 2; }

one_loop() {  # DIR: runs $runs trainings in DIR, prints its failure count last
  local dir=$1 failures=0 k
  mkdir -p "$dir"
  for k in $(seq 1 "$runs"); do
    rm -rf "$dir/out" "$dir/cwd" && mkdir -p "$dir/cwd"
    if ! (cd "$dir/cwd" && ulimit -c unlimited 2>/dev/null; python -m torch.distributed.run --standalone --nproc_per_node=2 \
        -m lipschitz_rnn train "$work/toy.toml" "${overrides[@]}" --out "$dir/out" > "$dir/log" 2>&1); then
      failures=$((failures + 1))
      mkdir -p "$dir/fail.$k" && cp "$dir/log" "$dir/fail.$k/" && mv "$dir/cwd"/core* "$dir/fail.$k/" 2>/dev/null
      grep -m1 -h "terminate\|Error" "$dir/log" >&2
    fi
  done
  echo "$failures"
}

if [ "$parallel" -le 1 ]; then
  failures=$(one_loop "$work")
else
  for loop in $(seq 1 "$parallel"); do one_loop "$work/$loop" > "$work/failures.$loop" & done
  wait
  failures=$(awk '{ s += $1 } END { print s + 0 }' "$work"/failures.*)
fi
total=$((runs * parallel))
echo "failures: $failures of $total two-process runs ($parallel at a time; logs of failures in $work)"
[ "$failures" -eq 0 ]
