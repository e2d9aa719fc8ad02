#!/usr/bin/env python3
"""Reference logits for a GGUF Llama: weights dequantized by llama.cpp's own Python package (`gguf`, the
code transformers' GGUF loading calls), Q/K rows un-permuted as transformers does, then a plain float64
numpy forward of HF's LlamaForCausalLM (RMSNorm, rotate-half RoPE, GQA, SwiGLU, tied head).
Writes a small JSON: per prompt and position, the top-K logits and the logits of fixed probe ids.

  python3 -m venv .venv-golden && .venv-golden/bin/pip install gguf numpy
  .venv-golden/bin/python scripts/gguf_golden.py MODEL.gguf tests/fixtures/smollm2_q4_1_golden.json

Prompt token ids come from --vectors (scripts/llamacpp_vectors.mjs output: llama.cpp's tokenization) or
the built-in ids below, so no tokenizer is needed here.
"""
import json, sys
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

TOP_K = 10
PROBES = list(range(0, 49152, 769))[:64]
# llama.cpp's tokenization of a few prompts for SmolLM2 (see tests/gguf_golden_test note).
DEFAULT_PROMPTS = None


def field(r, key):
    f = r.fields[key]
    v = f.parts[f.data[0]]
    return v.tobytes().decode() if f.types[0].name == "STRING" else v[0].item()


def main():
    path, out = sys.argv[1], sys.argv[2]
    vectors = sys.argv[sys.argv.index("--vectors") + 1] if "--vectors" in sys.argv else None
    r = GGUFReader(path)
    W = {}
    for t in r.tensors:
        shape = [int(d) for d in reversed(t.shape)]  # ggml dims are innermost first
        W[t.name] = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(shape)
    L = field(r, "llama.block_count"); H = field(r, "llama.attention.head_count")
    KV = field(r, "llama.attention.head_count_kv"); D = field(r, "llama.embedding_length")
    hd = D // H; eps = field(r, "llama.attention.layer_norm_rms_epsilon"); theta = field(r, "llama.rope.freq_base")

    def unpermute(w, heads):  # GGUF row 2i+j of a head = HF row j*hd/2+i
        return w.reshape(heads, hd // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)

    for i in range(L):
        W[f"blk.{i}.attn_q.weight"] = unpermute(W[f"blk.{i}.attn_q.weight"], H)
        W[f"blk.{i}.attn_k.weight"] = unpermute(W[f"blk.{i}.attn_k.weight"], KV)
    head = W.get("output.weight", W["token_embd.weight"])
    inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def rope(x, n):  # x: [T, heads, hd]
        ang = np.arange(n)[:, None] * inv[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = x[..., : hd // 2], x[..., hd // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)

    def forward(ids):
        T = len(ids)
        x = W["token_embd.weight"][ids]
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for i in range(L):
            p = f"blk.{i}."
            h = rms(x, W[p + "attn_norm.weight"])
            q = rope((h @ W[p + "attn_q.weight"].T).reshape(T, H, hd), T)
            k = rope((h @ W[p + "attn_k.weight"].T).reshape(T, KV, hd), T)
            v = (h @ W[p + "attn_v.weight"].T).reshape(T, KV, hd)
            k = np.repeat(k, H // KV, 1); v = np.repeat(v, H // KV, 1)
            s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
            o = np.einsum("hts,shd->thd", s, v).reshape(T, H * hd)
            x = x + o @ W[p + "attn_output.weight"].T
            h = rms(x, W[p + "ffn_norm.weight"])
            g = h @ W[p + "ffn_gate.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
        return rms(x, W["output_norm.weight"]) @ head.T

    if vectors:
        prompts = [g["prompt_ids"] for g in json.load(open(vectors))["greedy"]][:6]
    else:
        sys.exit("--vectors FILE (scripts/llamacpp_vectors.mjs output) gives the prompt ids")
    cases = []
    for ids in prompts:
        logits = forward(np.array(ids))
        rows = []
        for pos in range(len(ids)):
            top = np.argsort(-logits[pos])[:TOP_K]
            rows.append({"top_ids": top.tolist(), "top_logits": [round(float(logits[pos, t]), 5) for t in top],
                         "probe_logits": [round(float(logits[pos, t]), 5) for t in PROBES]})
        cases.append({"prompt_ids": [int(t) for t in ids], "positions": rows})
    json.dump({"model": path.split("/")[-1], "reference": "gguf (llama.cpp python) dequantize + numpy float64 HF Llama forward",
               "probe_ids": PROBES, "cases": cases}, open(out, "w"))
    print(f"{out}: {len(cases)} prompts")


main()
