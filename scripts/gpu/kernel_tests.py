"""Every kernel launched on random inputs and compared with its CPU reference (bf16 rel err <= 1e-2); outputs are
pre-filled with NaN so an element a kernel forgot to write fails the check."""
import math
import random

import torch

from .reference import check_close, nan_bf16, ref_attention, ref_rope, rnd, rope_table
from .report import report


def test_kernels(drv):
    torch.manual_seed(0)
    # embedding
    table, ids = rnd(1000, 96), torch.randint(0, 1000, (37,), dtype=torch.int32).cuda()
    out = nan_bf16(37, 96)
    drv.launch("embedding_gather", (37,), (256,), [table, ids, out, 96, 1000])
    check_close("embedding_gather", out, table.cpu()[ids.long().cpu()])
    # rmsnorm / fused add
    for hidden in (64, 4096, 5000):
        x, w = rnd(9, hidden), rnd(hidden)
        out = nan_bf16(9, hidden)
        drv.launch("rmsnorm", (9,), (256,), [x, w, out, hidden, 1e-5])
        xf = x.float().cpu()
        want = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * w.float().cpu()
        check_close(f"rmsnorm h={hidden}", out, want)
        x, r = rnd(9, hidden), rnd(9, hidden)
        s = (x.float() + r.float()).to(torch.bfloat16).float().cpu()
        drv.launch("fused_add_rmsnorm", (9,), (256,), [x, r, w, hidden, 1e-5])
        check_close(f"fused_add_rmsnorm residual h={hidden}", r, s)
        check_close(f"fused_add_rmsnorm out h={hidden}", x, s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + 1e-5) * w.float().cpu())
    # silu and mul
    gu = rnd(13, 2 * 300)
    out = nan_bf16(13, 300)
    drv.launch("silu_and_mul", (max(1, (13 * 300 + 255) // 256),), (256,), [gu, out, 13, 300])
    g, u = gu.float().cpu()[:, :300], gu.float().cpu()[:, 300:]
    check_close("silu_and_mul", out, torch.nn.functional.silu(g) * u)
    # rope + kv write
    for (nh, nkv, hd) in ((32, 8, 128), (8, 4, 8), (4, 2, 32)):
        T, slots_n = 11, 64
        qkv_dim = (nh + 2 * nkv) * hd
        qkv = rnd(T, qkv_dim)
        orig = qkv.float().cpu().clone()
        pos = torch.randint(0, 5000, (T,), dtype=torch.int32)
        slots = torch.randperm(slots_n)[:T].to(torch.int32)
        tab = rope_table(5000, hd, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
        kc, vc = nan_bf16(slots_n, nkv * hd), nan_bf16(slots_n, nkv * hd)
        drv.launch("rope_kv_write", (T,), (128,), [qkv, qkv_dim, pos.cuda(), slots.cuda(), tab.cuda(), kc, vc, nh, nkv, hd])
        q_want = ref_rope(orig[:, :nh * hd].view(T, nh, hd), pos.long(), tab).reshape(T, -1)
        k_want = ref_rope(orig[:, nh * hd:(nh + nkv) * hd].view(T, nkv, hd), pos.long(), tab).reshape(T, -1)
        check_close(f"rope q nh={nh} hd={hd}", qkv.cpu()[:, :nh * hd], q_want)
        check_close(f"rope k->cache nh={nh} hd={hd}", kc.cpu()[slots.long()], k_want)
        check_close(f"v->cache nh={nh} hd={hd}", vc.cpu()[slots.long()], orig[:, (nh + nkv) * hd:])
    # attention: decode (split-K) and prefill with a cached prefix
    for (nh, nkv, hd) in ((32, 8, 128), (8, 4, 8), (4, 2, 32), (16, 2, 256)):
        group, kv_dim, n_slots = nh // nkv, nkv * hd, 6000
        kc, vc = rnd(n_slots, kv_dim), rnd(n_slots, kv_dim)
        scale = 1.0 / math.sqrt(hd)
        lens = [1, 7, 300, 2500]
        tables = [torch.randperm(n_slots)[:n].to(torch.int32) for n in lens]
        flat = torch.cat(tables)
        offs = torch.tensor([0] + list(torch.cumsum(torch.tensor(lens), 0)[:-1]), dtype=torch.int32)
        qkv_dim = (nh + 2 * nkv) * hd
        q = rnd(len(lens), qkv_dim)
        for splits, partition in ((1, 2500), (4, 640), (10, 256)):
            pa = torch.full((len(lens) * nh * splits * hd,), float("nan"), device="cuda")
            pm = torch.full((len(lens) * nh * splits * 2,), float("nan"), device="cuda")
            out = nan_bf16(len(lens), nh * hd)
            drv.launch("attention_decode_partial", (len(lens), nkv, splits), (128,),
                       [q, qkv_dim, kc, vc, flat.cuda(), offs.cuda(), torch.tensor(lens, dtype=torch.int32).cuda(),
                        pa, pm, nh, nkv, hd, partition, scale])
            drv.launch("attention_decode_combine", (len(lens), nh), (128,), [pa, pm, out, nh, hd, splits])
            want = torch.cat([ref_attention(q.cpu()[i:i + 1, :nh * hd].view(1, nh, hd), kc.cpu(), vc.cpu(), tables[i].long(),
                                            lens[i] - 1, scale, group).reshape(1, -1) for i in range(len(lens))])
            check_close(f"attention_decode nh={nh} nkv={nkv} hd={hd} splits={splits}", out, want)
        prefix, extend = [0, 5, 40, 1000], [1, 9, 33, 70]
        tables = [torch.randperm(n_slots)[:p + e].to(torch.int32) for p, e in zip(prefix, extend)]
        flat = torch.cat(tables)
        offs = torch.tensor([0] + list(torch.cumsum(torch.tensor([len(t) for t in tables]), 0)[:-1]), dtype=torch.int32)
        rows = torch.tensor([0] + list(torch.cumsum(torch.tensor(extend), 0)[:-1]), dtype=torch.int32)
        T = sum(extend)
        q = rnd(T, qkv_dim)
        out = nan_bf16(T, nh * hd)
        smem = 8 * hd * 4 + 2 * 32 * (hd + 2) * 2
        drv.launch("attention_prefill", (4, nh, (max(extend) + 7) // 8), (256,),
                   [q, qkv_dim, kc, vc, flat.cuda(), offs.cuda(), rows.cuda(), torch.tensor(extend, dtype=torch.int32).cuda(),
                    torch.tensor(prefix, dtype=torch.int32).cuda(), out, nh, nkv, hd, scale], smem=smem)
        want = torch.cat([ref_attention(q.cpu()[r:r + e, :nh * hd].view(e, nh, hd), kc.cpu(), vc.cpu(), t.long(), p, scale,
                                        group).reshape(e, -1) for r, e, p, t in zip(rows.tolist(), extend, prefix, tables)])
        check_close(f"attention_prefill nh={nh} nkv={nkv} hd={hd}", out, want)
    # sampling
    V, S = 128256, 6
    logits = (torch.randn(S, V) * 3).cuda()
    out = torch.full((S,), -1, dtype=torch.int32, device="cuda")
    drv.launch("argmax_rows", (S,), (1024,), [logits, V, out])
    report("argmax_rows", torch.equal(out.cpu().long(), logits.cpu().argmax(-1)))
    def sample(temp, top_k, top_p, min_p, uniforms):
        o = torch.full((S,), -1, dtype=torch.int32, device="cuda")
        drv.launch("sample_rows", (S,), (1024,), [logits, V, torch.full((S,), temp).cuda(),
                                                 torch.full((S,), top_k, dtype=torch.int32).cuda(),
                                                 torch.full((S,), top_p).cuda(), torch.full((S,), min_p).cuda(),
                                                 torch.tensor(uniforms, dtype=torch.float32).cuda(), o])
        return o.cpu().long()
    u = [random.random() for _ in range(S)]
    report("sample greedy == argmax", torch.equal(sample(0.0, -1, 1.0, 0.0, u), logits.cpu().argmax(-1)))
    report("sample top_k=1 == argmax", torch.equal(sample(1.0, 1, 1.0, 0.0, u), logits.cpu().argmax(-1)))
    a, b = sample(0.8, 50, 0.9, 0.0, u), sample(0.8, 50, 0.9, 0.0, u)
    top50 = logits.cpu().topk(50, dim=-1).indices
    report("sample seeded reproducible, inside top-k", torch.equal(a, b) and all(a[i] in top50[i] for i in range(S)))
    # inverse CDF check: with u -> 0 the first kept id (lowest index) in vocab order is drawn
    probs = torch.softmax(logits.cpu() / 0.7, dim=-1)
    counts = torch.zeros(V)
    n = 400
    row = logits[0:1].repeat(S, 1).contiguous()
    saved = logits
    logits = row
    for i in range(n // S):
        for j, tok in enumerate(sample(0.7, 20, 1.0, 0.0, [random.random() for _ in range(S)]).tolist()):
            counts[tok] += 1
    logits = saved
    top20 = probs[0].topk(20)
    expected = top20.values / top20.values.sum()
    observed = counts[top20.indices] / counts.sum()
    report("sample frequencies follow top-k softmax", (observed - expected).abs().max().item() < 0.08 and
           counts.sum().item() == counts[top20.indices].sum().item())
    pen = logits.clone()
    tok_ids = torch.tensor([5, 17, 99], dtype=torch.int32)
    drv.launch("apply_penalties", (S,), (256,), [pen, V, torch.tensor([0, 3] + [3] * (S - 1), dtype=torch.int32).cuda(),
                                                tok_ids.cuda(), torch.tensor([1, 2, 3], dtype=torch.int32).cuda(),
                                                torch.full((S,), 0.5).cuda(), torch.full((S,), 0.25).cuda(),
                                                torch.full((S,), 1.3).cuda()])
    want = logits.cpu().clone()
    for t, c in zip([5, 17, 99], [1, 2, 3]):
        x = want[0, t]
        x = x / 1.3 if x > 0 else x * 1.3
        want[0, t] = x - 0.5 * c - 0.25
    report("apply_penalties", torch.allclose(pen.cpu(), want, atol=1e-5))
