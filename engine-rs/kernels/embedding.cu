// Embedding gather: out[t] = table[ids[t]].
// Launch: grid (n_tokens), block 256. An id outside [0, vocab) yields a zero row rather than a
// wild read (the host validates ids; this is the last line of defence).
#include "common.cuh"

extern "C" __global__ void embedding_gather(const bf16* __restrict__ table, const int* __restrict__ ids,
                                            bf16* __restrict__ out, int hidden, int vocab) {
  const int t = blockIdx.x;
  const int id = ids[t];
  bf16* row = out + (size_t)t * hidden;
  if (id < 0 || id >= vocab) {
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) row[i] = 0;
    return;
  }
  const bf16* src = table + (size_t)id * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) row[i] = src[i];
}
