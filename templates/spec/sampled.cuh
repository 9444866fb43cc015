// Rejection-sampled speculative verification (Leviathan et al. 2023 / Chen et al. 2023), one launch.
// One thread-block cluster per logits row; each CTA stages its vocab chunk of the target logits
// in shared memory (they are used twice) and streams its chunk of the draft probabilities q once
// (prefetched into L2 at the start), so everything is read from DRAM once. The cluster exchanges
// (max, sum exp) and the residual masses through DSMEM, then draws
// this row's candidate token by inverse CDF with a Philox uniform keyed by (seed, request, row):
//   draft row j < k:  from normalize(max(0, p_j - q_j))   (from p_j if that mass is 0)
//   bonus row k:      from p_k
// and publishes p_j(x_j). The last CTA of a request (arrival counter) runs the accept chain:
// accept x_j iff u_j * q_j(x_j) < p_j(x_j). Semantics: jitkern/ops/speculative.py (verify_sampled).
#pragma once
#include "spec/common.cuh"
#include "spec/greedy.cuh"
#include "common/hopper.cuh"

namespace jitkern {
namespace spec {
using namespace ::jitkern::sm90;

__device__ __forceinline__ uint32_t cluster_map(const void* p, uint32_t rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(smem_u32(p)), "r"(rank));
  return r;
}
__device__ __forceinline__ float ld_cluster_f32(const float* p, uint32_t rank) {
  float v;
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(cluster_map(p, rank)) : "memory");
  return v;
}
__device__ __forceinline__ uint64_t ld_cluster_u64(const uint64_t* p, uint32_t rank) {
  uint64_t v;
  asm volatile("ld.shared::cluster.u64 %0, [%1];" : "=l"(v) : "r"(cluster_map(p, rank)) : "memory");
  return v;
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(smem_u32(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.commit_group;\ncp.async.wait_all;" ::: "memory");
}

// Hint: pull [p, p + bytes) into L2 (bulk prefetch; p 16-byte aligned, bytes a multiple of 16).
__device__ __forceinline__ void prefetch_l2_bulk(const void* p, uint32_t bytes) {
  if (bytes) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" :: "l"(p), "r"(bytes) : "memory");
}

// 4 consecutive elements a thread owns (elements at or past n read as -inf / 0).
template <typename T, bool kVec>
__device__ __forceinline__ void load4_smem(const T* s, int e0, int n, float (&v)[4]) {
  if (kVec && e0 + 4 <= n) {
    if (sizeof(T) == 2) {
      uint2 u = *reinterpret_cast<const uint2*>(s + e0);
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
      float2 a = __bfloat1622float2(h[0]), b = __bfloat1622float2(h[1]);
      v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
    } else {
      float4 f = *reinterpret_cast<const float4*>(s + e0);
      v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
    }
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = e0 + e < n ? (float)s[e0 + e] : -__int_as_float(0x7F800000);
  }
}
template <bool kVec>
__device__ __forceinline__ void load4_global(const float* g, int e0, int n, float (&v)[4]) {
  if (kVec && e0 + 4 <= n) {
    float4 f = __ldcs(reinterpret_cast<const float4*>(g + e0));
    v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = e0 + e < n ? g[e0 + e] : 0.0f;
  }
}

// Target probability and residual weight of one element. Round-to-nearest intrinsics forbid
// FMA contraction, so the mass pass and the sampling walk compute bit-identical weights.
struct Weights {
  float m, scale, inv_z;
  int amax;
  bool greedy;
  __device__ __forceinline__ float p(float l, int gidx) const {
    if (greedy) return gidx == amax ? 1.0f : 0.0f;
    return __fmul_rn(exp2f(__fmul_rn(__fsub_rn(l, m), scale)), inv_z);
  }
};

template <int kThreads>
__device__ __forceinline__ float block_exclusive_scan(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float inc = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    float n = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += n;
  }
  __syncthreads();
  if (lane == 31) red[warp] = inc;
  __syncthreads();
  float base = 0.0f;
  for (int w = 0; w < warp; ++w) base += red[w];
  return base + inc - v;
}

}  // namespace spec
using namespace ::jitkern::sm90;

// Grid: rows * cs CTAs in clusters of cs (1..8) along x; dynamic smem chunk * sizeof(T) bytes.
// logits [rows, V] stride ld; q [sum k, V] fp32 stride qld; temps [b] fp32 or null (then
// temp_scalar); row_p/row_tok [rows] scratch; counters [b] zero on entry and exit. Temperature 0
// means p = one-hot(argmax) (lowest index on ties). Thread t owns the 4-element groups
// t, t + kThreads, ... of its CTA's chunk, in that order: the order of the inverse-CDF walk.
template <typename T, typename TokT, typename CuT, bool kVec, int kThreads>
__global__ void __launch_bounds__(kThreads, 4) verify_sampled(
    const T* __restrict__ logits, int64_t ld, const float* __restrict__ q, int64_t qld, int V, int chunk,
    const TokT* __restrict__ draft, const CuT* __restrict__ cu, int b, const float* __restrict__ temps,
    float temp_scalar, uint64_t seed, float* __restrict__ row_p, int* __restrict__ row_tok,
    int* __restrict__ counters, int* __restrict__ accepted, int* __restrict__ out, int out_cols) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ uint64_t red64[kThreads / 32];
  __shared__ float redf[kThreads / 32];
  __shared__ uint64_t x_key;
  __shared__ float x_s, x_r, x_p;
  __shared__ int s_req, s_flag;

  const uint32_t cs = cluster_nctarank(), rank = cluster_ctarank();
  const int row = blockIdx.x / cs;
  const int c0 = rank * chunk, c1 = min(V, c0 + chunk), n = max(0, c1 - c0);
  T* sl = reinterpret_cast<T*>(smem);

  // Logits do not depend on the request: start staging them before the request lookup.
  const T* lrow = logits + (int64_t)row * ld + c0;
  if (kVec) {
    constexpr int NL = 16 / sizeof(T);
    for (int v = threadIdx.x; v < n / NL; v += kThreads) spec::cp_async16(sl + v * NL, lrow + v * NL);
    for (int i = n / NL * NL + threadIdx.x; i < n; i += kThreads) sl[i] = lrow[i];
  } else {
    for (int i = threadIdx.x; i < n; i += kThreads) sl[i] = lrow[i];
  }
  if (threadIdx.x < 32) {
    const int r = spec::find_request_warp(cu, b, row);
    if (threadIdx.x == 0) s_req = r;
  }
  __syncthreads();
  const int req = s_req;
  const int d0 = (int)cu[req], k = (int)cu[req + 1] - d0, r0 = d0 + req, j = row - r0;
  const bool bonus = (j == k);
  const int drow = d0 + j;  // row of q / index of the draft token (draft rows only)
  const float* qrow = q + (int64_t)drow * qld + c0;
  if (kVec && !bonus && threadIdx.x == 0) spec::prefetch_l2_bulk(qrow, (uint32_t)(n * 4) & ~15u);
  const float temp = temps ? temps[req] : temp_scalar;
  const bool greedy = !(temp > 0.0f);
  const float scale = greedy ? 0.0f : 1.4426950408889634f / temp;
  if (kVec) spec::cp_async_wait_all();
  __syncthreads();

  // Pass 1: argmax and online sum of exp over the chunk.
  float best = 0.0f, tm = -__int_as_float(0x7F800000), ts = 0.0f;
  int bidx = -1;
  for (int g = threadIdx.x; g * 4 < n; g += kThreads) {
    float v[4];
    spec::load4_smem<T, kVec>(sl, g * 4, n, v);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (g * 4 + e >= n) break;
      if (bidx < 0 || spec::better(v[e], best)) { best = v[e]; bidx = c0 + g * 4 + e; }
      if (!greedy && v[e] > -__int_as_float(0x7F800000)) {
        if (v[e] > tm) { ts = ts * exp2f((tm - v[e]) * scale) + 1.0f; tm = v[e]; }
        else ts += exp2f((v[e] - tm) * scale);
      }
    }
  }
  uint64_t key = spec::block_max_u64<kThreads>(spec::argmax_key(best, bidx), red64);
  float bm = spec::key_value(key);
  float bs = spec::block_sum<kThreads>(ts > 0.0f ? ts * exp2f((tm - bm) * scale) : 0.0f, redf);
  if (threadIdx.x == 0) { x_key = key; x_s = bs; }
  cluster_sync();
  uint64_t keys[8];
  float sums[8];
#pragma unroll
  for (int r = 0; r < 8; ++r) {
    keys[r] = r < (int)cs ? spec::ld_cluster_u64(&x_key, r) : 0ull;
    sums[r] = r < (int)cs ? spec::ld_cluster_f32(&x_s, r) : 0.0f;
    key = spec::u64max(key, keys[r]);
  }
  spec::Weights W;
  W.m = spec::key_value(key);
  W.amax = spec::key_index(key);
  W.greedy = greedy;
  W.scale = scale;
  float z = 0.0f;
#pragma unroll
  for (int r = 0; r < 8; ++r)
    if (!greedy && sums[r] > 0.0f) z += sums[r] * exp2f((spec::key_value(keys[r]) - W.m) * scale);
  W.inv_z = greedy ? 1.0f : 1.0f / z;

  if (threadIdx.x == 0 && !bonus) {
    const int x = (int)draft[drow];
    if (x >= c0 && x < c1) row_p[row] = W.p((float)sl[x - c0], x);
    else if (rank == 0 && (x < 0 || x >= V)) row_p[row] = 0.0f;  // invalid draft token: reject
  }

  // Pass 2: residual and target masses (q streamed once from global / L2).
  float tr = 0.0f, tp = 0.0f;
  for (int g = threadIdx.x; g * 4 < n; g += kThreads) {
    float v[4], qv[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    spec::load4_smem<T, kVec>(sl, g * 4, n, v);
    if (!bonus) spec::load4_global<kVec>(qrow, g * 4, n, qv);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (g * 4 + e >= n) break;
      const float p = W.p(v[e], c0 + g * 4 + e);
      tp = __fadd_rn(tp, p);
      tr = __fadd_rn(tr, bonus ? p : fmaxf(__fsub_rn(p, qv[e]), 0.0f));
    }
  }
  float br = spec::block_sum<kThreads>(tr, redf);
  float bp = spec::block_sum<kThreads>(tp, redf);
  if (threadIdx.x == 0) { x_r = br; x_p = bp; }
  cluster_sync();
  float rr[8], pp[8], tot_r = 0.0f, tot_p = 0.0f;
#pragma unroll
  for (int r = 0; r < 8; ++r) {
    rr[r] = r < (int)cs ? spec::ld_cluster_f32(&x_r, r) : 0.0f;
    pp[r] = r < (int)cs ? spec::ld_cluster_f32(&x_p, r) : 0.0f;
    tot_r += rr[r];
    tot_p += pp[r];
  }
  // Zero residual mass (p == q on this row up to rounding): fall back to sampling from p.
  const bool use_p = !(tot_r > 0.0f);
  const float total = use_p ? tot_p : tot_r;
  const float target = spec::spec_uniforms(seed, req, j).y * total;
  int chosen = -1;
  float prefix = 0.0f, acc = 0.0f;
#pragma unroll
  for (int r = 0; r < 8; ++r) {
    float w = use_p ? pp[r] : rr[r];
    if (r < (int)cs && w > 0.0f && acc <= target) { chosen = r; prefix = acc; }
    acc += w;
  }
  if (chosen < 0) {
    if (threadIdx.x == 0 && rank == 0) row_tok[row] = W.amax;  // no mass anywhere (degenerate row)
  } else if (chosen == (int)rank) {
    const float mine = use_p ? tp : tr;
    const float t_loc = target - prefix;
    const float excl = spec::block_exclusive_scan<kThreads>(mine, redf);
    uint64_t cand = (mine > 0.0f && excl <= t_loc) ? (uint64_t)(threadIdx.x + 1) : 0ull;
    cand = spec::block_max_u64<kThreads>(cand, red64);
    if (threadIdx.x + 1 == cand) {
      float run = excl;
      int tok = -1, last = -1;
      for (int g = threadIdx.x; g * 4 < n && tok < 0; g += kThreads) {
        float v[4], qv[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        spec::load4_smem<T, kVec>(sl, g * 4, n, v);
        if (!bonus && !use_p) spec::load4_global<kVec>(qrow, g * 4, n, qv);
        for (int e = 0; e < 4; ++e) {
          if (g * 4 + e >= n) break;
          const float p = W.p(v[e], c0 + g * 4 + e);
          const float w = (bonus || use_p) ? p : fmaxf(__fsub_rn(p, qv[e]), 0.0f);
          if (w > 0.0f) {
            last = c0 + g * 4 + e;
            run = __fadd_rn(run, w);
            if (run > t_loc) { tok = last; break; }
          }
        }
      }
      row_tok[row] = tok >= 0 ? tok : last;  // rounding left t_loc at the very end: last positive
    }
  }
  cluster_sync();  // no CTA leaves while another may still read its shared memory

  if (!spec::arrive_last(counters + req, (k + 1) * (int)cs, &s_flag)) return;
  if (threadIdx.x == 0) {
    int acc_n = k, emit = -1;
    for (int jj = 0; jj < k; ++jj) {
      const int x = (int)draft[d0 + jj];
      const bool valid = x >= 0 && x < V;
      const float px = __ldcg(row_p + r0 + jj);
      const float qx = valid ? q[(int64_t)(d0 + jj) * qld + x] : 0.0f;
      const float u = spec::spec_uniforms(seed, req, jj).x;
      if (!(valid && u * qx < px)) { acc_n = jj; emit = __ldcg(row_tok + r0 + jj); break; }
    }
    if (acc_n == k) emit = __ldcg(row_tok + r0 + k);
    s_flag = acc_n;
    red64[0] = (uint64_t)(uint32_t)emit;
  }
  __syncthreads();
  const int acc_n = s_flag, emit = (int)(uint32_t)red64[0];
  const bool fits = k < out_cols;
  for (int c = threadIdx.x; c < out_cols; c += kThreads) {
    int t = -1;
    if (fits) t = c < acc_n ? (int)draft[d0 + c] : (c == acc_n ? emit : -1);
    out[(int64_t)req * out_cols + c] = t;
  }
  if (threadIdx.x == 0) {
    accepted[req] = fits ? acc_n : -1;
    counters[req] = 0;
  }
}

}  // namespace jitkern
