"""tiny-random-llama-3.1 forward built from the kernels (GEMMs by torch) against golden.json's top-5 logits,
by prefill and by step-by-step decode."""
import json
import math
import os
import struct

import torch

from .reference import nan_bf16, rope_table
from .report import report


def load_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    dtypes = {"BF16": torch.bfloat16, "F32": torch.float32, "F16": torch.float16}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        t = torch.frombuffer(bytearray(raw[8 + n + a:8 + n + b]), dtype=dtypes[meta["dtype"]]).reshape(meta["shape"])
        out[name] = t.to(torch.bfloat16).cuda()
    return out


class KernelLlama:
    """The same pipeline as backend/cuda/model/ (body.rs), kernels from kernels/*.cu, GEMMs by torch."""

    def __init__(self, drv, model_dir, n_slots=4096):
        self.d = drv
        self.cfg = json.load(open(os.path.join(model_dir, "config.json")))
        self.w = load_safetensors(os.path.join(model_dir, "model.safetensors"))
        c = self.cfg
        self.nh, self.nkv, self.h = c["num_attention_heads"], c["num_key_value_heads"], c["hidden_size"]
        self.hd = c.get("head_dim") or self.h // self.nh
        self.L = c["num_hidden_layers"]
        self.inter, self.V = c["intermediate_size"], c["vocab_size"]
        self.eps = c["rms_norm_eps"]
        self.table = rope_table(4096, self.hd, c.get("rope_theta", 10000.0), c.get("rope_scaling")).cuda()
        kv_dim = self.nkv * self.hd
        self.kc = [torch.zeros(n_slots, kv_dim, dtype=torch.bfloat16, device="cuda") for _ in range(self.L)]
        self.vc = [torch.zeros(n_slots, kv_dim, dtype=torch.bfloat16, device="cuda") for _ in range(self.L)]
        p = "model.layers.{}."
        self.qkv = [torch.cat([self.w[p.format(l) + f"self_attn.{x}_proj.weight"] for x in "qkv"]) for l in range(self.L)]
        self.gu = [torch.cat([self.w[p.format(l) + f"mlp.{x}_proj.weight"] for x in ("gate", "up")]) for l in range(self.L)]
        self.head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])

    def forward(self, tokens, start):
        d, T = self.d, len(tokens)
        nh, nkv, hd, h = self.nh, self.nkv, self.hd, self.h
        qkv_dim = (nh + 2 * nkv) * hd
        ids = torch.tensor(tokens, dtype=torch.int32, device="cuda")
        pos = torch.arange(start, start + T, dtype=torch.int32, device="cuda")
        slots = pos.clone()  # slot = position: one sequence
        table = torch.arange(0, start + T, dtype=torch.int32, device="cuda")
        zero = torch.zeros(1, dtype=torch.int32, device="cuda")
        residual, x = nan_bf16(T, h), nan_bf16(T, h)
        d.launch("embedding_gather", (T,), (256,), [self.w["model.embed_tokens.weight"], ids, residual, h, self.V])
        d.launch("rmsnorm", (T,), (256,), [residual, self.w["model.layers.0.input_layernorm.weight"], x, h, self.eps])
        for l in range(self.L):
            qkv = (x @ self.qkv[l].T).contiguous()
            d.launch("rope_kv_write", (T,), (128,), [qkv, qkv_dim, pos, slots, self.table, self.kc[l], self.vc[l], nh, nkv, hd])
            attn = nan_bf16(T, nh * hd)
            if T == 1:
                splits, part = 2, max(1, (start + 1 + 1) // 2)
                splits = (start + 1 + part - 1) // part
                pa = torch.empty(nh * splits * hd, device="cuda")
                pm = torch.empty(nh * splits * 2, device="cuda")
                d.launch("attention_decode_partial", (1, nkv, splits), (128,),
                         [qkv, qkv_dim, self.kc[l], self.vc[l], table, zero,
                          torch.tensor([start + 1], dtype=torch.int32, device="cuda"), pa, pm, nh, nkv, hd, part,
                          1.0 / math.sqrt(hd)])
                d.launch("attention_decode_combine", (1, nh), (128,), [pa, pm, attn, nh, hd, splits])
            else:
                d.launch("attention_prefill", (1, nh, (T + 7) // 8), (256,),
                         [qkv, qkv_dim, self.kc[l], self.vc[l], table, zero, zero,
                          torch.tensor([T], dtype=torch.int32, device="cuda"),
                          torch.tensor([start], dtype=torch.int32, device="cuda"), attn, nh, nkv, hd, 1.0 / math.sqrt(hd)],
                         smem=8 * hd * 4 + 2 * 32 * (hd + 2) * 2)
            o = (attn @ self.w[f"model.layers.{l}.self_attn.o_proj.weight"].T).contiguous()
            d.launch("fused_add_rmsnorm", (T,), (256,), [o, residual, self.w[f"model.layers.{l}.post_attention_layernorm.weight"], h, self.eps])
            gu = (o @ self.gu[l].T).contiguous()
            act = nan_bf16(T, self.inter)
            d.launch("silu_and_mul", ((T * self.inter + 255) // 256,), (256,), [gu, act, T, self.inter])
            x = (act @ self.w[f"model.layers.{l}.mlp.down_proj.weight"].T).contiguous()
            nxt = self.w[f"model.layers.{l + 1}.input_layernorm.weight"] if l + 1 < self.L else self.w["model.norm.weight"]
            d.launch("fused_add_rmsnorm", (T,), (256,), [x, residual, nxt, h, self.eps])
        return (x.float() @ self.head.float().T).cpu()


def test_model_from_kernels(drv, models):
    path = os.path.join(models, "tiny-random-llama-3.1")
    golden = json.load(open(os.path.join(path, "golden.json")))
    m = KernelLlama(drv, path)
    worst_prefill = worst_decode = 0.0
    for case in golden["cases"]:
        prompt = case["prompt_ids"] if isinstance(case["prompt_ids"], list) else json.loads(case["prompt_ids"])
        outs = case["output_ids"] if isinstance(case["output_ids"], list) else json.loads(case["output_ids"])
        steps = case["top5_per_step"]
        if isinstance(steps, str):
            steps = json.loads(steps.replace("'", '"'))
        seq = prompt + outs[:-1]
        logits = m.forward(seq, 0)
        for i, st in enumerate(steps):
            row = logits[len(prompt) - 1 + i]
            worst_prefill = max(worst_prefill, max(abs(row[t].item() - v) for t, v in zip(st["ids"], st["logits"])))
        m.forward(prompt[:-1], 0) if len(prompt) > 1 else None
        for i, st in enumerate(steps):
            tok = prompt[-1] if i == 0 else outs[i - 1]
            row = m.forward([tok], len(prompt) - 1 + i)[0]
            worst_decode = max(worst_decode, max(abs(row[t].item() - v) for t, v in zip(st["ids"], st["logits"])))
    report("tiny-random-llama-3.1 prefill logits vs golden", worst_prefill <= 2e-2, f"max abs err={worst_prefill:.4f}")
    report("tiny-random-llama-3.1 decode logits vs golden", worst_decode <= 2e-2, f"max abs err={worst_decode:.4f}")
