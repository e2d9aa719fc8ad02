#!/usr/bin/env python3
"""One-go GPU check for the CUDA backend (run by scripts/gpu_check.sh on a machine with a GPU,
nvcc and PyTorch, but no Rust or Deno).

1. kernels: every kernels/*.cu compiled with the local nvcc, launched through the CUDA driver
   (ctypes) on random inputs and compared with a float32 CPU reference (bf16 rel err <= 1e-2);
   outputs are pre-filled with NaN so an element a kernel forgot to write fails the check.
2. tiny-random-llama-3.1: a forward pass built from those kernels (GEMMs by torch) against
   golden.json's top-5 logits (<= 2e-2 abs), by prefill and by step-by-step decode.
3. the prebuilt engine (libllm_engine.so, C ABI via ctypes) on the GPU: greedy stories260K text
   against golden.json, then benchmarks with dummy Llama-3.1-8B weights: batch-1 decode tok/s and
   a bench_serving-style random run (input 1024, output 512, 200 prompts).

Prints one line per check and a closing `N passed, N failed`. The parts are in scripts/gpu/.
"""
import argparse
import os
import sys
import tempfile

import torch

from gpu.driver import Driver, compile_kernels
from gpu.engine_tests import test_engine
from gpu.kernel_llama import test_model_from_kernels
from gpu.kernel_tests import test_kernels
from gpu.report import RESULTS, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(ROOT, "target", "release", "libllm_engine.so"))
    ap.add_argument("--models", default=os.environ.get("LLM_MODELS_DIR", os.path.join(ROOT, "..", "shared", "models")))
    ap.add_argument("--skip-engine", action="store_true")
    args = ap.parse_args()
    print(f"GPU: {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as cubins:
        arch = compile_kernels(cubins)
        print(f"kernels compiled for {arch}", flush=True)
        drv = Driver(cubins)
        for name, fn in (("kernels", lambda: test_kernels(drv)), ("model", lambda: test_model_from_kernels(drv, args.models))):
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                report(f"{name} checks crashed", False, repr(e))
        if not args.skip_engine:
            if os.path.exists(args.lib):
                # The engine loads the same freshly built cubins: no dependency on the build's nvcc.
                os.environ["LLM_CUDA_KERNELS_DIR"] = cubins
                test_engine(args.lib, args.models)
            else:
                report("engine library present", False, args.lib)
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
