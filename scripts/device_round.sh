#!/usr/bin/env bash
# One GPU round of issue 5 on every GPU of one machine, in one device call (<= 10 minutes):
#
#   OUT=out LIMIT=540 LONG=scripts/round5_jobs.txt SEARCHES="configs/searches/antisymmetric_smnist.toml:3" \
#       bash scripts/device_round.sh
#
# 1. the GPU tests of the cuda-bptt backend and a wide-state benchmark (BENCH_ARGS: its sizes,
#    models, impls) before any training, so the timings are not shared (on one GPU the benchmark
#    runs first, alone); with BENCH=0 the tests run beside the training instead;
# 2. under one MPS daemon, queues side by side: the LONG job lists (space-separated: one queue, in
#    the order named; PER_GPU runs per GPU, 2 by default) and one pipeline per validation search:
#    its trials, then `val_search.py select`,
#    then the final runs with the chosen settings. A spec may name its own runs per GPU as
#    SPEC:K (SEARCH_PER_GPU, 2 by default, otherwise), and an unfinished search blocks no other;
# 3. status and archives of every run in $OUT (runs-results.tgz, runs-ckpt-K.tgz), the logs in logs.tgz.
# Runs still going at the deadline are stopped by the queues: SIGTERM 20 s before it (device_queue.py --stop-grace),
# on which a run finishes its step, writes a checkpoint that resumes exactly and exits 143, and SIGKILL at it for
# any still alive, so the queues still end by LIMIT, before the packing. Such runs resume on the next round: a warm
# machine keeps runs/; for a fresh one, carry the archives in a folder and name it RESUME, and they are unpacked
# into runs/ first (a corrupt archive stops the round before any training; `python scripts/device_queue.py --resume-set
# FROM RESUME` copies only what resuming needs, without best checkpoints, where all would not fit a call). Committed trial records
# (results/search/trials) are copied into runs/ first, so finished trials are not run again.
# RECORD_ONLY names specs whose trials are in the LONG list: their choice is recorded at the end.
# GPU_TESTS replaces the test selection. The exit status is the packing's (non-zero: no archives).
# Put LIPSCHITZ_RNN_GIT_COMMIT=<this checkout's HEAD> in the command: the device's copy of .git can stand at an
# older commit (round 38's runs recorded the session's first one), and the runs' meta.json take the variable first.
# With the MNIST wheel carried, the tree is over the 64 MiB a call takes unless results/ (47 MB) is moved out first;
# while it is out, commit with explicit paths: `git commit -a` records the move as the deletion of every record.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
LIMIT=${LIMIT:-520}
SEARCHES=${SEARCHES:-}
LONG=${LONG:-}
start=$(date +%s)
mkdir -p "$OUT" runs
export PYTHONPATH=src LIPSCHITZ_RNN_DATA=data PYTHONUNBUFFERED=1
nvidia-smi -L > "$OUT/gpus.txt" 2>&1
if [ -z "${LIPSCHITZ_RNN_GIT_COMMIT:-}" ]; then
    echo "device_round: LIPSCHITZ_RNN_GIT_COMMIT is not set; runs record the device copy's git HEAD," \
        "which may be older than the code that runs" | tee "$OUT/commit-warning.txt" >&2
fi
gpus=$(grep -c '^GPU [0-9]' "$OUT/gpus.txt")  # the GPUs listed, not an error message's lines

(nproc; cat /sys/fs/cgroup/cpu.max 2>/dev/null; uptime) > "$OUT/cpus.txt" 2>&1
if [ "${BENCH:-1}" = 1 ]; then
    # BENCH_ARGS replaces the sizes, models and impls
    CUDA_VISIBLE_DEVICES=0 python benchmarks/recurrence.py ${BENCH_ARGS:---sizes 1024x150 256x784 --models lipschitz_euler} \
        --output "$OUT/recurrence-wide.json" > "$OUT/bench-wide.log" 2>&1 &
    [ "$gpus" -gt 1 ] || wait  # one GPU: the benchmark runs alone, then the tests
fi
# under the round's time limit: a hung test must not hold up the archives at the end
( CUDA_VISIBLE_DEVICES=$(( gpus > 1 ? 1 : 0 )) timeout "$LIMIT" python -m pytest -q -p no:cacheprovider \
    -m gpu ${GPU_TESTS:-tests/test_backend_cuda_bptt.py tests/test_backend_triton.py -k "bptt or falls_back"}
  echo "pytest exit status $? (124: stopped at the ${LIMIT} s limit)" ) > "$OUT/gpu-tests.log" 2>&1 &
if [ "${BENCH:-1}" = 1 ]; then wait; fi
if [ -n "${RESUME:-}" ]; then  # an earlier call's archives, for a fresh machine (a warm one's runs are kept)
    python scripts/device_queue.py --unpack "$RESUME" > "$OUT/unpack.log" 2>&1 || { cat "$OUT/unpack.log"; exit 1; }
fi
# finished trials of earlier rounds (their small files are committed) are not run again
for trial in results/search/trials/*/; do
    [ -d "$trial" ] && [ ! -e "runs/$(basename "$trial")" ] && cp -r "$trial" runs/
done

export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
nvidia-cuda-mps-control -d
left() { echo $((LIMIT - ($(date +%s) - start))); }

lists=()
long_lists=()
for list in $LONG; do long_lists+=("@$list"); done
if [ ${#long_lists[@]} -gt 0 ]; then
    lists+=("${long_lists[@]}")
    python scripts/device_queue.py --time-limit "$(left)" --per-gpu "${PER_GPU:-2}" --mps --no-pack "${long_lists[@]}" \
        > "$OUT/queue-long.log" 2>&1 &
fi
for item in $SEARCHES; do  # SPEC or SPEC:K
    spec=${item%%:*}
    slots=${SEARCH_PER_GPU:-2}
    if [ "$spec" != "$item" ]; then slots=${item##*:}; fi
    name=$(basename "$spec" .toml)
    python scripts/val_search.py jobs "$spec" > "runs/search-jobs-$name.txt"
    : > "runs/final-jobs-$name.txt"
    lists+=("@runs/search-jobs-$name.txt" "@runs/final-jobs-$name.txt")
    (
        python scripts/device_queue.py --time-limit "$(left)" --per-gpu "$slots" --mps --no-pack "@runs/search-jobs-$name.txt"
        python scripts/val_search.py select "$spec" --runs runs --record runs/search-records > "runs/final-jobs-$name.txt"
        cat "runs/final-jobs-$name.txt"
        python scripts/device_queue.py --time-limit "$(left)" --per-gpu "$slots" --mps --no-pack \
            "@runs/final-jobs-$name.txt"
    ) > "$OUT/queue-search-$name.log" 2>&1 &
done
wait
echo quit | nvidia-cuda-mps-control
# searches whose trials ran in the LONG list: record the choice (their final runs are a later round's)
for spec in ${RECORD_ONLY:-}; do
    python scripts/val_search.py select "$spec" --runs runs --record runs/search-records >> "$OUT/record-only.txt" 2>&1
done
python scripts/device_queue.py --pack-only "${lists[@]}" > "$OUT/pack.log" 2>&1
packed=$?
[ "$packed" = 0 ] || tail -n 20 "$OUT/pack.log"  # no status and no archives: say why, here
echo "round took $(( $(date +%s) - start )) s" | tee "$OUT/took.txt"
# the device returns at most 8 files: the logs and JSON travel as one archive
(cd "$OUT" && find . -maxdepth 1 -type f \( -name '*.log' -o -name '*.txt' -o -name '*.json' \) -print0 |
    tar czf logs.tgz --remove-files --null -T -)
exit "$packed"
