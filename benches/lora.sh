#!/usr/bin/env bash
# LoRA against full fine-tuning on the CPU at the 780m shape (d_model 1536, 48 layers), through
# `mamba train` as a user runs it: peak RSS of the whole process (/usr/bin/time), median step
# time from metrics.jsonl, and the --dry-run estimate of each, side by side.
#
#   benches/lora.sh [WORK_DIR]     (needs ~15 GB of memory and ~12 GB of disk; ~15 min)
#   LORA_ONLY=1 benches/lora.sh    (the two LoRA runs only)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/mamba-lora-bench}
mkdir -p "$work"
cargo build --release -q
mamba=target/release/mamba
steps=4
shape=(--seq-len 256 --batch-size 1)

# A 780m-shaped pretrained model with the store's tokenizer: one step from initialisation.
[ -d "$work/shards" ] || $mamba ingest data "$work/shards" -q
if [ ! -d "$work/base/final" ]; then
  $mamba train --shards "$work/shards" --model-size 780m --max-steps 1 --seq-len 64 \
    --batch-size 1 --checkpoint-dir "$work/base" -q >/dev/null
  rm -f "$work/base/final/optimizer.safetensors"
fi

run() {
  local name=$1; shift
  local ck="$work/run-$name"
  rm -rf "$ck"
  local est
  est=$($mamba train --shards "$work/shards" --init "$work/base/final" "${shape[@]}" "$@" \
    --dry-run | awk '/^  total/ {print $2, $3}')
  if ! /usr/bin/time -f "%M" -o "$work/time-$name" $mamba train --shards "$work/shards" \
    --init "$work/base/final" "${shape[@]}" --max-steps $steps --eval-every 1000 \
    --save-every 1000 --warmup-steps 1 --checkpoint-dir "$ck" -q "$@" >/dev/null; then
    echo "$name | failed: $(tail -1 "$work/time-$name") | | estimate $est"
    return
  fi
  local peak step
  peak=$(awk '{printf "%.0f", $1 / 1024}' "$work/time-$name")
  # Median seconds of the steps after the first (256 tokens each), from their tokens/s.
  step=$(python3 -c "
import json, statistics
rows = [json.loads(l) for l in open('$ck/metrics.jsonl')]
rows = [r for r in rows if 'loss' in r][1:]
print('%.2f' % statistics.median(256 / r['tokens_per_s'] for r in rows))")
  echo "$name | $step s | $peak MiB | estimate $est"
}

echo "780m shape, seq 256 x batch 1, $steps steps; $(nproc) cores; $(date -u +%F)"
echo "run | median step | peak RSS | --dry-run total"
run lora-bf16 --lora-rank 8
run lora-f32 --lora-rank 8 --lora-base-dtype f32
[ -n "${LORA_ONLY:-}" ] || run full
