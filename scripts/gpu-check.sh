#!/usr/bin/env bash
# Everything that needs a GPU, in one run (about 2 minutes on one H200):
#   1. the CUDA selective scan, forward and all gradients, against the CPU op (f32 and bf16
#      inputs, document resets; two GPU runs bit-identical), Mamba-2's SSD through it, the time
#      of the SSD's scan and chunked forms at a 130m layer, and a bf16 matmul for the MFU;
#   2. a 3-step tiny training run on the CPU and on the GPU in f32, Mamba-1, -2 and -3 (its
#      trapezoid through its CUDA kernels): losses
#      within 1e-4 relative;
#   3. for each VRAM profile with the model its users train, at seq 2048: --dry-run's estimate
#      against the step's measured peak (mem_peak_bytes: the memory pool's high-water mark)
#      and nvidia-smi's, and whether it fits with 10% to spare;
#   4. training speed at the 130m shape (d_model 768, 24 layers, vocab 50280, 4 x 2048, bf16),
#      every architecture, 30 steps: tokens/s, model FLOPs utilisation against the matmul of
#      step 1, the estimate against the pool's peak, the peak's growth from step 5 to 30, and
#      nvidia-smi's peak (and its trace, mem-ARCH.log);
#   5. Mamba-1 at the same shape in mambapy (PyTorch) on the same GPU, for reference, and
#      mamba_ssm's own Mamba2 (its Triton SSD; wheels from scripts/mamba-ssm-wheel.sh in
#      BIN_DIR/mamba-ssm-wheels), the anchor for Mamba-2's speed;
#   6. with two GPUs and mpirun (a build with --features nccl): two ranks over NCCL against one
#      GPU with twice the batch.
#
#   scripts/gpu-check.sh [BIN_DIR]
#
# BIN_DIR holds `mamba` and `gpu_check` built by scripts/cuda-build.sh (default: target/release
# and target/release/examples), or `mamba.gz` / `gpu_check.gz` (stripped and gzipped, to carry
# them to a machine without network or cargo). The CUDA libraries are taken from the machine's
# PyTorch wheels.
# MAMBAPY_WHEEL=path/to/mambapy-*.whl installs mambapy without a network for step 5. Results go
# to $OUT (default /tmp/gpu-check): gpu-check.md (the table) and the logs. Each command is
# stopped after STEP_TIMEOUT seconds (default 150) so that one hang cannot eat a lease.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release}
for gz in "$bin"/*.gz; do
  [ -e "$gz" ] && gunzip -kf "$gz" && chmod +x "${gz%.gz}"
done
mamba=$bin/mamba
check=$bin/gpu_check
[ -x "$check" ] || check=$bin/examples/gpu_check
out=${OUT:-/tmp/gpu-check}
work=$(mktemp -d)
mkdir -p "$out"
table="$out/gpu-check.md"
fail=0
limit=${STEP_TIMEOUT:-150}

libs=$(python3 -c '
import glob, os, nvidia
dirs = {os.path.dirname(f) for p in nvidia.__path__ for f in glob.glob(os.path.join(p, "**", "lib*.so*"), recursive=True)}
print(":".join(sorted(dirs)))' 2>/dev/null)
export LD_LIBRARY_PATH="${libs}:${LD_LIBRARY_PATH:-}"
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader)
echo "GPU: $gpu"
# The kernels' PTX comes from this NVRTC: one newer than the driver's CUDA makes PTX it rejects.
echo "NVRTC: $(for d in ${LD_LIBRARY_PATH//:/ }; do ls "$d"/libnvrtc.so.* 2>/dev/null; done | head -3 | tr '\n' ' ')"
if ldd "$mamba" | grep 'not found'; then
  echo "libraries missing for $mamba (see above): set LD_LIBRARY_PATH" >&2
  exit 1
fi
{
  echo "## GPU check, $(date -u +%Y-%m-%d)"
  echo
  echo "GPU: $gpu; \`scripts/gpu-check.sh\`"
  echo
} >"$table"

# Runs "$@" with its output in the file $1, and prints the peak of memory.used (MiB) on GPU 0
# while it ran, minus what was used before.
peak_mib() {
  local log=$1 before mem=$work/mem.log
  shift
  before=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 50 >"$mem" &
  local poller=$!
  timeout "$limit" "$@" >"$log" 2>&1
  local rc=$?
  kill "$poller" 2>/dev/null
  wait "$poller" 2>/dev/null
  local peak
  peak=$(sort -n "$mem" | tail -1)
  [ -n "$peak" ] || { echo "?"; return 1; }
  echo $((peak - before))
  return $rc
}

# Median tokens/s over the steps after the first two, from a metrics.jsonl.
median_tps() {
  python3 -c '
import json, statistics, sys
r = [json.loads(l) for l in open(sys.argv[1]) if "tokens_per_s" in l]
print(round(statistics.median(x["tokens_per_s"] for x in r[2:] or r)))' "$1"
}

# The largest mem_peak_bytes (MiB) of a metrics.jsonl: the memory pool's high-water mark.
max_pool_mib() {
  python3 -c '
import json, sys
r = [json.loads(l).get("mem_peak_bytes") for l in open(sys.argv[1]) if "mem_peak_bytes" in l]
r = [x for x in r if x]
print(round(max(r) / 2**20) if r else "?")' "$1"
}

# Growth of mem_peak_bytes from step 5 to the last step of a metrics.jsonl, in percent.
pool_growth() {
  python3 -c '
import json, sys
r = [json.loads(l).get("mem_peak_bytes") for l in open(sys.argv[1]) if "mem_peak_bytes" in l]
r = [x for x in r if x]
print(f"{(r[-1] - r[4]) / r[4] * 100:+.2f}% over {len(r) - 5} steps" if len(r) > 5 else "?")' "$1"
}

# The step losses of two runs (NAME_A DIR_A NAME_B DIR_B), and ok when within 1e-4 relative.
compare_losses() {
  python3 -c '
import json, sys
load = lambda p: [json.loads(l)["loss"] for l in open(p + "/metrics.jsonl") if "\"loss\"" in l]
a, b = load(sys.argv[2]), load(sys.argv[4])
rel = max(abs(x - y) / abs(x) for x, y in zip(a, b)) if a and len(a) == len(b) else float("inf")
verdict = "ok" if rel <= 1e-4 else "FAIL"
print(f"{sys.argv[1]} {a} {sys.argv[3]} {b} max rel diff {rel:.2e} {verdict}")' "$@"
}

echo "== 1. scan kernels against the CPU op"
timeout "$limit" "$check" 2>&1 | tee "$out/scan.log"
tflops=$(sed -n 's/^bf16 matmul 8192^3: \([0-9.]*\) TFLOP\/s/\1/p' "$out/scan.log")
grep -q "^scan check: PASS" "$out/scan.log" || fail=1
{
  echo "| check | result |"
  echo "|---|---|"
  echo "| scan fwd/bwd vs CPU, f32 (<= 1e-5) and bf16 (<= 1e-2); Mamba-2's SSD through it (N 128, <= 1e-5) and chunked with the state-passing kernels (<= 1e-4); bit-identical reruns | $(grep -c ': ok$' "$out/scan.log") ok, $(grep -c ': FAIL$' "$out/scan.log") FAIL (scan.log) |"
  sed -n 's/^ssd \(.*\): \(.*\) (median of 5)$/| SSD \1 | \2 |/p' "$out/scan.log"
  echo "| bf16 matmul 8192^3 | ${tflops:-?} TFLOP/s |"
} >>"$table"

echo "== 2. tiny training, CPU vs GPU, f32, every architecture"
timeout "$limit" "$mamba" ingest data/ "$work/shards" --quiet || fail=1
for arch in mamba1 mamba2 mamba3; do
  for dev in cpu cuda; do
    timeout "$limit" "$mamba" train --shards "$work/shards" --arch "$arch" --model-size tiny \
      --max-steps 3 --precision fp32 --device "$dev" --checkpoint-dir "$work/ck-$arch-$dev" \
      --eval-every 1000 --save-every 1000 --warmup-steps 1 --quiet 2>&1 | tee "$out/tiny-$arch-$dev.log"
  done
  losses=$(compare_losses cpu "$work/ck-$arch-cpu" gpu "$work/ck-$arch-cuda")
  echo "$arch: $losses"
  case "$losses" in *FAIL*) fail=1 ;; esac
  echo "| $arch tiny, 3 steps, f32, losses CPU vs GPU (<= 1e-4 relative) | $losses |" >>"$table"
done

echo "== a store with a GPT-2-sized vocabulary, for steps 3 and 4"
# A tokenizer of 50,280 tokens needs text with that many merges: deterministic random words
# over a small alphabet give them.
mkdir -p "$work/syn"
python3 -c '
import random, sys
r = random.Random(0)
words = ["".join(r.choice("etaoinshrdlucmfwyp") for _ in range(r.randint(2, 9))) for _ in range(400000)]
open(sys.argv[1], "w").write(" ".join(r.choice(words) for _ in range(1500000)))' "$work/syn/text.txt"
timeout "$limit" "$mamba" ingest "$work/syn" "$work/syn-shards" --vocab-size 50280 --quiet || fail=1
vocab=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["tokenizer"]["vocab_size"])' \
  "$work/syn-shards/manifest.json")
echo "vocabulary: $vocab"

echo "== 3. peak memory per VRAM profile (vocabulary $vocab) against --dry-run"
{
  echo
  echo "| VRAM profile | preset | --dry-run | mem_peak_bytes (pool) | estimate / measured | nvidia-smi peak | fits with 10% spare |"
  echo "|---|---|---:|---:|---:|---:|---|"
} >>"$table"
for pair in 8gb:small 12gb:small 16gb:medium 24gb:large 32gb:large 48gb:large; do
  profile=${pair%%:*} preset=${pair##*:}
  run=(--shards "$work/syn-shards" --vram "$profile" --model-size "$preset" --seq-len 2048)
  est=$("$mamba" train "${run[@]}" --dry-run | sed -n 's/^  total *\([0-9.]*\) \([GM]\)iB.*/ /p' |
    awk '{print ($2 == "G") ? $1 * 1024 : $1}')
  mib=$(peak_mib "$out/vram-$profile.log" "$mamba" train "${run[@]}" --device cuda --max-steps 3 \
    --eval-every 1000 --save-every 1000 --checkpoint-dir "$work/vram-$profile" --quiet) || fail=1
  pool=$(max_pool_mib "$work/vram-$profile/metrics.jsonl")
  budget=$((${profile%gb} * 1024))
  fits=yes
  python3 -c "import sys; sys.exit(0 if float('${pool:-inf}') <= 0.9 * $budget else 1)" || { fits=NO; fail=1; }
  ratio=$(python3 -c "print(f'{float(\"${est:-nan}\") / float(\"${pool:-nan}\"):.2f}')" 2>/dev/null)
  echo "$profile $preset: estimate ${est:-?} MiB, pool peak ${pool:-?} MiB, nvidia-smi $mib MiB (budget $budget MiB) $fits"
  echo "| $profile | $preset | ${est:-?} MiB | ${pool:-?} MiB | ${ratio:-?} | $mib MiB | $fits |" >>"$table"
done

echo "== 4. speed at the 130m shape, both architectures (GPU memory sampled every 50 ms)"
# Batch 4 x 2048: at 8 x 2048 mambapy's scan runs out of the H200's memory.
{
  echo
  echo "| 130m shape (vocabulary $vocab), bf16, batch 4 x 2048 | parameters | tokens/s | MFU | --dry-run | mem_peak_bytes (pool) | per token and layer | growth of the peak | nvidia-smi peak |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
} >>"$table"
for arch in mamba1 mamba2 mamba3; do
  params=$("$mamba" model-info --arch "$arch" --size 130m --vocab "$vocab" |
    sed -n 's/^ *parameters: \([0-9]*\).*/\1/p')
  run=(--shards "$work/syn-shards" --arch "$arch" --model-size 130m --precision bf16 --batch-size 4
    --seq-len 2048 --grad-accum 1 --device cuda)
  est=$("$mamba" train "${run[@]}" --dry-run | sed -n 's/^  total *\([0-9.]*\) \([GM]\)iB.*/\1 \2/p' |
    awk '{print ($2 == "G") ? $1 * 1024 : $1}')
  kept=$("$mamba" train "${run[@]}" --dry-run | sed -n 's/^  activations *\([0-9.]*\) \([GM]\)iB.*/\1 \2/p' |
    awk '{printf "%.1f KB", (($2 == "G") ? $1 * 1048576 : $1 * 1024) / (8192 * 24)}')
  mib=$(peak_mib "$out/speed-$arch.log" "$mamba" train "${run[@]}" --max-steps 30 --eval-every 1000 \
    --save-every 1000 --checkpoint-dir "$work/ck-130m-$arch") || fail=1
  cp "$work/mem.log" "$out/mem-$arch.log"
  tps=$(median_tps "$work/ck-130m-$arch/metrics.jsonl")
  pool=$(max_pool_mib "$work/ck-130m-$arch/metrics.jsonl")
  growth=$(pool_growth "$work/ck-130m-$arch/metrics.jsonl")
  mfu=$(python3 -c "print(f'{6 * ${params:-0} * ${tps:-0} / (${tflops:-1} * 1e12) * 100:.1f}')")
  echo "130m $arch: $tps tokens/s, $params parameters, MFU $mfu%, estimate ${est:-?} MiB, pool ${pool:-?} MiB ($growth), nvidia-smi $mib MiB"
  echo "| mamba, $arch | $params | $tps | $mfu% | ${est:-?} MiB | ${pool:-?} MiB | $kept kept (model) | $growth | $mib MiB |" >>"$table"
  [ "$arch" = mamba1 ] && tps1=$tps
  [ "$arch" = mamba2 ] && tps2=$tps
done

echo "== 5. mambapy (Mamba-1 in PyTorch), same shape, same GPU"
[ -n "${MAMBAPY_WHEEL:-}" ] && pip install -q --no-deps "$MAMBAPY_WHEEL"
ref=$(MAMBAPY_DEVICE=cuda MAMBAPY_SHAPE=130m timeout "$limit" python3 model/benches/mambapy_step.py 2>&1 | tee "$out/mambapy.log" |
  sed -n 's/.*tokens\/s: \([0-9]*\).*/\1/p')
ratio=$(python3 -c "print(f'mamba1 {${tps1:-0} / ${ref:-0}:.2f}x' if '${ref}' else 'n/a')")
echo "| mambapy (PyTorch, same GPU) | | ${ref:-failed} | | $ratio | | | | |" >>"$table"

echo "== 5b. mamba_ssm's Mamba2 (its Triton SSD), same shape, same GPU: the anchor for Mamba-2"
# The same Python that runs the bench installs the wheels. Triton compiles and autotunes ~25
# kernels in the first steps (it needs a C compiler and Python's headers): twice the limit.
[ -d "$bin/mamba-ssm-wheels" ] && python3 -m pip install -q --no-deps "$bin"/mamba-ssm-wheels/*.whl
ssm_log=$out/mamba_ssm.log
timeout $((limit * 2)) python3 model/benches/mamba_ssm_step.py >"$ssm_log" 2>&1
ref2=$(sed -n 's/.*tokens\/s: \([0-9]*\).*/\1/p' "$ssm_log" | tail -1)
ref2_mem=$(sed -n 's/.*peak memory: \([0-9]*\) MiB.*/\1/p' "$ssm_log" | tail -1)
ratio2=$(python3 -c "print(f'mamba2 {${tps2:-0} / ${ref2:-0}:.2f}x' if '${ref2}' else 'n/a')")
echo "mamba_ssm Mamba2: ${ref2:-failed} tokens/s, peak ${ref2_mem:-?} MiB ($ratio2)"
echo "| mamba_ssm Mamba2 (Triton SSD, same GPU) | | ${ref2:-failed} | | $ratio2 | ${ref2_mem:-?} MiB (torch) | | | |" >>"$table"
echo "== 6. two GPUs, data-parallel over NCCL (a build with --features nccl, mpirun)"
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
if [ "$gpus" -ge 2 ] && command -v mpirun >/dev/null; then
  dp() { # RANKS BATCH DIR
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout "$limit" mpirun -np "$1" \
      "$mamba" train --shards "$work/shards" --model-size tiny --max-steps 5 --precision fp32 \
      --device cuda --batch-size "$2" --checkpoint-dir "$3" --eval-every 1000 --save-every 1000 \
      --warmup-steps 1 --quiet 2>&1 | tee "$3.log"
  }
  dp 1 8 "$work/dp-1" && dp 2 4 "$work/dp-2"
  losses=$(compare_losses "1 GPU x 8" "$work/dp-1" "2 GPUs x 4" "$work/dp-2")
  case "$losses" in *FAIL*) fail=1 ;; esac
  echo "| 2 GPUs over NCCL vs 1 GPU, tiny, 5 steps, f32 (<= 1e-4 relative) | $losses |" >>"$table"
else
  echo "| 2 GPUs over NCCL | not run: $gpus GPU(s)$(command -v mpirun >/dev/null || echo ', no mpirun') |" >>"$table"
fi

cat "$table"
rm -rf "$work"
exit $fail
