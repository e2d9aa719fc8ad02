// SiLU-and-mul over the fused gate/up projection: out[t, i] = silu(gu[t, i]) * gu[t, inter + i].
// Launch: grid-stride, block 256, grid min(ceil(n_tokens * inter / 256), 65535 * 8).
#include "common.cuh"

extern "C" __global__ void silu_and_mul(const bf16* __restrict__ gate_up, bf16* __restrict__ out,
                                        int n_tokens, int inter) {
  const size_t total = (size_t)n_tokens * inter;
  for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += (size_t)gridDim.x * blockDim.x) {
    const size_t t = idx / inter, i = idx % inter;
    const float g = bf2f(gate_up[t * 2 * inter + i]);
    const float u = bf2f(gate_up[t * 2 * inter + inter + i]);
    out[idx] = f2bf(g / (1.f + __expf(-g)) * u);
  }
}
