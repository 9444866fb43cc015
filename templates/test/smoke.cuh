// Smallest kernel: y[i] = x[i] * a + b. Used by the runtime's own tests and `jitkern doctor`.
#pragma once
#include "common/types.cuh"

namespace jitkern {
template <int kUnroll>
__global__ void smoke_axpb(const float* __restrict__ x, float* __restrict__ y, float a, float b, int n) {
  int i = (blockIdx.x * blockDim.x + threadIdx.x) * kUnroll;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u)
    if (i + u < n) y[i + u] = x[i + u] * a + b;
}
}  // namespace jitkern
