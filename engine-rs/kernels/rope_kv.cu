// RoPE (HF rotate-half layout) on Q and K, fused with the write of K and V into the KV pool.
// `qkv` is the fused projection output, row stride `qkv_stride` elements:
//   [q: n_heads*hd | k: n_kv_heads*hd | v: n_kv_heads*hd]. Q is rotated in place; K (rotated)
//   and V go to k_cache/v_cache row `slots[t]` (kv_dim = n_kv_heads*hd elements per row).
// `cos_sin` is the host-built table [max_pos][hd]: cos in [0, hd/2), sin in [hd/2, hd), computed in
// f64 with any rope scaling (llama3) applied (backend/cuda/plan.rs). A table instead of sincosf
// keeps the kernel free of double-precision argument reduction and makes GPU and CPU agree.
// Launch: grid (n_tokens), block 128. Thread j handles rotation pairs j, j+128, ... over
// (n_heads + n_kv_heads) * hd/2 pairs; each pair (i, i+hd/2) is read and written by one thread only.
#include "common.cuh"

extern "C" __global__ void rope_kv_write(bf16* __restrict__ qkv, int qkv_stride, const int* __restrict__ positions,
                                         const int* __restrict__ slots, const float* __restrict__ cos_sin,
                                         bf16* __restrict__ k_cache, bf16* __restrict__ v_cache, int n_heads,
                                         int n_kv_heads, int head_dim) {
  const int t = blockIdx.x;
  const int half = head_dim / 2;
  const int kv_dim = n_kv_heads * head_dim;
  const float* cs = cos_sin + (size_t)positions[t] * head_dim;
  bf16* row = qkv + (size_t)t * qkv_stride;
  bf16* k_dst = k_cache + (size_t)slots[t] * kv_dim;
  bf16* v_dst = v_cache + (size_t)slots[t] * kv_dim;
  const int pairs = (n_heads + n_kv_heads) * half;
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int head = p / half, i = p % half;
    const float c = cs[i], s = cs[half + i];
    const int base = head * head_dim;  // q heads first, then k heads: contiguous in qkv
    const float x0 = bf2f(row[base + i]), x1 = bf2f(row[base + i + half]);
    const bf16 y0 = f2bf(x0 * c - x1 * s), y1 = f2bf(x1 * c + x0 * s);
    if (head < n_heads) {
      row[base + i] = y0;
      row[base + i + half] = y1;
    } else {
      const int kbase = (head - n_heads) * head_dim;
      k_dst[kbase + i] = y0;
      k_dst[kbase + i + half] = y1;
    }
  }
  const bf16* v_src = row + (n_heads + n_kv_heads) * head_dim;
  for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) v_dst[i] = v_src[i];
}
