// Paged decode attention (one new token per sequence), split-K over long contexts, GQA-aware.
//
// attention_decode_partial: grid (n_seqs, n_kv_heads, num_splits), block 128 (4 warps).
//   Block (s, kvh, p) covers keys [p*partition, min((p+1)*partition, seq_len)) for the
//   group = n_heads/n_kv_heads query heads sharing kv head kvh, so each K/V row is read once per
//   group. Warp w takes keys start+w, start+w+4, ...; lane owns dims lane, lane+32, ... (head_dim
//   <= 256, group <= 8). The block merges its warps' online-softmax states and writes
//   part_acc[s][h][p][0..hd) (unnormalised) and part_ml[s][h][p] = (max, sum).
// attention_decode_combine: grid (n_seqs, n_heads), block 128: merges the splits into out.
// Every (s, h, p) slot of the workspace is written, also for an empty split (max=-inf, sum=0),
// so the combine never reads stale memory.
#include "common.cuh"

#define DECODE_WARPS 4
#define MAX_GROUP 8
#define MAX_DIMS_PER_LANE 8

extern "C" __global__ void __launch_bounds__(128) attention_decode_partial(
    const bf16* __restrict__ q, int q_stride, const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache,
    const int* __restrict__ slot_table, const int* __restrict__ slot_offsets, const int* __restrict__ seq_lens,
    float* __restrict__ part_acc, float* __restrict__ part_ml, int n_heads, int n_kv_heads, int head_dim,
    int partition, float scale) {
  __shared__ float sm_m[DECODE_WARPS][MAX_GROUP];
  __shared__ float sm_l[DECODE_WARPS][MAX_GROUP];
  __shared__ float sm_acc[DECODE_WARPS][MAX_GROUP][MAX_DIMS_PER_LANE * 32];

  const int s = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z, num_splits = gridDim.z;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * head_dim;
  const int len = seq_lens[s];
  const int start = split * partition;
  const int end = min(start + partition, len);
  const int* slots = slot_table + slot_offsets[s];

  float qreg[MAX_GROUP][MAX_DIMS_PER_LANE], acc[MAX_GROUP][MAX_DIMS_PER_LANE], m[MAX_GROUP], l[MAX_GROUP];
#pragma unroll
  for (int g = 0; g < MAX_GROUP; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int j = 0; j < MAX_DIMS_PER_LANE; ++j) {
      const int d = lane + 32 * j;
      acc[g][j] = 0.f;
      qreg[g][j] = (g < group && d < head_dim)
                       ? bf2f(q[(size_t)s * q_stride + (kvh * group + g) * head_dim + d]) * scale
                       : 0.f;
    }
  }

  for (int key = start + warp; key < end; key += DECODE_WARPS) {
    const size_t row = (size_t)slots[key] * kv_dim + kvh * head_dim;
    float kreg[MAX_DIMS_PER_LANE], vreg[MAX_DIMS_PER_LANE];
#pragma unroll
    for (int j = 0; j < MAX_DIMS_PER_LANE; ++j) {
      const int d = lane + 32 * j;
      kreg[j] = d < head_dim ? bf2f(k_cache[row + d]) : 0.f;
      vreg[j] = d < head_dim ? bf2f(v_cache[row + d]) : 0.f;
    }
#pragma unroll
    for (int g = 0; g < MAX_GROUP; ++g) {
      if (g < group) {
        float dot = 0.f;
#pragma unroll
        for (int j = 0; j < MAX_DIMS_PER_LANE; ++j) dot += qreg[g][j] * kreg[j];
        const float score = warp_sum(dot);
        const float m_new = fmaxf(m[g], score);
        const float corr = __expf(m[g] - m_new), p = __expf(score - m_new);
        l[g] = l[g] * corr + p;
#pragma unroll
        for (int j = 0; j < MAX_DIMS_PER_LANE; ++j) acc[g][j] = acc[g][j] * corr + p * vreg[j];
        m[g] = m_new;
      }
    }
  }

#pragma unroll
  for (int g = 0; g < MAX_GROUP; ++g) {
    if (lane == 0) {
      sm_m[warp][g] = m[g];
      sm_l[warp][g] = l[g];
    }
#pragma unroll
    for (int j = 0; j < MAX_DIMS_PER_LANE; ++j) sm_acc[warp][g][lane + 32 * j] = acc[g][j];
  }
  __syncthreads();

  for (int e = threadIdx.x; e < group * head_dim; e += blockDim.x) {
    const int g = e / head_dim, d = e % head_dim;
    float mx = -INFINITY;
    for (int w = 0; w < DECODE_WARPS; ++w) mx = fmaxf(mx, sm_m[w][g]);
    float sum = 0.f, a = 0.f;
    if (mx != -INFINITY) {
      for (int w = 0; w < DECODE_WARPS; ++w) {
        const float f = __expf(sm_m[w][g] - mx);
        sum += sm_l[w][g] * f;
        a += sm_acc[w][g][d] * f;
      }
    }
    const int h = kvh * group + g;
    const size_t slot = ((size_t)s * n_heads + h) * num_splits + split;
    part_acc[slot * head_dim + d] = a;
    if (d == 0) {
      part_ml[slot * 2] = mx;
      part_ml[slot * 2 + 1] = sum;
    }
  }
}

extern "C" __global__ void attention_decode_combine(const float* __restrict__ part_acc, const float* __restrict__ part_ml,
                                                    bf16* __restrict__ out, int n_heads, int head_dim, int num_splits) {
  const int s = blockIdx.x, h = blockIdx.y;
  const size_t base = ((size_t)s * n_heads + h) * num_splits;
  float mx = -INFINITY;
  for (int p = 0; p < num_splits; ++p)
    if (part_ml[(base + p) * 2 + 1] > 0.f) mx = fmaxf(mx, part_ml[(base + p) * 2]);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float sum = 0.f, a = 0.f;
    if (mx != -INFINITY) {
      for (int p = 0; p < num_splits; ++p) {
        const float l = part_ml[(base + p) * 2 + 1];
        if (l > 0.f) {
          const float f = __expf(part_ml[(base + p) * 2] - mx);
          sum += l * f;
          a += part_acc[(base + p) * head_dim + d] * f;
        }
      }
    }
    out[((size_t)s * n_heads + h) * head_dim + d] = f2bf(sum > 0.f ? a / sum : 0.f);
  }
}
