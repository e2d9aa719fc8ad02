"""Float32 CPU references for the kernels (RoPE table, RoPE, attention over KV slots) and the comparison helpers:
NaN-filled outputs, random bf16 inputs, relative error."""
import math

import torch

from .report import report


def rel_err(got, want):
    got, want = got.float().cpu(), want.float().cpu()
    if torch.isnan(got).any():
        return float("inf")
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-6)).item()


def nan_bf16(*shape):
    return torch.full(shape, float("nan"), dtype=torch.bfloat16, device="cuda")


def rnd(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).to(torch.bfloat16).cuda()


def check_close(name, got, want, tol=1e-2):
    e = rel_err(got, want)
    report(name, e <= tol, f"rel_err={e:.2e}")


def rope_table(max_pos, head_dim, theta, scaling):
    half = head_dim // 2
    inv = [1.0 / theta ** (2 * i / head_dim) for i in range(half)]
    if scaling and scaling.get("rope_type") == "llama3":
        f, lo, hi, orig = (scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"],
                           scaling["original_max_position_embeddings"])
        out = []
        for x in inv:
            w = 2 * math.pi / x
            if w < orig / hi:
                out.append(x)
            elif w > orig / lo:
                out.append(x / f)
            else:
                s = (orig / w - lo) / (hi - lo)
                out.append((1 - s) * x / f + s * x)
        inv = out
    inv = torch.tensor(inv, dtype=torch.float64)
    ang = torch.arange(max_pos, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cat([ang.cos(), ang.sin()], dim=1).float()


def ref_rope(x, pos, table):  # x [T][heads][hd] float
    hd = x.shape[-1]
    half = hd // 2
    c = table[pos][:, None, :half]
    s = table[pos][:, None, half:]
    x0, x1 = x[..., :half], x[..., half:]
    return torch.cat([x0 * c - x1 * s, x1 * c + x0 * s], dim=-1)


def ref_attention(q, k_cache, v_cache, slots, prefix, scale, group):
    # q [E][H][hd] for positions prefix..prefix+E-1 of one sequence
    keys = k_cache[slots].float()
    vals = v_cache[slots].float()
    e, h, hd = q.shape
    kvh = keys.shape[1]
    out = torch.zeros(e, h, hd)
    for hh in range(h):
        kk, vv = keys[:, hh // group], vals[:, hh // group]
        sc = q[:, hh].float() @ kk.T * scale
        qpos = torch.arange(e)[:, None] + prefix
        sc = sc.masked_fill(torch.arange(len(slots))[None, :] > qpos, float("-inf"))
        out[:, hh] = torch.softmax(sc, dim=-1) @ vv
    return out
