// Mixture-of-experts routing data movement: gather token rows into the padded, expert-contiguous
// layout the grouped GEMMs read, and combine expert outputs back per token with router weights.
// Layout metadata (row_of, token_of_row) comes from jitkern/ops/moe.py (moe_align).
#pragma once
#include <cuda_bf16.h>
#include "common/types.cuh"

namespace jitkern {
namespace moe {

// 8 bf16 <-> fp32 through one 16-byte vector.
__device__ __forceinline__ void unpack8(const uint4& u, float (&v)[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) { float2 f = __bfloat1622float2(h[i]); v[2 * i] = f.x; v[2 * i + 1] = f.y; }
}
__device__ __forceinline__ uint4 pack8(const float (&v)[8]) {
  uint4 u;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  return u;
}

}  // namespace moe

// x_perm[r, :] = x[token_of_row[r], :], or zeros where token_of_row[r] < 0 (padding rows).
// One CTA per kRows rows; row bytes a multiple of 16 (vec = 16-byte chunks per row).
// Element type agnostic: rows are moved as raw 16-byte vectors.
template <int kRows>
__global__ void __launch_bounds__(256) moe_gather_rows(const uint4* __restrict__ x, uint4* __restrict__ x_perm,
                                                       const int32_t* __restrict__ token_of_row, int num_rows,
                                                       int vecs_per_row, int64_t x_ld_vec, int num_tokens) {
  for (int rr = 0; rr < kRows; ++rr) {
    const int r = blockIdx.x * kRows + rr;
    if (r >= num_rows) return;
    const int t = __ldg(token_of_row + r);
    const bool live = t >= 0 && t < num_tokens;
    uint4* dst = x_perm + (int64_t)r * vecs_per_row;
    const uint4* src = x + (int64_t)(live ? t : 0) * x_ld_vec;
    for (int c = threadIdx.x; c < vecs_per_row; c += blockDim.x)
      dst[c] = live ? __ldg(src + c) : make_uint4(0, 0, 0, 0);
  }
}

// out[t, :] = sum_j w[t, j] * y_perm[row_of[t, j], :] in fp32, rounded once to bf16.
// Entries with row_of < 0 (tokens not routed to a local expert) contribute nothing; a token with
// none gets zeros. One CTA per token; N % 8 == 0.
template <int kTopK>
__global__ void __launch_bounds__(128) moe_combine(const uint4* __restrict__ y_perm, uint4* __restrict__ out,
                                                   const int32_t* __restrict__ row_of, const float* __restrict__ w,
                                                   int vecs_per_row, int64_t y_ld_vec, int64_t out_ld_vec) {
  const int t = blockIdx.x;
  int rows[kTopK];
  float ws[kTopK];
#pragma unroll
  for (int j = 0; j < kTopK; ++j) {
    rows[j] = __ldg(row_of + (int64_t)t * kTopK + j);
    ws[j] = __ldg(w + (int64_t)t * kTopK + j);
  }
  for (int c = threadIdx.x; c < vecs_per_row; c += blockDim.x) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    uint4 u[kTopK];
#pragma unroll
    for (int j = 0; j < kTopK; ++j)  // all loads first: kTopK independent 16-byte reads in flight
      u[j] = rows[j] >= 0 ? __ldg(y_perm + (int64_t)rows[j] * y_ld_vec + c) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < kTopK; ++j) {
      if (rows[j] < 0) continue;
      float v[8];
      moe::unpack8(u[j], v);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] = fmaf(ws[j], v[i], acc[i]);
    }
    out[(int64_t)t * out_ld_vec + c] = moe::pack8(acc);
  }
}

}  // namespace jitkern
