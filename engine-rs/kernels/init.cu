// Dummy-weight initialisation on the GPU (--load-format dummy): uniform in [-scale, scale) from a
// counter hash, so an 8B model is filled in milliseconds instead of uploading 16 GB from the host.
// Launch: grid-stride, block 256 (plan::elementwise_launch).
#include "common.cuh"

extern "C" __global__ void fill_uniform_bf16(bf16* __restrict__ out, unsigned long long n, unsigned long long seed,
                                             float scale) {
  for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (unsigned long long)gridDim.x * blockDim.x) {
    unsigned long long z = seed ^ (i * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = (float)(z >> 40) * (1.f / 16777216.f);  // [0, 1)
    out[i] = f2bf((2.f * u - 1.f) * scale);
  }
}
