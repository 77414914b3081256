#!/usr/bin/env bash
# Training tokens/s of one process against two MPI ranks on this machine's CPUs, the same
# global batch (8 windows of 256 tokens, the small preset: d_model 512, 8 layers) over the
# sample corpus.
#
#   cargo build --release --features mpi --bin mamba && benches/ranks.sh [STEPS]
#
# Rows: one process on every core; one process on one core (the per-rank baseline); two ranks
# of one core each. Median tokens/s over the steps after the first two, ROUNDS alternating
# rounds (default 3; the median of those is printed), so a noisy machine shows in the spread.
set -euo pipefail
cd "$(dirname "$0")/.."
mamba=${MAMBA:-target/release/mamba}
steps=${1:-10}
rounds=${ROUNDS:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$mamba" ingest data/ "$work/shards" --vocab-size 4096 --quiet >/dev/null

# Median tokens/s of a metrics.jsonl, steps 3 and later.
median_tps() {
  python3 -c '
import json, statistics, sys
r = [json.loads(l) for l in open(sys.argv[1])]
print(round(statistics.median(x["tokens_per_s"] for x in r if x.get("tokens_per_s") and x["step"] > 2)))' "$1"
}

run() { # NAME THREADS RANKS BATCH
  local dir="$work/$1-$round"
  local args=(train --shards "$work/shards" --model-size small --seq-len 256 --batch-size "$4"
    --max-steps "$steps" --warmup-steps 2 --eval-every 100000 --save-every 100000
    --checkpoint-dir "$dir" --quiet)
  if [ "$3" = 1 ]; then
    RAYON_NUM_THREADS=$2 "$mamba" "${args[@]}" >/dev/null 2>&1
  else
    mpirun --oversubscribe -np "$3" -x RAYON_NUM_THREADS="$2" "$mamba" "${args[@]}" >/dev/null 2>&1
  fi
  median_tps "$dir/metrics.jsonl" >>"$work/$1.tps"
}

for round in $(seq "$rounds"); do
  run one-process-all-cores "$(nproc)" 1 8
  run one-process-one-core 1 1 8
  run two-ranks-one-core-each 1 2 4
done
echo "| run | tokens/s (median of $rounds rounds) | rounds | vs one process, one core |"
echo "|---|---|---|---|"
base=$(sort -n "$work/one-process-one-core.tps" | sed -n "$(((rounds + 1) / 2))p")
for name in one-process-all-cores one-process-one-core two-ranks-one-core-each; do
  med=$(sort -n "$work/$name.tps" | sed -n "$(((rounds + 1) / 2))p")
  echo "| $name | $med | $(paste -sd' ' "$work/$name.tps") | $(python3 -c "print(f'{$med / $base:.2f}x')") |"
done
