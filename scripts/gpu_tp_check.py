#!/usr/bin/env python3
"""Tensor parallelism on a GPU host, through the engine's C ABI (no Rust or Deno there).

1. With >= 2 GPUs: the CPU ranks of tiny-random-llama-3.1 and stories260K joined by NCCL (tp_comm "nccl",
   one communicator per GPU) give the same greedy tokens as tp 1, for tp = 2, 4, ... up to the GPU count.
2. Decode tok/s per tp size on dummy Llama-3.1-8B: tp 1 runs the CUDA model; tp > 1 on the GPU needs the
   CUDA model to split itself, which it does not yet, so the script says so instead of timing it.
With one GPU only tp 1 is checked, and the script says so.

Build the library with `cargo build --release -p llm-engine --features cuda` and carry
target/release/libllm_engine.so; run `python3 scripts/gpu_tp_check.py --lib PATH --models DIR`.
"""
import argparse
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu.engine import Engine, run_requests  # noqa: E402
from gpu.report import RESULTS, report  # noqa: E402


def greedy(lib, models, name, tp, comm, steps):
    cfg = {"model_path": os.path.join(models, name), "device": "cpu", "dtype": "float32", "tp_size": tp,
           "tp_comm": comm, "max_total_tokens": 4096, "log_level": "warning"}
    eng = Engine(lib, cfg)
    prompts = [[1, 2, 3, 4, 5], [7, 11, 13, 17, 19, 23, 29]]
    toks, _, _ = run_requests(eng, prompts, temperature=0.0, max_new_tokens=steps, ignore_eos=True)
    eng.close()
    return [toks[i] for i in range(len(prompts))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="target/release/libllm_engine.so")
    ap.add_argument("--models", default=os.environ.get("LLM_MODELS_DIR", "../shared/models"))
    a = ap.parse_args()
    gpus = torch.cuda.device_count()
    print(f"GPUs: {gpus}", flush=True)
    sizes = [tp for tp in (2, 4, 8) if tp <= gpus]
    if not sizes:
        print("one GPU: NCCL across ranks cannot be checked; only tp 1 runs", flush=True)
    for name in ("tiny-random-llama-3.1", "stories260K"):
        want = greedy(a.lib, a.models, name, 1, "threads", 32)
        for tp in sizes:
            try:
                got = greedy(a.lib, a.models, name, tp, "nccl", 32)
                report(f"{name}: tp {tp} over NCCL equals tp 1 (greedy, 2 sequences)", got == want)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                report(f"{name}: tp {tp} over NCCL", False, str(e))
    print(f"{'tp_size':<8} {'decode tok/s':<14}", flush=True)
    rng = random.Random(0)
    eng = Engine(a.lib, {"model_path": os.path.join(a.models, "llama-3.1-8b-instruct"), "load_format": "dummy",
                         "device": "cuda", "random_seed": 0})
    toks, _, times = run_requests(eng, [[rng.randrange(1000, 100000) for _ in range(16)]], temperature=0.0,
                                  max_new_tokens=256, ignore_eos=True)
    eng.close()
    rate = (len(toks[0]) - 1) / (times[0][-1] - times[0][0])
    print(f"{1:<8} {rate:<14.1f}", flush=True)
    for tp in sizes:
        print(f"{tp:<8} {'n/a: the CUDA model has no tensor parallelism yet':<14}", flush=True)
    report("dummy Llama-3.1-8B decode at tp 1 on the GPU", rate > 0, f"{rate:.1f} tok/s")
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
