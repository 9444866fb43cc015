// FP8 (e4m3) quantisation with fp32 scales: per 1x128 token group and per 128x128 block.
// Math and non-finite policy: jitkern/reference/quant.py (the kernels match it bit for bit).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include "common/types.cuh"

namespace jitkern {
namespace quant {

constexpr float kFp8Max = 448.0f;
constexpr float kAmaxFloor = 1e-4f;

// 8 consecutive elements kept raw (one 16-byte vector for 2-byte types, two for fp32): the block
// kernel holds 64 values per thread across its reduction, and raw storage halves the registers.
template <typename T> struct Raw8 { uint4 u; };
template <> struct Raw8<float> { uint4 u[2]; };

__device__ __forceinline__ void load_raw(const __nv_bfloat16* p, Raw8<__nv_bfloat16>& r) { r.u = __ldg(reinterpret_cast<const uint4*>(p)); }
__device__ __forceinline__ void load_raw(const __half* p, Raw8<__half>& r) { r.u = __ldg(reinterpret_cast<const uint4*>(p)); }
__device__ __forceinline__ void load_raw(const float* p, Raw8<float>& r) {
  r.u[0] = __ldg(reinterpret_cast<const uint4*>(p));
  r.u[1] = __ldg(reinterpret_cast<const uint4*>(p) + 1);
}

__device__ __forceinline__ void to_float(const Raw8<__nv_bfloat16>& r, float (&v)[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&r.u);
#pragma unroll
  for (int i = 0; i < 4; ++i) { float2 f = __bfloat1622float2(h[i]); v[2 * i] = f.x; v[2 * i + 1] = f.y; }
}
__device__ __forceinline__ void to_float(const Raw8<__half>& r, float (&v)[8]) {
  const __half2* h = reinterpret_cast<const __half2*>(&r.u);
#pragma unroll
  for (int i = 0; i < 4; ++i) { float2 f = __half22float2(h[i]); v[2 * i] = f.x; v[2 * i + 1] = f.y; }
}
__device__ __forceinline__ void to_float(const Raw8<float>& r, float (&v)[8]) {
  const float* f = reinterpret_cast<const float*>(r.u);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = f[i];
}

template <typename T>
__device__ __forceinline__ void load8(const T* p, float (&v)[8]) {
  Raw8<T> r;
  load_raw(p, r);
  to_float(r, v);
}

// Scale from a group's amax; NaN when the group held a non-finite value.
template <bool kPow2>
__device__ __forceinline__ float group_scale(float amax, bool finite) {
  float s = fmaxf(amax, kAmaxFloor) / kFp8Max;
  if (kPow2) {
    uint32_t b = __float_as_uint(s);
    uint32_t e = b & 0x7F800000u;
    s = __uint_as_float((b & 0x007FFFFFu) ? e + 0x00800000u : e);
  }
  return finite ? s : __uint_as_float(0x7FC00000u);
}

// 8 values -> 8 e4m3 bytes packed in a uint2 (true IEEE division, as the reference does).
__device__ __forceinline__ uint2 cast8(const float (&v)[8], float scale, bool finite) {
  uint32_t w[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    uint32_t acc = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      uint32_t byte = finite ? (uint32_t)__nv_cvt_float_to_fp8(__fdiv_rn(v[4 * h + i], scale), __NV_SATFINITE, __NV_E4M3)
                             : 0x7Fu;
      acc |= byte << (8 * i);
    }
    w[h] = acc;
  }
  return make_uint2(w[0], w[1]);
}

__device__ __forceinline__ void absmax8(const float (&v)[8], float& amax, bool& finite) {
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    finite &= isfinite(v[i]);
    amax = fmaxf(amax, fabsf(v[i]));
  }
}

}  // namespace quant

// Per-token-group quantisation. x [M, K] row stride x_ld (elements), q [M, K] contiguous e4m3,
// scales written MN-major: scale of (row m, group g) at s[g * s_ld + m] (s_ld = align(M, 4)).
// Grid (ceil(G / kGroups), ceil(M / 16)) for G = ceil(K / 128) groups per row; half-warp h of a
// 256-thread CTA owns row blockIdx.y * 16 + h and its groups blockIdx.x * kGroups + j, 16 threads
// per group, 8 elements each. All kGroups loads are issued before the first reduction (bytes in
// flight), and the 2D grid avoids per-thread integer division (which cost ~10% of HBM rate).
// Requires K % 16 == 0 and 16-byte aligned rows (checked by the Python wrapper).
template <typename T, bool kPow2, int kGroups>
__global__ void __launch_bounds__(256) quant_token_group(const T* __restrict__ x, uint8_t* __restrict__ q,
                                                         float* __restrict__ s, int M, int K, int64_t x_ld, int s_ld) {
  const int lane = threadIdx.x & 15;
  const int row = blockIdx.y * 16 + (threadIdx.x >> 4);
  if (row >= M) return;  // whole half-warps exit together; shuffles below use the half-warp mask
  const unsigned half_mask = 0xffffu << (threadIdx.x & 16);
  const T* xr = x + row * x_ld;
  quant::Raw8<T> raw[kGroups];  // raw vectors: half the registers of fp32 copies
#pragma unroll
  for (int j = 0; j < kGroups; ++j) {
    const int col = (blockIdx.x * kGroups + j) * 128 + lane * 8;
    raw[j] = quant::Raw8<T>{};
    if (col < K) quant::load_raw(xr + col, raw[j]);
  }
#pragma unroll
  for (int j = 0; j < kGroups; ++j) {
    const int g = blockIdx.x * kGroups + j;
    const int col = g * 128 + lane * 8;
    float v[8], amax = 0.f;
    bool finite = true;
    quant::to_float(raw[j], v);
    quant::absmax8(v, amax, finite);
    // NaN in |v| is dropped by fmaxf; the finite flag carries it instead.
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) {
      amax = fmaxf(amax, __shfl_xor_sync(half_mask, amax, o, 16));
      finite = __shfl_xor_sync(half_mask, (int)finite, o, 16) && finite;
    }
    const float scale = quant::group_scale<kPow2>(amax, finite);
    if (col < K) *reinterpret_cast<uint2*>(q + (int64_t)row * K + col) = quant::cast8(v, scale, finite);
    if (lane == 0 && g * 128 < K) s[(int64_t)g * s_ld + row] = scale;
  }
}

// Per-128x128-block quantisation. x [N, K] row stride x_ld, q [N, K] contiguous e4m3,
// s [ceil(N/128), ceil(K/128)] row-major. A 256-thread CTA handles one 128x128 tile at a time,
// striding over tiles (the grid is a few CTAs per SM: no half-empty last wave): thread t owns
// columns (t % 16) * 8 .. +8 of rows t / 16 + 16 * i, i < 8. The tile is read twice (amax, then
// cast): the second pass hits L2 and keeps registers low enough for full occupancy.
template <typename T, bool kPow2>
__global__ void __launch_bounds__(256) quant_block(const T* __restrict__ x, uint8_t* __restrict__ q,
                                                   float* __restrict__ s, int N, int K, int64_t x_ld) {
  __shared__ float red_amax[8];
  __shared__ int red_finite[8];
  const int tiles_k = (K + 127) / 128;
  const int tiles = tiles_k * ((N + 127) / 128);
  const int warp = threadIdx.x >> 5;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int col = (tile % tiles_k) * 128 + (threadIdx.x & 15) * 8;
    const int row0 = (tile / tiles_k) * 128 + (threadIdx.x >> 4);
    float amax = 0.f;
    bool finite = true;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int row = row0 + 16 * i;
      float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      if (row < N && col < K) quant::load8(x + row * x_ld + col, v);
      quant::absmax8(v, amax, finite);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      finite = __shfl_xor_sync(0xffffffffu, (int)finite, o) && finite;
    }
    if ((threadIdx.x & 31) == 0) { red_amax[warp] = amax; red_finite[warp] = finite; }
    __syncthreads();
#pragma unroll
    for (int w = 0; w < 8; ++w) { amax = fmaxf(amax, red_amax[w]); finite = finite && red_finite[w]; }
    __syncthreads();  // every thread has read red_*: the next tile may overwrite them
    const float scale = quant::group_scale<kPow2>(amax, finite);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int row = row0 + 16 * i;
      if (row < N && col < K) {
        float v[8];
        quant::load8(x + row * x_ld + col, v);  // second read of a 32 KiB tile just read: an L2 hit
        *reinterpret_cast<uint2*>(q + (int64_t)row * K + col) = quant::cast8(v, scale, finite);
      }
    }
    if (threadIdx.x == 0) s[tile] = scale;
  }
}

}  // namespace jitkern
