// RMSNorm, plain and fused with the residual add (SGLang's fused_add_rmsnorm semantics:
// residual += x; x = rmsnorm(residual) * weight).
// Launch: grid (n_tokens), block 256 (any multiple of 32 up to 1024). One block owns one row, so
// no two blocks touch the same memory.
#include "common.cuh"

extern "C" __global__ void rmsnorm(const bf16* __restrict__ x, const bf16* __restrict__ weight,
                                   bf16* __restrict__ out, int hidden, float eps) {
  __shared__ float scratch[32];
  const bf16* row = x + (size_t)blockIdx.x * hidden;
  float ss = 0.f;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    const float v = bf2f(row[i]);
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss, scratch) / (float)hidden + eps);
  bf16* dst = out + (size_t)blockIdx.x * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x)
    dst[i] = f2bf(bf2f(row[i]) * inv * bf2f(weight[i]));
}

// The residual is rounded to bf16 after the add, as SGLang and HF (bf16 hidden states) do.
extern "C" __global__ void fused_add_rmsnorm(bf16* __restrict__ x, bf16* __restrict__ residual,
                                             const bf16* __restrict__ weight, int hidden, float eps) {
  __shared__ float scratch[32];
  bf16* xr = x + (size_t)blockIdx.x * hidden;
  bf16* rr = residual + (size_t)blockIdx.x * hidden;
  float ss = 0.f;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    const bf16 sum = f2bf(bf2f(xr[i]) + bf2f(rr[i]));
    rr[i] = sum;
    const float v = bf2f(sum);
    ss += v * v;
  }
  // Each thread re-reads only the residual elements it wrote itself, so no barrier is needed
  // beyond the ones inside block_sum.
  const float inv = rsqrtf(block_sum(ss, scratch) / (float)hidden + eps);
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) xr[i] = f2bf(bf2f(rr[i]) * inv * bf2f(weight[i]));
}
