#!/usr/bin/env bash
# Wheels of mamba_ssm (its Mamba2's Triton SSD, no compiled extension) and the pure-Python
# packages it imports, for scripts/gpu-check.sh's Mamba-2 anchor on a GPU machine without
# network: `pip install --no-deps OUT/*.whl` there (gpu-check.sh does it when BIN_DIR has
# mamba-ssm-wheels/).
#
#   scripts/mamba-ssm-wheel.sh OUT [VERSION]     (default VERSION 2.2.6.post3)
#
# mamba_ssm's setup.py imports torch: PYTHON (default python3) must have it, or a CPU torch is
# installed into a throwaway venv first. MAMBA_SKIP_CUDA_BUILD builds the Python files only.
set -euo pipefail
out=${1:?usage: scripts/mamba-ssm-wheel.sh OUT [VERSION]}
version=${2:-2.2.6.post3}
py=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
if ! "$py" -c 'import torch' 2>/dev/null; then
  "$py" -m venv "$work/venv"
  py=$work/venv/bin/python
  # The CPU wheel is enough to build (a tenth of the CUDA one); fail fast where its index is
  # unreachable and take PyPI's.
  "$py" -m pip install -q --retries 0 torch --index-url https://download.pytorch.org/whl/cpu ||
    "$py" -m pip install -q torch
fi
export MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE
# Without build isolation both steps use this torch (pip would look for its own otherwise).
"$py" -m pip download -q --no-deps --no-binary :all: --no-build-isolation "mamba-ssm==$version" \
  -d "$work/sdist"
"$py" -m pip wheel -q --no-deps --no-build-isolation "$work"/sdist/* -w "$out"
# What mamba_ssm.modules.mamba2 imports besides torch and triton (which PyTorch's CUDA wheels
# bring).
"$py" -m pip download -q --no-deps --only-binary :all: einops packaging -d "$out"
ls -l "$out"
