// Rejection-sampled speculative verification (Leviathan et al. 2023 / Chen et al. 2023), one launch.
// One thread-block cluster per logits row; each CTA stages its vocab chunk of the row (target
// logits and, for draft rows, the draft probabilities q) in shared memory, so everything is read
// from DRAM once. The cluster exchanges max / sum(exp) / residual masses through DSMEM, then draws
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

// Grid: rows * cs CTAs in clusters of cs (cs = cluster size, 1..8) along x; dynamic smem
// chunk * (sizeof(T) + 4) bytes. logits [rows, V] stride ld; q [sum k, V] fp32 stride qld;
// temps [b] fp32 or null (then temp_scalar); row_p/row_tok [rows] scratch; counters [b] zero on
// entry and exit. Temperature 0 means p = one-hot(argmax) (lowest index on ties).
template <typename T, typename TokT, typename CuT, bool kVec, int kThreads>
__global__ void __launch_bounds__(kThreads) verify_sampled(
    const T* __restrict__ logits, int64_t ld, const float* __restrict__ q, int64_t qld, int V, int chunk,
    const TokT* __restrict__ draft, const CuT* __restrict__ cu, int b, const float* __restrict__ temps,
    float temp_scalar, uint64_t seed, float* __restrict__ row_p, int* __restrict__ row_tok,
    int* __restrict__ counters, int* __restrict__ accepted, int* __restrict__ out, int out_cols) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ uint64_t red64[kThreads / 32];
  __shared__ float redf[kThreads / 32];
  __shared__ uint64_t x_key;
  __shared__ float x_z, x_r, x_p;
  __shared__ int s_req, s_flag;

  const uint32_t cs = cluster_nctarank(), rank = cluster_ctarank();
  const int row = blockIdx.x / cs;
  const int c0 = rank * chunk, c1 = min(V, c0 + chunk), n = max(0, c1 - c0);
  T* sl = reinterpret_cast<T*>(smem);
  float* sq = reinterpret_cast<float*>(smem + (size_t)chunk * sizeof(T));

  if (threadIdx.x < 32) {
    const int r = spec::find_request_warp(cu, b, row);
    if (threadIdx.x == 0) s_req = r;
  }
  __syncthreads();
  const int req = s_req;
  const int d0 = (int)cu[req], k = (int)cu[req + 1] - d0, r0 = d0 + req, j = row - r0;
  const bool bonus = (j == k);
  const int drow = d0 + j;  // row of q / index of the draft token (draft rows only)

  // Stage the chunk: logits (and q) -> smem, asynchronously, all loads in flight at once.
  const T* lrow = logits + (int64_t)row * ld + c0;
  const float* qrow = q + (int64_t)drow * qld + c0;
  if (kVec) {
    constexpr int NL = 16 / sizeof(T);
    for (int v = threadIdx.x; v < n / NL; v += kThreads) spec::cp_async16(sl + v * NL, lrow + v * NL);
    for (int i = n / NL * NL + threadIdx.x; i < n; i += kThreads) sl[i] = lrow[i];
    if (!bonus) {
      for (int v = threadIdx.x; v < n / 4; v += kThreads) spec::cp_async16(sq + v * 4, qrow + v * 4);
      for (int i = n / 4 * 4 + threadIdx.x; i < n; i += kThreads) sq[i] = qrow[i];
    }
    spec::cp_async_wait_all();
  } else {
    for (int i = threadIdx.x; i < n; i += kThreads) sl[i] = lrow[i];
    if (!bonus) for (int i = threadIdx.x; i < n; i += kThreads) sq[i] = qrow[i];
  }
  __syncthreads();

  // Row max and argmax over the cluster.
  float best = 0.0f;
  int bidx = -1;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    float v = (float)sl[i];
    if (bidx < 0 || spec::better(v, best)) { best = v; bidx = c0 + i; }
  }
  uint64_t key = spec::block_max_u64<kThreads>(spec::argmax_key(best, bidx), red64);
  if (threadIdx.x == 0) x_key = key;
  cluster_sync();
  for (uint32_t r = 0; r < cs; ++r) key = spec::u64max(key, spec::ld_cluster_u64(&x_key, r));
  const float m = spec::key_value(key);
  const int amax = spec::key_index(key);
  const float temp = temps ? temps[req] : temp_scalar;
  const bool greedy = !(temp > 0.0f);
  const float scale = greedy ? 0.0f : 1.4426950408889634f / temp;
  auto expw = [&](int i) -> float {  // unnormalised target weight of local element i
    return greedy ? (c0 + i == amax ? 1.0f : 0.0f) : exp2f(((float)sl[i] - m) * scale);
  };

  float s = 0.0f;
  for (int i = threadIdx.x; i < n; i += kThreads) s += expw(i);
  s = spec::block_sum<kThreads>(s, redf);
  if (threadIdx.x == 0) x_z = s;
  cluster_sync();
  float z = 0.0f;
  for (uint32_t r = 0; r < cs; ++r) z += spec::ld_cluster_f32(&x_z, r);
  const float inv_z = 1.0f / z;

  if (threadIdx.x == 0 && !bonus) {
    const int x = (int)draft[drow];
    if (x >= c0 && x < c1) row_p[row] = expw(x - c0) * inv_z;
    else if (rank == 0 && (x < 0 || x >= V)) row_p[row] = 0.0f;  // invalid draft token: reject
  }

  // Residual and target masses; thread t owns local elements t, t + kThreads, ... in that order.
  float tr = 0.0f, tp = 0.0f;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    float p = expw(i) * inv_z;
    tp += p;
    tr += bonus ? p : fmaxf(p - sq[i], 0.0f);
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
  // Zero residual mass (p == q on this row): fall back to sampling from p.
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
    if (threadIdx.x == 0 && rank == 0) row_tok[row] = amax;  // no mass anywhere (degenerate row)
  } else if (chosen == (int)rank) {
    const float mine = use_p ? tp : tr;
    const float t_loc = target - prefix;
    const float excl = spec::block_exclusive_scan<kThreads>(mine, redf);
    uint64_t cand = (mine > 0.0f && excl <= t_loc) ? (uint64_t)(threadIdx.x + 1) : 0ull;
    cand = spec::block_max_u64<kThreads>(cand, red64);
    if (threadIdx.x + 1 == cand) {
      float run = excl;
      int tok = -1, last = -1;
      for (int i = threadIdx.x; i < n; i += kThreads) {
        float p = expw(i) * inv_z;
        float w = (bonus || use_p) ? p : fmaxf(p - sq[i], 0.0f);
        if (w > 0.0f) {
          last = c0 + i;
          run += w;
          if (run > t_loc) { tok = c0 + i; break; }
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
