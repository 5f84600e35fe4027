#!/usr/bin/env bash
# N processes load the real CIFAR-10 JPEG tarball into one fresh data directory at once, as runs started
# together on a fresh machine do, and count how many loaded and what they reported about the cache:
#
#   bash scripts/cifar_cache_race.sh [SRC=src] [N=6]
#
# SRC is the package source to test (an older commit's `git archive COMMIT src | tar x -C DIR` gives DIR/src).
# Needs data/cifar10-jpeg-q75.tar.gz; takes about 45 s for N = 6 on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-src}
n=${2:-6}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp data/cifar10-jpeg-q75.tar.gz "$dir/"
for i in $(seq "$n"); do
    PYTHONPATH=$src python -c "from lipschitz_rnn.data.cifar import load_cifar; load_cifar('$dir'); print('loaded')" \
        > "$dir/out$i.txt" 2>&1 &
done
wait || true
echo "$(grep -l '^loaded' "$dir"/out*.txt | wc -l) of $n processes loaded"
grep -h -o 'sha256 mismatch[^,]*\|could not cache[^:]*' "$dir"/out*.txt | sort | uniq -c || echo "no cache errors or warnings"
