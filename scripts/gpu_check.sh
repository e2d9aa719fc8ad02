#!/usr/bin/env bash
# One-go GPU check (see scripts/gpu_check.py): kernel tests against a CPU reference, the
# tiny-random-llama-3.1 logits against golden.json, the engine's greedy stories260K text, then
# the benchmarks. Needs a GPU, nvcc and PyTorch; no Rust, no Deno.
#
# Build the library beforehand on a machine with Rust (kernels embedded if nvcc is there):
#   cargo build --release -p llm-engine --features cuda
# and carry target/release/libllm_engine.so along. Extra arguments go to gpu_check.py
# (--lib PATH, --models DIR, --skip-engine).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${NVCC:-}" ]; then
  for c in "$(command -v nvcc || true)" /usr/local/cuda/bin/nvcc "$ROOT/.tools/nvcc/nvidia/cu13/bin/nvcc"; do
    if [ -n "$c" ] && [ -x "$c" ]; then export NVCC="$c"; break; fi
  done
fi
[ -n "${NVCC:-}" ] || { echo "error: nvcc not found (set NVCC)" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$NVCC" --version | tail -1
export LLM_MODELS_DIR="${LLM_MODELS_DIR:-$ROOT/../shared/models}"
exec python3 "$ROOT/scripts/gpu_check.py" --models "$LLM_MODELS_DIR" "$@"
