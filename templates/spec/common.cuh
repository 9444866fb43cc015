// Shared helpers of the speculative-decoding kernels: argmax keys with torch.argmax semantics,
// ragged request lookup, Philox4x32-10 counter-based RNG, block reductions.
#pragma once
#include <cuda_bf16.h>
#include "common/types.cuh"

namespace jitkern {
namespace spec {

// Total order on floats matching torch.argmax: NaN above everything (all NaNs equal), -0 == +0.
__device__ __forceinline__ uint32_t order_bits(float f) {
  if (f != f) return 0xFFFFFFFFu;
  if (f == 0.0f) f = 0.0f;  // -0 ties with +0, so the lower index must win between them
  uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// One u64 whose max is (largest value, then lowest index). 0 means "no element".
__device__ __forceinline__ uint64_t argmax_key(float v, int idx) {
  return idx < 0 ? 0ull : ((uint64_t)order_bits(v) << 32) | (uint64_t)(0xFFFFFFFFu - (uint32_t)idx);
}
__device__ __forceinline__ int key_index(uint64_t k) { return (int)(0xFFFFFFFFu - (uint32_t)k); }
__device__ __forceinline__ float key_value(uint64_t k) {
  uint32_t o = (uint32_t)(k >> 32);
  if (o == 0xFFFFFFFFu) return __uint_as_float(0x7FC00000u);
  return __uint_as_float((o & 0x80000000u) ? (o & 0x7FFFFFFFu) : ~o);
}

// NaN-propagating max, and "v beats best" (NaN wins, as in torch.argmax; equal keeps best).
__device__ __forceinline__ float nanmax(float m, float v) { return (v > m || v != v) ? v : m; }
__device__ __forceinline__ bool better(float v, float best) { return best == best && (v > best || v != v); }

__device__ __forceinline__ uint64_t u64max(uint64_t a, uint64_t b) { return a > b ? a : b; }

// Per-thread L2 prefetch of the line holding p (no registers held, nothing to wait for).
__device__ __forceinline__ void prefetch_l2_line(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" :: "l"(p));
}

template <int kThreads>
__device__ __forceinline__ uint64_t block_max_u64(uint64_t v, uint64_t* red) {
#pragma unroll
  for (int o = 16; o; o >>= 1) v = u64max(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // `red` may still be read from a previous reduction
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  v = red[0];
#pragma unroll
  for (int w = 1; w < kThreads / 32; ++w) v = u64max(v, red[w]);
  return v;
}

// Sum in a fixed order (lane tree, then warps in order): same result in every CTA for the same input.
template <int kThreads>
__device__ __forceinline__ float block_sum(float v, float* red) {
#pragma unroll
  for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  v = red[0];
#pragma unroll
  for (int w = 1; w < kThreads / 32; ++w) v += red[w];
  return v;
}

// Request owning flattened row `row` when request i holds rows [cu[i] + i, cu[i+1] + i + 1).
// Called by a full warp: a 32-ary search (cu[i] + i is strictly increasing), so b <= 1024 costs
// two dependent loads instead of log2(b).
// kPlusIndex = false: request i holds rows [cu[i], cu[i+1]) (trees: one row per node).
// cu_at(i): cu[i] as int (a global array, or a shared-memory copy of it).
template <bool kPlusIndex = true, typename CuAt>
__device__ __forceinline__ int find_request_warp_at(const CuAt& cu_at, int b, int row) {
  const int lane = threadIdx.x & 31;
  int lo = 0, hi = b - 1;  // invariant: cu[lo] + lo <= row
  while (lo < hi) {
    const int step = (hi - lo + 32) / 32;
    const int idx = lo + lane * step;
    const bool ok = idx <= hi && cu_at(idx) + (kPlusIndex ? idx : 0) <= row;
    const unsigned m = __ballot_sync(0xffffffffu, ok);
    lo += (31 - __clz(m)) * step;
    hi = min(hi, lo + step - 1);
  }
  return lo;
}
template <typename CuT, bool kPlusIndex = true>
__device__ __forceinline__ int find_request_warp(const CuT* cu, int b, int row) {
  return find_request_warp_at<kPlusIndex>([cu](int i) { return (int)cu[i]; }, b, row);
}

// Philox4x32-10 (Salmon et al. 2011): a pure function of (key, counter), so every random number
// depends only on (seed, request, position, stream), never on the launch configuration.
__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint2 k) {
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0 = __umulhi(0xD2511F53u, c.x), lo0 = 0xD2511F53u * c.x;
    uint32_t hi1 = __umulhi(0xCD9E8D57u, c.z), lo1 = 0xCD9E8D57u * c.z;
    c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    k.x += 0x9E3779B9u;
    k.y += 0xBB67AE85u;
  }
  return c;
}

// Uniform in [0, 1) with 24 random bits (exactly representable in fp32).
__device__ __forceinline__ float uniform01(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

// 2^x by the SFU, denormal results flushed to 0 (ex2.approx.ftz.f32: ~2 ulp).
__device__ __forceinline__ float ex2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Uniform in (0, 1) with 23 random bits (never 0 or 1: -log(u) is finite and positive).
// (24 bits + 0.5 would round the top value to 1.0 and give an infinite Gumbel draw.)
__device__ __forceinline__ float open01(uint32_t x) { return ((float)(x >> 9) + 0.5f) * (1.0f / 8388608.0f); }

// A lane's N weights summed in index order (the order pick_in_lane walks them).
template <int N>
__device__ __forceinline__ float lane_sum(const float (&w)[N]) {
  float s = 0.0f;
#pragma unroll
  for (int e = 0; e < N; ++e) s = __fadd_rn(s, w[e]);
  return s;
}

// Inverse-CDF step inside one lane's N weights: the first e whose running sum (index order, as
// lane_sum) exceeds `rel`; if rounding leaves none (rel at the top, or rel = inf), the last e with
// weight; -1 if no weight is > 0.
template <int N>
__device__ __forceinline__ int pick_in_lane(const float (&w)[N], float rel) {
  float acc = 0.0f;
  int pick = -1, last = -1;
#pragma unroll
  for (int e = 0; e < N; ++e) {
    if (w[e] > 0.0f) {
      acc = __fadd_rn(acc, w[e]);
      last = e;
      if (pick < 0 && rel < acc) pick = e;
    }
  }
  if (pick < 0) pick = last;
  return pick;
}

// The two uniforms of (seed, request, position): .x decides acceptance, .y drives the sample.
__device__ __forceinline__ float2 spec_uniforms(uint64_t seed, int request, int position) {
  uint4 r = philox4x32_10(make_uint4((uint32_t)position, (uint32_t)request, 0x5EC0DEu, 0u),
                          make_uint2((uint32_t)seed, (uint32_t)(seed >> 32)));
  return make_float2(uniform01(r.x), uniform01(r.y));
}

}  // namespace spec
}  // namespace jitkern
