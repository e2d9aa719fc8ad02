#!/usr/bin/env bash
# The CUDA build check, no GPU needed: installs nvcc from PyPI into .tools/nvcc (once), then builds
# the `cuda` feature (build.rs compiles every kernel for sm_80 and sm_90 with warnings as errors)
# and runs the ptxas test, the host-side planning tests and the no-GPU probe and --device tests. Closing line:
# `N passed, N failed` (the cargo tests plus "the cuda build has no warning").
#
# The CUDA 12 wheel (nvidia-cuda-nvcc-cu12) ships ptxas and libnvvm but no nvcc driver, so the CUDA
# 13 wheel (which ships nvcc, cicc, cudafe++) is used, pinned so CI builds with one known compiler.
# A missing pip or a failed install is a failure, never a skip. The feature build goes to its own
# target dir so it never replaces the default target/release/libllm_engine.so.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC_WHEEL="nvidia-cuda-nvcc==13.5.37"
NVCC_DIR="$ROOT/.tools/nvcc"
NVCC_BIN="$NVCC_DIR/nvidia/cu13/bin/nvcc"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

fail() { echo "[check_cuda_build] error: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

if [ ! -x "$NVCC_BIN" ]; then
  python3 -m pip --version >/dev/null 2>&1 || fail "pip is unavailable (python3 -m pip), cannot install nvcc"
  echo "[check_cuda_build] installing $NVCC_WHEEL from PyPI into .tools/nvcc" >&2
  # Into a scratch folder first: an interrupted install must not look like a finished one.
  rm -rf "$NVCC_DIR.partial"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target "$NVCC_DIR.partial" "$NVCC_WHEEL" >&2 || fail "pip install $NVCC_WHEEL failed"
  rm -rf "$NVCC_DIR" && mv "$NVCC_DIR.partial" "$NVCC_DIR"
  [ -x "$NVCC_BIN" ] || fail "$NVCC_WHEEL installed no nvcc at $NVCC_BIN"
fi
export NVCC="$NVCC_BIN"
"$NVCC" --version | tail -1
cd "$ROOT"
# Nothing here is compute-heavy: an unoptimised build without debug info compiles fastest.
CARGO_TARGET_DIR="$ROOT/target/cuda-check" CARGO_PROFILE_TEST_OPT_LEVEL=0 CARGO_PROFILE_TEST_DEBUG=false cargo test -p llm-engine --features cuda \
  --test cuda_ptxas --test cuda_plan --test cuda_probe --test cuda_device 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}

read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
                              END { print p + 0, f + 0 }' "$LOG")
# cargo replays cached warnings, so a warm build still shows them.
if grep -qE '^warning' "$LOG"; then
  echo "[check_cuda_build] FAILED: the cuda build has warnings (above)"; failed=$((failed + 1))
else
  echo "[check_cuda_build] ok: the cuda build has no warning"; passed=$((passed + 1))
fi
# Without nvcc build.rs builds a stub and the ptxas test does not exist: that must not pass.
if ! grep -q "every_kernel_assembles_for_sm80_and_sm90_without_warnings ... ok" "$LOG"; then
  echo "[check_cuda_build] FAILED: the ptxas test did not run and pass"; failed=$((failed + 1))
fi
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
