#!/usr/bin/env python3
"""Reference logits for a GGUF Llama from HF transformers' own GGUF load: `from_pretrained(gguf_file=...)`
dequantizes every tensor (through llama.cpp's `gguf` package) into a float32 LlamaForCausalLM, which then
runs on CPU in float32. Same JSON as scripts/gguf_golden.py (top-K and fixed probe logits per prompt and
position), for the prompt ids of an existing golden file, so the two references can be compared too.

  python3 -m venv .venv-golden && .venv-golden/bin/pip install torch transformers gguf numpy   # ~5.6 GB, once
  .venv-golden/bin/python scripts/gguf_golden_hf.py MODEL.gguf tests/fixtures/smollm2_q4_1_golden.json \\
      tests/fixtures/smollm2_q4_1_golden_hf.json
"""
import json, os, sys

import torch
from transformers import AutoModelForCausalLM

TOP_K = 10


def main():
    path, prompts_from, out = sys.argv[1], sys.argv[2], sys.argv[3]
    base = json.load(open(prompts_from))
    probes = base["probe_ids"]
    torch.set_num_threads(os.cpu_count() or 1)
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path), dtype=torch.float32
    )
    model.eval()
    cases = []
    with torch.no_grad():
        for case in base["cases"]:
            ids = case["prompt_ids"]
            logits = model(torch.tensor([ids])).logits[0].double()
            rows = []
            for pos in range(len(ids)):
                top = torch.argsort(-logits[pos])[:TOP_K].tolist()
                rows.append({"top_ids": top, "top_logits": [round(float(logits[pos, t]), 5) for t in top],
                             "probe_logits": [round(float(logits[pos, t]), 5) for t in probes]})
            cases.append({"prompt_ids": ids, "positions": rows})
    json.dump({"model": os.path.basename(path),
               "reference": f"transformers {__import__('transformers').__version__} GGUF load (dequantized), torch "
                            f"{torch.__version__} float32 CPU forward",
               "probe_ids": probes, "cases": cases}, open(out, "w"))
    print(f"{out}: {len(cases)} prompts")


main()
