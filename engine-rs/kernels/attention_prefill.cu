// Prefill/extend attention over a cached prefix, causal, flash-attention style (online softmax,
// K/V tiles staged in shared memory). The new tokens' K/V are already in the pool (rope_kv_write
// runs first), so every key is read through the slot table.
//
// Launch: grid (n_seqs, n_heads, ceil(max_extend / 8)), block 256 (8 warps), dynamic shared
// memory = plan::prefill_smem_bytes(head_dim) = 8*hd*4 + 2*32*(hd+2)*2 bytes.
// Warp w owns query row tile*8 + w (absolute position prefix + row); lane l scores key
// tile_start + l and owns output dims l, l+32, ... Rows past extend_len still help load tiles
// (every thread reaches every __syncthreads) but write nothing.
#include "common.cuh"

#define PREFILL_WARPS 8
#define KEY_TILE 32
#define MAX_DIMS_PER_LANE 8

extern "C" __global__ void __launch_bounds__(256) attention_prefill(
    const bf16* __restrict__ q, int q_stride, const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache,
    const int* __restrict__ slot_table, const int* __restrict__ slot_offsets, const int* __restrict__ q_row_offsets,
    const int* __restrict__ extend_lens, const int* __restrict__ prefix_lens, bf16* __restrict__ out, int n_heads,
    int n_kv_heads, int head_dim, float scale) {
  extern __shared__ float smem[];
  const int s = blockIdx.x, h = blockIdx.y, tile = blockIdx.z;
  const int extend = extend_lens[s];
  if (tile * PREFILL_WARPS >= extend) return;  // uniform for the whole block
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int prefix = prefix_lens[s], group = n_heads / n_kv_heads, kvh = h / group;
  const int kv_dim = n_kv_heads * head_dim, pad = head_dim + 2;
  const int* slots = slot_table + slot_offsets[s];

  float* q_s = smem;                                                  // [8][hd]
  bf16* k_s = reinterpret_cast<bf16*>(smem + PREFILL_WARPS * head_dim);  // [32][hd+2]
  bf16* v_s = k_s + KEY_TILE * pad;                                   // [32][hd+2]

  const int qi = tile * PREFILL_WARPS + warp;
  const bool active = qi < extend;
  const int qpos = prefix + qi;
  const size_t q_row = (size_t)(q_row_offsets[s] + qi);
  if (active)
    for (int d = lane; d < head_dim; d += 32) q_s[warp * head_dim + d] = bf2f(q[q_row * q_stride + h * head_dim + d]) * scale;

  const int last_q = min(tile * PREFILL_WARPS + PREFILL_WARPS, extend) - 1;
  const int n_keys = prefix + last_q + 1;
  float m = -INFINITY, l = 0.f, acc[MAX_DIMS_PER_LANE];
#pragma unroll
  for (int j = 0; j < MAX_DIMS_PER_LANE; ++j) acc[j] = 0.f;

  for (int k0 = 0; k0 < n_keys; k0 += KEY_TILE) {
    const int tile_keys = min(KEY_TILE, n_keys - k0);
    for (int e = threadIdx.x; e < tile_keys * head_dim; e += blockDim.x) {
      const int r = e / head_dim, d = e % head_dim;
      const size_t src = (size_t)slots[k0 + r] * kv_dim + kvh * head_dim + d;
      k_s[r * pad + d] = k_cache[src];
      v_s[r * pad + d] = v_cache[src];
    }
    __syncthreads();
    if (active) {
      const int key = k0 + lane;
      float score = -INFINITY;
      if (lane < tile_keys && key <= qpos) {
        float dot = 0.f;
        for (int d = 0; d < head_dim; ++d) dot += q_s[warp * head_dim + d] * bf2f(k_s[lane * pad + d]);
        score = dot;
      }
      const float m_new = fmaxf(m, warp_max(score));
      if (m_new != -INFINITY) {  // at least one visible key so far
        const float p = score == -INFINITY ? 0.f : __expf(score - m_new);
        const float corr = __expf(m - m_new);
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int j = 0; j < MAX_DIMS_PER_LANE; ++j) acc[j] *= corr;
        for (int r = 0; r < tile_keys; ++r) {
          const float pr = __shfl_sync(0xffffffffu, p, r);
#pragma unroll
          for (int j = 0; j < MAX_DIMS_PER_LANE; ++j) {
            const int d = lane + 32 * j;
            if (d < head_dim) acc[j] += pr * bf2f(v_s[r * pad + d]);
          }
        }
        m = m_new;
      }
    }
    __syncthreads();
  }

  if (active) {
    const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
    for (int j = 0; j < MAX_DIMS_PER_LANE; ++j) {
      const int d = lane + 32 * j;
      if (d < head_dim) out[q_row * n_heads * head_dim + h * head_dim + d] = f2bf(acc[j] * inv);
    }
  }
}
