#!/usr/bin/env bash
# Installs nvcc from PyPI into .tools/nvcc (once) and checks the CUDA build: every kernel through
# nvcc+ptxas for sm_80 and sm_90 with warnings as errors, the `cuda` feature build, and the
# planning tests. No GPU needed.
#
# The CUDA 12 wheel (nvidia-cuda-nvcc-cu12) ships ptxas and libnvvm but no nvcc driver, so the
# CUDA 13 wheel (nvidia-cuda-nvcc, which does ship nvcc, cicc, cudafe++) is used.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC_DIR="$ROOT/.tools/nvcc"
if [ ! -x "$NVCC_DIR/nvidia/cu13/bin/nvcc" ]; then
  echo "[check_cuda_build] installing nvcc from PyPI into .tools/nvcc" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$NVCC_DIR" nvidia-cuda-nvcc >&2
fi
export NVCC="$NVCC_DIR/nvidia/cu13/bin/nvcc"
cd "$ROOT"
cargo test -p llm-engine --features cuda --test cuda_ptxas --test cuda_plan
cargo build -p llm-engine --features cuda 2>&1 | tee /dev/stderr | { ! grep -q "^warning"; }
echo "[check_cuda_build] ok"
