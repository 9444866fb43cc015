// FP8 (e4m3) quantisation with fp32 scales: per 1x128 token group and per 128x128 block.
// Math and non-finite policy: jitkern/reference/quant.py (the kernels match it bit for bit).
//
// Both kernels are HBM-bound; what keeps them near the copy rate:
//   * every 16-byte load of a thread is issued before its first use (bytes in flight), with
//     L1::no_allocate (each byte is read once);
//   * amax is an unsigned max over |x| bit patterns (packed 16x2 for bf16/fp16): one instruction
//     per element or two, and +inf/NaN sort above every finite value, so the same max says
//     whether the group is finite (one shuffle per reduction round instead of two);
//   * x / scale is computed without a per-element divide (see div_rn): IEEE division costs a
//     MUFU.RCP, a range check and a branch per element, which made the kernels issue-bound.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include "common/types.cuh"

namespace jitkern {
namespace quant {

constexpr float kFp8Max = 448.0f;
constexpr float kAmaxFloor = 1e-4f;
constexpr uint32_t kInfBits = 0x7F800000u;  // |x| bits >= this: +inf or NaN

// 8 consecutive elements kept raw (one 16-byte vector for 2-byte types, two for fp32): raw
// storage halves the registers of fp32 copies, so more loads fit in flight.
template <typename T> struct Raw8 { uint4 u; };
template <> struct Raw8<float> { uint4 u[2]; };

// 16-byte read-only load that does not allocate in L1 (streamed input, read once).
__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

template <typename T>
__device__ __forceinline__ void load_raw(const T* p, Raw8<T>& r) { r.u = ld_stream(p); }
__device__ __forceinline__ void load_raw(const float* p, Raw8<float>& r) {
  r.u[0] = ld_stream(p);
  r.u[1] = ld_stream(p + 4);
}

__device__ __forceinline__ void to_float(const Raw8<__nv_bfloat16>& r, float (&v)[8]) {
  const uint32_t w[4] = {r.u.x, r.u.y, r.u.z, r.u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // bf16 -> fp32 is exact: the bf16 bits are the fp32 high half
    v[2 * i] = __uint_as_float(w[i] << 16);
    v[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
  }
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

__device__ __forceinline__ uint32_t max_u16x2(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("max.u16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// Running max of |x| over Raw8 vectors. bits() returns it as fp32 bits: an unsigned compare of
// non-negative float bits is a numeric compare, and inf/NaN (>= kInfBits) compare above all finite
// values (for fp16, bits() widens the winner to fp32, which keeps inf/NaN at or above kInfBits).
template <typename T> struct AbsMax {  // 2-byte types: two 16-bit lanes of |x| bits
  uint32_t m = 0;
  __device__ __forceinline__ void add(const Raw8<T>& r) {
    const uint32_t a = max_u16x2(r.u.x & 0x7FFF7FFFu, r.u.y & 0x7FFF7FFFu);
    const uint32_t b = max_u16x2(r.u.z & 0x7FFF7FFFu, r.u.w & 0x7FFF7FFFu);
    m = max_u16x2(m, max_u16x2(a, b));
  }
  __device__ __forceinline__ uint32_t bits() const;
};
template <> __device__ __forceinline__ uint32_t AbsMax<__nv_bfloat16>::bits() const {
  return max(m & 0xFFFFu, m >> 16) << 16;
}
template <> __device__ __forceinline__ uint32_t AbsMax<__half>::bits() const {
  return __float_as_uint(__half2float(__ushort_as_half((unsigned short)max(m & 0xFFFFu, m >> 16))));
}
template <> struct AbsMax<float> {
  uint32_t m = 0;
  __device__ __forceinline__ void add(const Raw8<float>& r) {
    const uint32_t w[8] = {r.u[0].x, r.u[0].y, r.u[0].z, r.u[0].w, r.u[1].x, r.u[1].y, r.u[1].z, r.u[1].w};
#pragma unroll
    for (int i = 0; i < 8; ++i) m = max(m, w[i] & 0x7FFFFFFFu);
  }
  __device__ __forceinline__ uint32_t bits() const { return m; }
};

// Scale from a group's amax bits (see AbsMax); NaN when the group held a non-finite value.
template <bool kPow2>
__device__ __forceinline__ float group_scale(uint32_t amax_bits) {
  float s = __fdiv_rn(fmaxf(__uint_as_float(amax_bits), kAmaxFloor), kFp8Max);
  if (kPow2) {
    uint32_t b = __float_as_uint(s);
    uint32_t e = b & 0x7F800000u;
    s = __uint_as_float((b & 0x007FFFFFu) ? e + 0x00800000u : e);
  }
  return amax_bits < kInfBits ? s : __uint_as_float(0x7FC00000u);
}

// x / s rounded as IEEE division (round to nearest even), given r = RN(1/s) (s > 0, normal).
// q0 = x*r is within a couple of ulps; one Newton/Markstein step q + (x - q*s)*r (residual exact
// through the fma) makes it faithful, and a second one with the correctly rounded reciprocal
// makes it the correctly rounded quotient (Markstein's theorem). No underflow matters: s >=
// 1e-4/448 and |x/s| <= 448, and quotients too small for that argument (< 2^-11, where a fp32
// residual could underflow) become +-0 in e4m3 whatever their last bits; copysign restores the
// sign of zero quotients (-0 / s = -0). With a power-of-two scale x*r is already exact.
template <bool kPow2>
__device__ __forceinline__ float div_rn(float x, float s, float r) {
  float q = __fmul_rn(x, r);
  if (!kPow2) {
    q = __fmaf_rn(__fmaf_rn(-q, s, x), r, q);
    q = __fmaf_rn(__fmaf_rn(-q, s, x), r, q);
  }
  return copysignf(q, x);
}

// 8 values -> 8 e4m3 bytes (element 0 in the lowest byte); 0x7F everywhere for a NaN scale.
template <bool kPow2, typename T>
__device__ __forceinline__ uint2 cast8(const Raw8<T>& raw, float scale, float rcp) {
  float v[8];
  to_float(raw, v);
  uint32_t w[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(div_rn<kPow2>(v[4 * h], scale, rcp), div_rn<kPow2>(v[4 * h + 1], scale, rcp)),
                                                 __NV_SATFINITE, __NV_E4M3);
    const uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(div_rn<kPow2>(v[4 * h + 2], scale, rcp), div_rn<kPow2>(v[4 * h + 3], scale, rcp)),
                                                 __NV_SATFINITE, __NV_E4M3);
    w[h] = lo | (hi << 16);
  }
  const bool finite = scale == scale;
  return finite ? make_uint2(w[0], w[1]) : make_uint2(0x7F7F7F7Fu, 0x7F7F7F7Fu);
}

}  // namespace quant

// Per-token-group quantisation. x [M, K] row stride x_ld (elements), q [M, K] contiguous e4m3,
// scales written MN-major: scale of (row m, group g) at s[g * s_ld + m] (s_ld = align(M, 4)).
// Grid (ceil(G / kGroups), ceil(M / 16)) for G = ceil(K / 128) groups per row; half-warp h of a
// 256-thread CTA owns row blockIdx.y * 16 + h and its groups blockIdx.x * kGroups + j, 16 threads
// per group, 8 elements each. All kGroups loads are issued before the first reduction (bytes in
// flight), and the 2D grid avoids per-thread integer division.
// Requires K % 16 == 0 and 16-byte aligned rows (checked by the Python wrapper).
template <typename T, bool kPow2, int kGroups>
__global__ void __launch_bounds__(256) quant_token_group(const T* __restrict__ x, uint8_t* __restrict__ q,
                                                         float* __restrict__ s, int M, int K, int64_t x_ld, int s_ld) {
  const int lane = threadIdx.x & 15;
  const int row = blockIdx.y * 16 + (threadIdx.x >> 4);
  // A warp holds rows 2w, 2w+1: it leaves only when both are past M, so the shuffles below run
  // on whole warps (full mask, no divergent-mask syncs); a dead half predicates its memory ops.
  if ((row & ~1) >= M) return;
  const bool live = row < M;
  const T* xr = x + (int64_t)row * x_ld;
  quant::Raw8<T> raw[kGroups];
#pragma unroll
  for (int j = 0; j < kGroups; ++j) {
    const int col = (blockIdx.x * kGroups + j) * 128 + lane * 8;
    raw[j] = quant::Raw8<T>{};
    if (live && col < K) quant::load_raw(xr + col, raw[j]);
  }
#pragma unroll
  for (int j = 0; j < kGroups; ++j) {
    const int g = blockIdx.x * kGroups + j;
    const int col = g * 128 + lane * 8;
    quant::AbsMax<T> am;
    am.add(raw[j]);  // zero-filled tails leave the max unchanged
    uint32_t amax = am.bits();
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) amax = max(amax, __shfl_xor_sync(0xffffffffu, amax, o));  // within the half-warp
    const float scale = quant::group_scale<kPow2>(amax);
    const float rcp = __frcp_rn(scale);
    if (live && col < K) *reinterpret_cast<uint2*>(q + (int64_t)row * K + col) = quant::cast8<kPow2>(raw[j], scale, rcp);
    if (live && lane == 0 && g * 128 < K) s[(int64_t)g * s_ld + row] = scale;
  }
}

// Per-128x128-block quantisation. x [N, K] row stride x_ld, q [N, K] contiguous e4m3,
// s [ceil(N/128), ceil(K/128)] row-major. Grid (ceil(K/128), ceil(N/128)): one CTA of kThreads
// threads per tile, which it holds in registers (bf16: 32 KiB = 128 B per thread at 256 threads),
// so HBM is read once: thread t owns columns (t % 16) * 8 .. +8 of rows t / 16 + (kThreads / 16) * i.
// All loads are issued first, amax is reduced by shuffles and shared memory, then the tile is
// cast from registers and stored.
template <typename T, bool kPow2, int kThreads>
__global__ void __launch_bounds__(kThreads) quant_block(const T* __restrict__ x, uint8_t* __restrict__ q,
                                                        float* __restrict__ s, int N, int K, int64_t x_ld) {
  constexpr int kRowStep = kThreads / 16;  // rows covered by one pass of the CTA
  constexpr int kVecs = 128 / kRowStep;    // 8-element vectors per thread
  constexpr int kWarps = kThreads / 32;
  static_assert(kThreads % 32 == 0 && 128 % kRowStep == 0, "kThreads: 128..2048 by powers of two");
  __shared__ uint32_t red[kWarps];
  const int col = blockIdx.x * 128 + (threadIdx.x & 15) * 8;
  const int row0 = blockIdx.y * 128 + (threadIdx.x >> 4);
  const bool col_ok = col < K;
  quant::Raw8<T> raw[kVecs];
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int row = row0 + kRowStep * i;
    raw[i] = quant::Raw8<T>{};
    if (row < N && col_ok) quant::load_raw(x + row * x_ld + col, raw[i]);
  }
  quant::AbsMax<T> am;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) am.add(raw[i]);
  uint32_t amax = am.bits();
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = max(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = amax;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < kWarps; ++w) amax = max(amax, red[w]);
  const float scale = quant::group_scale<kPow2>(amax);
  const float rcp = __frcp_rn(scale);
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int row = row0 + kRowStep * i;
    if (row < N && col_ok) *reinterpret_cast<uint2*>(q + (int64_t)row * K + col) = quant::cast8<kPow2>(raw[i], scale, rcp);
  }
  if (threadIdx.x == 0) s[blockIdx.y * gridDim.x + blockIdx.x] = scale;
}

}  // namespace jitkern
