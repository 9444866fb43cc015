// DSpark sequential low-rank Markov draft head, all k positions in one launch. For position t
// and request i: logits = base[i, t, :] + w_out @ w_in[prev_i] (fp32 accumulate), next token =
// argmax (temperature 0; torch.argmax semantics) or a sample from softmax(logits / T) by the
// Gumbel-max trick (exact; Philox keyed by (seed, request, position, token)). prev_i <- next.
// Positions depend on each other through a vocabulary-wide argmax, so the grid is persistent
// (one CTA per SM, all co-resident) and positions are separated by a software grid barrier.
// Each CTA owns a vocab slice; w_out rows are read once per position for all requests.
#pragma once
#include "spec/common.cuh"

namespace jitkern {
namespace spec {

__device__ __forceinline__ void grid_barrier(unsigned* bar, unsigned target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(bar, 1u);
    while (atomicAdd(bar, 0u) < target) __nanosleep(64);
    __threadfence();
  }
  __syncthreads();
}

}  // namespace spec

// base [b, k, V] (stride bs per request, V contiguous) bf16/fp32; first_prev [b]; w_in, w_out
// [V, R] bf16 contiguous (R in {64, 128, 256}); partial [k * b * gridDim.x] u64 scratch; bar [2]
// u32 zero on entry and exit; out [b, k] int32; dynamic smem b ints. Requests go in groups of
// kGB = 8 per pass over the slice (w_out re-read from L1/L2 for later groups). A warp reads
// 32 / (R / 8) w_out rows per step, R / 8 lanes per row (coalesced 16-byte loads); after the
// butterfly reduction lane (row segment) g handles request g of the group.
template <typename TB, typename TokT, int R, int kThreads>
__global__ void __launch_bounds__(kThreads, 1) markov_draft(
    const TB* __restrict__ base, int64_t bs, int V, int k, int b, const TokT* __restrict__ first_prev,
    const __nv_bfloat16* __restrict__ w_in, const __nv_bfloat16* __restrict__ w_out, float temp, uint64_t seed,
    uint64_t* __restrict__ partial, unsigned* __restrict__ bar, int* __restrict__ out) {
  constexpr int kGB = 8, LPR = R / 8, RPW = 32 / LPR, kWarps = kThreads / 32, U = 2;
  static_assert(R % 8 == 0 && LPR >= kGB && LPR <= 32, "R must be 64, 128 or 256");
  __shared__ __align__(16) float h[kGB][R];
  __shared__ unsigned long long skey[kGB];
  extern __shared__ int prev[];  // [b]
  const int G = gridDim.x, cta = blockIdx.x;
  const int slice = (V + G - 1) / G;
  const int v0 = cta * slice, v1 = min(V, v0 + slice);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, seg = lane / LPR, sl = lane % LPR;
  const bool greedy = !(temp > 0.0f);
  const float inv_t = greedy ? 0.0f : 1.0f / temp;
  for (int i = threadIdx.x; i < b; i += kThreads) prev[i] = (int)first_prev[i];
  __syncthreads();

  for (int t = 0; t < k; ++t) {
    for (int g0 = 0; g0 < b; g0 += kGB) {
      const int ng = min(kGB, b - g0);
      for (int e = threadIdx.x; e < kGB * R; e += kThreads) {
        const int gi = e / R, c = e % R;
        h[gi][c] = gi < ng ? __bfloat162float(w_in[(int64_t)prev[g0 + gi] * R + c]) : 0.0f;
      }
      if (threadIdx.x < kGB) skey[threadIdx.x] = 0ull;
      __syncthreads();
      float hv[kGB][8];  // this lane's 8 columns of each request's hidden vector
#pragma unroll
      for (int gi = 0; gi < kGB; ++gi)
#pragma unroll
        for (int e = 0; e < 8; ++e) hv[gi][e] = h[gi][sl * 8 + e];
      const int req = g0 + sl;
      const bool mine_ok = sl < ng;
      const TB* brow = base + (int64_t)(mine_ok ? req : g0) * bs + (int64_t)t * V;
      float best = 0.0f;
      int bidx = -1;
      // Warp-uniform trip count (the shuffles below need every lane).
      for (int wb = v0 + warp * RPW; wb < v1; wb += kWarps * RPW * U) {
        const int vb = wb + seg;
        uint4 u[U];
#pragma unroll
        for (int uu = 0; uu < U; ++uu) {
          const int v = vb + uu * kWarps * RPW;
          u[uu] = v < v1 ? __ldg(reinterpret_cast<const uint4*>(w_out + (int64_t)v * R) + sl) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int uu = 0; uu < U; ++uu) {
          const int v = vb + uu * kWarps * RPW;
          const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&u[uu]);
          float w[8];
#pragma unroll
          for (int e = 0; e < 4; ++e) { float2 f = __bfloat1622float2(w2[e]); w[2 * e] = f.x; w[2 * e + 1] = f.y; }
          float acc[kGB];
#pragma unroll
          for (int gi = 0; gi < kGB; ++gi) {
            float a = 0.0f;
#pragma unroll
            for (int e = 0; e < 8; ++e) a = fmaf(w[e], hv[gi][e], a);
            acc[gi] = a;
          }
#pragma unroll
          for (int o = LPR / 2; o; o >>= 1)
#pragma unroll
            for (int gi = 0; gi < kGB; ++gi) acc[gi] += __shfl_xor_sync(0xffffffffu, acc[gi], o);
          float dot = 0.0f;
#pragma unroll
          for (int gi = 0; gi < kGB; ++gi) dot = gi == sl ? acc[gi] : dot;
          if (mine_ok && v < v1) {
            float l = (float)brow[v] + dot;
            if (!greedy) {
              const uint4 r = spec::philox4x32_10(make_uint4((uint32_t)v, (uint32_t)req, (uint32_t)t, 0x3A7C0Fu),
                                                  make_uint2((uint32_t)seed, (uint32_t)(seed >> 32)));
              const float uni = ((float)(r.x >> 8) + 0.5f) * (1.0f / 16777216.0f);  // (0, 1)
              l = l * inv_t - logf(-logf(uni));
            }
            // Rows of one lane come in increasing order, so "strictly better" keeps the lowest index.
            if (bidx < 0 || spec::better(l, best)) { best = l; bidx = v; }
          }
        }
      }
      if (mine_ok && bidx >= 0) atomicMax(&skey[sl], (unsigned long long)spec::argmax_key(best, bidx));
      __syncthreads();
      if (threadIdx.x < ng) partial[((int64_t)t * b + g0 + threadIdx.x) * G + cta] = skey[threadIdx.x];
      __syncthreads();
    }
    spec::grid_barrier(bar, (unsigned)G * (t + 1));
    // Every CTA reduces the slices' winners itself (no second barrier); one warp per request.
    for (int r = warp; r < b; r += kWarps) {
      uint64_t m = 0;
      for (int s = lane; s < G; s += 32) m = spec::u64max(m, __ldcg(partial + ((int64_t)t * b + r) * G + s));
#pragma unroll
      for (int o = 16; o; o >>= 1) m = spec::u64max(m, __shfl_xor_sync(0xffffffffu, m, o));
      if (lane == 0) {
        prev[r] = spec::key_index(m);
        if (cta == 0) out[(int64_t)r * k + t] = prev[r];
      }
    }
    __syncthreads();
  }
  // The last CTA out resets both counters for the next launch.
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(bar + 1, 1u) == (unsigned)G - 1) { bar[0] = 0; bar[1] = 0; __threadfence(); }
  }
}

}  // namespace jitkern
