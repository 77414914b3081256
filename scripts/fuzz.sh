#!/usr/bin/env bash
# Runs the ingest fuzz targets (fuzz/fuzz_targets) for MINUTES each and prints, per target, the
# time, executions, and what it found. Needs cargo-fuzz (`cargo install cargo-fuzz`) and a
# nightly toolchain (rustup's `nightly`, or RUSTC_BOOTSTRAP=1 on stable). Not run in CI.
# Seeds come from the sample corpus and the test fixtures; findings land in
# fuzz/artifacts/TARGET/. Usage: scripts/fuzz.sh [MINUTES] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-15}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pdf code config dataset)
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then toolchain=(+nightly); else export RUSTC_BOOTSTRAP=1; fi

seeds() { # seeds TARGET: the files a target starts from
  case $1 in
    pdf) ls data/*.pdf tests/fixtures/pdf-paths/*.pdf pipeline/tests/fixtures/pdf/*.pdf ;;
    code) ls data/code/* ;;
    config) ls data/config/* ;;
    dataset) ls data/datasets/* ;;
  esac
}

cargo "${toolchain[@]}" fuzz build --release
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  seeds "$t" | while read -r f; do cp "$f" "$corpus/seed-$(basename "$f")"; done
  log=fuzz/artifacts/$t/run.log
  start=$(date +%s)
  # -timeout: an input that takes over 30 s is a hang; -rss_limit_mb: over 4 GiB is a leak or bomb.
  cargo "${toolchain[@]}" fuzz run --release "$t" "$corpus" -- \
    -max_total_time=$((minutes * 60)) -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
    >"$log" 2>&1 || true
  secs=$(( $(date +%s) - start ))
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  found=$(ls "fuzz/artifacts/$t" | grep -cE '^(crash|timeout|oom|leak)-' || true)
  echo "$t: ${secs} s, ${runs:-?} executions, ${found} finding(s) in fuzz/artifacts/$t (log $log)"
done
