#!/usr/bin/env bash
# Builds `mamba` with CUDA support without a system CUDA install: NVIDIA's CUDA 13.0 compiler,
# headers and libraries come from their PyPI wheels into a virtual environment under DIR, and a
# stand-in for the driver library (libcuda.so) lets the binary link on a machine with no GPU.
#
#   scripts/cuda-build.sh [DIR]          # DIR defaults to .cuda-toolchain (git-ignored)
#   scripts/cuda-build.sh DIR --env      # only set up DIR and print the environment to source
#   FEATURES=nccl scripts/cuda-build.sh   # also data-parallel training on GPUs (NCCL, MPI)
#
# Then target/release/mamba runs on any machine with an NVIDIA driver for CUDA 13 (R580 or
# newer) and these libraries on LD_LIBRARY_PATH: libcublas.so.13, libcublasLt.so.13,
# libcurand.so.10, libcudart.so.13 and libnvrtc.so.13 (our kernels are compiled at run time, so
# no nvcc is needed there). PyTorch's CUDA wheels ship them; `scripts/gpu-check.sh` finds them.
# Takes ~10 minutes on 2 cores the first time (candle's CUDA kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mkdir -p "${1:-.cuda-toolchain}" && cd "${1:-.cuda-toolchain}" && pwd)
[ -x "$dir/venv/bin/python" ] || python3 -m venv "$dir/venv" >&2
# 13.0 exactly: a newer nvcc writes PTX that an R580 driver cannot load.
"$dir/venv/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 \
  nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.88 nvidia-cuda-cccl==13.0.85 \
  nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 \
  nvidia-nccl-cu13==2.32.3 >&2
cu=$("$dir/venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
home="$dir/cuda"
mkdir -p "$home/lib64/stubs"
ln -sfn "$cu/include" "$home/include"
for lib in cudart.so.13 cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13; do
  ln -sfn "$cu/lib/lib$lib" "$home/lib64/lib$lib"
  ln -sfn "$cu/lib/lib$lib" "$home/lib64/lib${lib%.so.*}.so"
done
# NCCL, for `--features nccl` (data-parallel training on GPUs).
nccl=$("$dir/venv/bin/python" -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))')
ln -sfn "$nccl/libnccl.so.2" "$home/lib64/libnccl.so.2"
ln -sfn "$nccl/libnccl.so.2" "$home/lib64/libnccl.so"
# The driver stand-in: every driver function cudarc binds, each returning
# CUDA_ERROR_STUB_LIBRARY (34). Only for linking; the real driver is used at run time.
if [ ! -f "$home/lib64/stubs/libcuda.so" ]; then
  cargo fetch -q
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | sort -V | tail -1)
  grep -ohE 'pub unsafe fn cu[A-Za-z0-9_]+\(' "$src"/src/driver/sys/*.rs |
    sed -E 's/pub unsafe fn (.*)\(/int \1(void){return 34;}/' | sort -u >"$home/lib64/stubs/stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$home/lib64/stubs/libcuda.so" "$home/lib64/stubs/stub.c"
  ln -sfn libcuda.so "$home/lib64/stubs/libcuda.so.1"
fi
# LD_LIBRARY_PATH lets the CUDA build's tests run here: NVRTC for real, the driver stand-in
# (which reports that there is no GPU).
env="export PATH=\"$cu/bin:\$PATH\" CUDA_HOME=\"$home\" CUDA_PATH=\"$home\"
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH=\"$home/lib64:$home/lib64/stubs:\${LIBRARY_PATH:-}\"
export LD_LIBRARY_PATH=\"$cu/lib:$nccl:$home/lib64/stubs:\${LD_LIBRARY_PATH:-}\""
if [ "${2:-}" = "--env" ]; then
  echo "$env"
  exit 0
fi
eval "$env"
cargo build --release --features "cuda ${FEATURES:-}" --bin mamba
cargo build --release --features cuda -p mamba-model --example gpu_check
# The kernels compile with NVRTC (no GPU needed for that).
cargo test --release --features cuda -p mamba-model --test cuda_kernels
echo "built target/release/mamba and target/release/examples/gpu_check with CUDA" >&2
