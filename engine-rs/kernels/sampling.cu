// Logits processing and sampling on the GPU, one block per sequence (block 1024 threads, grid n_seqs).
//
// apply_penalties: for each sequence, the host lists its distinct generated token ids with their
//   counts (CSR: tok_offsets[s]..tok_offsets[s+1]); ids are distinct per sequence, so no two
//   threads touch the same logit. OpenAI frequency/presence penalties and HF's repetition penalty.
// argmax_rows: greedy pick; ties go to the smallest id (torch.argmax's choice).
// sample_rows: temperature, then top-k, min-p and top-p as logit thresholds found by bisection
//   (no sort: 48 block-wide counting passes over the row), then an inverse-CDF draw with a
//   uniform from (seed, step) hashed on the host-side contract: same seed and step, same token.
//   Ties at a threshold keep every tied token (a top-k of 1 over two equal maxima keeps both).
#include "common.cuh"

#define SAMPLE_THREADS 1024

extern "C" __global__ void apply_penalties(float* __restrict__ logits, int vocab, const int* __restrict__ tok_offsets,
                                           const int* __restrict__ tok_ids, const int* __restrict__ tok_counts,
                                           const float* __restrict__ frequency, const float* __restrict__ presence,
                                           const float* __restrict__ repetition) {
  const int s = blockIdx.x;
  float* row = logits + (size_t)s * vocab;
  for (int e = tok_offsets[s] + threadIdx.x; e < tok_offsets[s + 1]; e += blockDim.x) {
    const int id = tok_ids[e];
    if (id < 0 || id >= vocab) continue;
    float x = row[id];
    const float rep = repetition[s];
    if (rep != 1.f) x = x > 0.f ? x / rep : x * rep;
    x -= frequency[s] * (float)tok_counts[e] + presence[s];
    row[id] = x;
  }
}

__device__ void block_argmax(const float* row, int vocab, float* best_val, int* best_idx) {
  __shared__ float vals[32];
  __shared__ int idxs[32];
  float bv = -INFINITY;
  int bi = vocab;  // sentinel larger than any id
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = row[i];
    if (v > bv || (v == bv && i < bi)) { bv = v; bi = i; }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  if (lane == 0) { vals[warp] = bv; idxs[warp] = bi; }
  __syncthreads();
  bv = -INFINITY;
  bi = vocab;
  for (int w = 0; w < warps; ++w)
    if (vals[w] > bv || (vals[w] == bv && idxs[w] < bi)) { bv = vals[w]; bi = idxs[w]; }
  __syncthreads();
  // A row of NaN/-inf only still yields a valid id.
  *best_val = bv;
  *best_idx = bi < vocab ? bi : 0;
}

extern "C" __global__ void argmax_rows(const float* __restrict__ logits, int vocab, int* __restrict__ out) {
  float v;
  int i;
  block_argmax(logits + (size_t)blockIdx.x * vocab, vocab, &v, &i);
  if (threadIdx.x == 0) out[blockIdx.x] = i;
}

__device__ float count_at_least(const float* row, int vocab, float x, float* scratch) {
  float c = 0.f;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) c += row[i] >= x ? 1.f : 0.f;
  return block_sum(c, scratch);
}

// Sum of exp((l - mx) / t) over logits >= x.
__device__ float mass_at_least(const float* row, int vocab, float x, float mx, float inv_t, float* scratch) {
  float c = 0.f;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) c += row[i] >= x ? __expf((row[i] - mx) * inv_t) : 0.f;
  return block_sum(c, scratch);
}

// uniforms[s] in [0, 1) comes from the host (splitmix64 of seed and step, see backend/cuda/plan.rs)
// so that the draw is reproducible and identical across batch compositions.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sample_rows(
    const float* __restrict__ logits, int vocab, const float* __restrict__ temperatures, const int* __restrict__ top_ks,
    const float* __restrict__ top_ps, const float* __restrict__ min_ps, const float* __restrict__ uniforms,
    int* __restrict__ out) {
  __shared__ float scratch[32];
  __shared__ float chunk_mass[SAMPLE_THREADS];
  const int s = blockIdx.x;
  const float* row = logits + (size_t)s * vocab;
  float mx;
  int best;
  block_argmax(row, vocab, &mx, &best);
  const float t = temperatures[s];
  if (t <= 0.f || !(mx > -INFINITY)) {
    if (threadIdx.x == 0) out[s] = best;
    return;
  }
  const float inv_t = 1.f / t;
  float lo_all = INFINITY;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) lo_all = fminf(lo_all, row[i]);
  lo_all = -block_max(-lo_all, scratch);
  float thr = lo_all;

  const int k = top_ks[s];
  if (k > 0 && k < vocab) {  // largest x with count(l >= x) >= k
    float lo = lo_all, hi = mx;
#pragma unroll 1
    for (int it = 0; it < 48; ++it) {
      const float mid = 0.5f * (lo + hi);
      if (count_at_least(row, vocab, mid, scratch) >= (float)k) lo = mid; else hi = mid;
    }
    thr = fmaxf(thr, lo);
  }
  const float min_p = min_ps[s];
  if (min_p > 0.f) thr = fmaxf(thr, mx + t * __logf(min_p));  // p >= min_p * p_max
  const float top_p = top_ps[s];
  if (top_p < 1.f) {  // largest x >= thr whose kept mass still reaches top_p of the mass above thr
    const float target = top_p * mass_at_least(row, vocab, thr, mx, inv_t, scratch);
    float lo = thr, hi = mx;
#pragma unroll 1
    for (int it = 0; it < 48; ++it) {
      const float mid = 0.5f * (lo + hi);
      if (mass_at_least(row, vocab, mid, mx, inv_t, scratch) >= target) lo = mid; else hi = mid;
    }
    thr = fmaxf(thr, lo);
  }
  thr = fminf(thr, mx);  // the argmax always survives

  // Inverse CDF over contiguous chunks: thread c owns [c*chunk, (c+1)*chunk).
  const int chunk = (vocab + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
  const int begin = threadIdx.x * chunk, stop = min(begin + chunk, vocab);
  float mine = 0.f;
  for (int i = begin; i < stop; ++i) mine += row[i] >= thr ? __expf((row[i] - mx) * inv_t) : 0.f;
  chunk_mass[threadIdx.x] = mine;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.f;
#pragma unroll 1
    for (int c = 0; c < SAMPLE_THREADS; ++c) total += chunk_mass[c];
    float u = uniforms[s] * total;
    int picked = best;
#pragma unroll 1
    for (int c = 0; c < SAMPLE_THREADS; ++c) {
      if (u < chunk_mass[c]) {
        const int cb = c * chunk, ce = min(cb + chunk, vocab);
        for (int i = cb; i < ce; ++i) {
          if (row[i] < thr) continue;
          picked = i;  // the last kept id of the chunk absorbs rounding
          u -= __expf((row[i] - mx) * inv_t);
          if (u < 0.f) break;
        }
        break;
      }
      u -= chunk_mass[c];
    }
    out[s] = picked;
  }
}
