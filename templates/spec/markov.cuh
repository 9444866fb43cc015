// DSpark sequential low-rank Markov draft head, all k positions in one launch. For position t
// and request i: logits = base[i, t, :] + w_out @ w_in[prev_i], next token = argmax (greedy) or a
// Gumbel-max sample of softmax(logits / T) (Philox keyed by (seed, request, position, token)),
// prev_i <- next. Semantics and the exact greedy definition: jitkern/ops/speculative.py
// (markov_draft) and jitkern/reference/speculative.py (markov_draft_greedy).
//
// Positions depend on each other through a vocabulary-wide argmax, so the grid is persistent (one
// CTA per SM, all co-resident) with a software grid barrier between positions. Each CTA owns a
// fixed slice of vocabulary rows; per position (and per pass of up to 16 * MT requests) its 8 warps
// compute [16 * MT requests] x [slice rows] = h @ w_out^T with mma.sync m16n8k16 (bf16 in, fp32
// accumulate), reading every w_out row once per pass (from L2 after the first position: the loads
// carry an L2 evict_last policy, the streamed base logits evict_first).
//
// Greedy exactness. Tensor-core accumulation order is not specified, so the mma result `a` is only
// an approximation of the reference logit F (fp32, products exact, summed in increasing column
// order, then + base). Rigorous bound: |a - F| <= m(a) = E + 2^-20 |a| + 2^-100 with
// E = R * 2^-17 * ||w_out row||_2 * ||h||_2 (norms inflated by 2^-10); a model with every mma step
// truncating 17 aligned terms at 2^-22 of the largest needs R * 2^-21, so this is 16x slack. Each
// thread keeps, per request, its first maximum a1 (with its index) and a2, the largest of its other
// values; the CTA's lower bound max(a) - m(max a) (a + m(a) is increasing in a) bounds max F from
// below for the whole grid, so L is the largest such bound any CTA has published so far (a global
// atomicMax per request and position). A thread's a1 with a1 + m(a1) >= L is recomputed exactly (F,
// in the reference's order); if a2 could reach L too, every row the thread scanned for that request
// is. They compete through a 64-bit (value, lowest index) key; every other element has
// F < L <= max F. A non-finite bound or a full list makes the CTA recompute its whole slice
// exactly for that request (slow, correct). The result equals torch.argmax over F bit for bit.
#pragma once
#include "common/hopper.cuh"
#include "spec/common.cuh"

// Diagnostic timeline (scripts/markov_trace.py compiles with -DJITKERN_MARKOV_TRACE=1): thread 0 of
// the first and the last CTA stamps %globaltimer at phase points of the first pass of each
// position into u64 slots at keys + trace_base (past the kernel's scratch; the script allocates
// them). Off: compiles to nothing.
#if defined(JITKERN_MARKOV_TRACE) && JITKERN_MARKOV_TRACE
#define MARKOV_STAMP(slot)                                                                             \
  do {                                                                                                 \
    if (tid == 0 && (cta == 0 || cta == G - 1)) {                                                      \
      unsigned long long ns;                                                                           \
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));                                           \
      keys[trace_base + (cta ? 64 : 0) + (slot)] = ns;                                                     \
    }                                                                                                  \
  } while (0)
// Every CTA's thread 0: u64 slot 128 + slot * G + cta (per-CTA phase times of one position).
#define MARKOV_STAMP_ALL(slot)                                                                         \
  do {                                                                                                 \
    if (tid == 0) {                                                                                    \
      unsigned long long ns;                                                                           \
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));                                           \
      keys[trace_base + 128 + (slot) * G + cta] = ns;                                                  \
    }                                                                                                  \
  } while (0)
#else
#define MARKOV_STAMP(slot) do {} while (0)
#define MARKOV_STAMP_ALL(slot) do {} while (0)
#endif

namespace jitkern {
namespace spec {

// Every CTA arrives once per position; counter target G * (t + 1). Acquire loads (not atomics)
// while spinning keep the 132 pollers off the atomic unit.
// JITKERN_BARRIER_LEAN=1: a release add and the acquire spin alone, no fences (a release RMW
// after the __syncthreads orders the CTA's earlier writes; the acquire load orders what follows).
// Measured on the H200 (markov_draft_exact b = 1 k = 7): 63.1-63.3 us against 64.9-65.5 (third
// 2026-12-01 session), 63.2-63.6 against 63.3-63.6 (fourth, run 1), outputs identical; the markov
// GPU tests passed with it (27, fourth session run 1). Default on; =0 builds the fenced barrier.
#ifndef JITKERN_BARRIER_LEAN
#define JITKERN_BARRIER_LEAN 1
#endif
// JITKERN_MARKOV_GLOBAL_LB=1 (default): the greedy tensor-core kernel prunes its candidates with the
// grid's largest lower bound published so far (markov_draft, "CTA combine"); 0: the CTA's own bound.
#ifndef JITKERN_MARKOV_GLOBAL_LB
#define JITKERN_MARKOV_GLOBAL_LB 1
#endif
// JITKERN_MARKOV_BLOCK_RACE: how the sampled kernel draws (both exact samples of softmax(a / T) over
// the tensor-core logits a; ops/speculative.py MARKOV_SAMPLER picks, the streams differ).
//   0: Gumbel-max over every token, one Philox block per 4 tokens (markov_random), the two logs only
//      for draws that can still win (a per-token threshold test).
//   1: a two-level race over each lane's EPT consecutive tokens of one request (the lane block), the
//      scheme of verify_sampled (sampled.cuh) with the softmax shift taken per lane block: the
//      block's Gumbel key is M / T + log(S) + G with M the block's largest logit, S = sum of
//      exp((a_e - M) / T) (>= 1), so the blocks race with weights exp(M / T) S = sum of exp(a_e / T);
//      the block's token is then drawn by inverse CDF (pick_in_lane) with a second uniform: token e
//      with probability exp(a_e / T) over the whole row, as a race of every token. One Philox block
//      per lane per request pair (rows g and g + 8 of an m-tile: .x/.y and .z/.w) instead of one per
//      4 tokens, one exp per token instead of two, and the logs and the pick only for blocks that
//      can still win.
#ifndef JITKERN_MARKOV_BLOCK_RACE
#define JITKERN_MARKOV_BLOCK_RACE 0
#endif
// JITKERN_MARKOV_KEEP_W=1 (default): a warp with one block past its shared-memory cache keeps it in
// registers across passes (markov_draft, keep_w); 0: streams it from L2 every pass.
#ifndef JITKERN_MARKOV_KEEP_W
#define JITKERN_MARKOV_KEEP_W 1
#endif
// JITKERN_MARKOV_HOLD_H=1 (default): at MT = 1 the h fragments stay in registers for the pass (kHoldH).
#ifndef JITKERN_MARKOV_HOLD_H
#define JITKERN_MARKOV_HOLD_H 1
#endif
// JITKERN_MARKOV_QUAD_EXACT=1 (default): lists of up to 64 candidates are recomputed a candidate per
// quad of lanes (exact_logit_quad); 0: always a candidate per thread (exact_logit).
#ifndef JITKERN_MARKOV_QUAD_EXACT
#define JITKERN_MARKOV_QUAD_EXACT 1
#endif
__device__ __forceinline__ void grid_barrier(unsigned* bar, unsigned target) {
  __syncthreads();
  if (threadIdx.x == 0) {
#if JITKERN_BARRIER_LEAN
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" :: "l"(bar) : "memory");
#else
    __threadfence();
    atomicAdd(bar, 1u);
#endif
    while (true) {
      unsigned seen;
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(bar) : "memory");
      if (seen >= target) break;
      __nanosleep(32);
    }
#if !JITKERN_BARRIER_LEAN
    __threadfence();
#endif
  }
  __syncthreads();
}

__device__ __forceinline__ uint4 ld_hint(const void* p, uint64_t pol) {
  uint4 u;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
               : "=r"(u.x), "=r"(u.y), "=r"(u.z), "=r"(u.w) : "l"(p), "l"(pol));
  return u;
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, uint64_t pol) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" :: "r"(s), "l"(gmem), "l"(pol) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait1() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }

__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float bf_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf_hi(uint32_t w) { return __uint_as_float(w & 0xFFFF0000u); }
__device__ __forceinline__ float max_nan(float a, float b) {
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ float ordered_value(uint32_t o) {  // inverse of order_bits (o != 0)
  if (o == 0xFFFFFFFFu) return __uint_as_float(0x7FC00000u);
  return __uint_as_float((o & 0x80000000u) ? (o & 0x7FFFFFFFu) : ~o);
}

// n (8 consecutive elements of a base row, or 4 when EPT == 4) as fp32, from 16-byte aligned smem.
template <int N>
__device__ __forceinline__ void load_vals(const __nv_bfloat16* p, float (&f)[N]) {
  if constexpr (N == 8) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) { f[2 * i] = bf_lo(w[i]); f[2 * i + 1] = bf_hi(w[i]); }
  } else {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    f[0] = bf_lo(u.x); f[1] = bf_hi(u.x); f[2] = bf_lo(u.y); f[3] = bf_hi(u.y);
  }
}
template <int N>
__device__ __forceinline__ void load_vals(const float* p, float (&f)[N]) {
#pragma unroll
  for (int i = 0; i < N; i += 4) {
    const float4 u = *reinterpret_cast<const float4*>(p + i);
    f[i] = u.x; f[i + 1] = u.y; f[i + 2] = u.z; f[i + 3] = u.w;
  }
}

// h of one pass (16 * MT requests, R columns, bf16) in shared memory, in mma A-fragment order:
// uint4 [MT][R / 32][2][32 lanes]: lane (g, t4) of m-tile m, column chunk q and k-step s holds the
// four 32-bit words {h[g][c], h[g + 8][c], h[g][c + 2], h[g + 8][c + 2]} (each a bf16 pair c, c + 1)
// with c = 32q + 8t4 + 4s (rows g + 8: the m-tile's upper half), in the kernel's permuted reduction
// order, so each A operand is one conflict-free 16-byte load (padded rows needed two loads and
// register moves per mma: 1.5x the scan's instructions at MT = 4).
template <int R>
struct HLayout {
  static constexpr int kQ = R / 32;
  // 32-bit word holding columns (c, c + 1) of pass row `row` (c even).
  static __device__ __forceinline__ int word(int row, int c) {
    const int m = row >> 4, g = row & 7, hi = (row >> 3) & 1;
    const int q = c >> 5, t4 = (c >> 3) & 3, st = (c >> 2) & 1, jj = (c >> 1) & 1;
    return ((((m * kQ + q) * 2 + st) * 32 + g * 4 + t4) << 2) + 2 * jj + hi;
  }
};

// Reference logit of vocabulary row v: fp32, acc = 0, acc = acc + w[c] * h[c] for c = 0..R-1 (each
// product of two bf16 values rounded to fp32 on its own, never fused), then base + acc. h: the
// request's w_in row in global memory (L2-hot: the pass's h fill just read it), not the shared h:
// the lanes of a warp recompute different requests' rows, whose fragment-order words share banks
// (no speed difference was measured either way; this keeps exact_logit off the h layout).
// Not inlined: two call sites, and the scan loop must stay small for the instruction cache.
template <int R>
__device__ __noinline__ float exact_logit(const __nv_bfloat16* __restrict__ w_out, const __nv_bfloat16* __restrict__ hrow,
                                          float basev, int v) {
  const uint4* wp = reinterpret_cast<const uint4*>(w_out + (int64_t)v * R);
  const uint4* hp = reinterpret_cast<const uint4*>(hrow);
  float acc = 0.0f;
#pragma unroll 8
  for (int c8 = 0; c8 < R / 8; ++c8) {
    const uint4 wu = __ldg(wp + c8), hu = __ldg(hp + c8);
    const uint32_t ww[4] = {wu.x, wu.y, wu.z, wu.w}, hh[4] = {hu.x, hu.y, hu.z, hu.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      acc = __fadd_rn(acc, __fmul_rn(bf_lo(ww[i]), bf_lo(hh[i])));
      acc = __fadd_rn(acc, __fmul_rn(bf_hi(ww[i]), bf_hi(hh[i])));
    }
  }
  return __fadd_rn(basev, acc);
}

// The same logit by the 4 lanes of a quad (q = lane & 3): lane q loads columns [R/4 q, R/4 (q+1))
// of w and h, all in flight at once (one thread's 2 R / 8 chunks did not fit its registers: two
// dependent L2 round trips), and the fp32 sum runs through the lanes in column order (lane q adds
// its products to the partial sum of lane q - 1). Every lane returns the logit.
template <int R, typename TB>
__device__ __forceinline__ float exact_logit_quad(const __nv_bfloat16* __restrict__ w_out, const __nv_bfloat16* __restrict__ hrow,
                                                  const TB* bptr, int v, int q) {
  constexpr int C = R / 32;  // 16-byte chunks per lane
  const uint4* wp = reinterpret_cast<const uint4*>(w_out + (int64_t)v * R) + q * C;
  const uint4* hp = reinterpret_cast<const uint4*>(hrow) + q * C;
  uint4 wu[C], hu[C];
#pragma unroll
  for (int c = 0; c < C; ++c) { wu[c] = __ldg(wp + c); hu[c] = __ldg(hp + c); }
  const float basev = (float)*bptr;
  const unsigned mask = 0xFu << (threadIdx.x & 28);
  float acc = 0.0f;
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    if (q == s) {
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const uint32_t ww[4] = {wu[c].x, wu[c].y, wu[c].z, wu[c].w}, hh[4] = {hu[c].x, hu[c].y, hu[c].z, hu[c].w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          acc = __fadd_rn(acc, __fmul_rn(bf_lo(ww[i]), bf_lo(hh[i])));
          acc = __fadd_rn(acc, __fmul_rn(bf_hi(ww[i]), bf_hi(hh[i])));
        }
      }
    }
    acc = __shfl_sync(mask, acc, s, 4);
  }
  return __fadd_rn(basev, acc);
}

// Philox block of 4 tokens (token group v4 = token / 4) and the Gumbel tail, out of line: the scan
// calls them from 2 * MT * EPT / 4 unrolled sites (inlined, the loop overflowed the i-cache).
__device__ __noinline__ uint4 markov_random(uint32_t v4, uint32_t req, uint32_t pos, uint64_t seed) {
  return philox4x32_10(make_uint4(v4, req, pos, 0x3A7C0Fu), make_uint2((uint32_t)seed, (uint32_t)(seed >> 32)));
}
__device__ __noinline__ float gumbel(float u) { return -__logf(-logf(u)); }
// Philox block of one lane block (JITKERN_MARKOV_BLOCK_RACE): lane block lb = token / EPT, rows
// req0 and req0 + 8 of an m-tile (.x, .y drive req0's race and pick, .z, .w req0 + 8's).
__device__ __noinline__ uint4 markov_block_random(uint32_t lb, uint32_t req0, uint32_t pos, uint64_t seed) {
  return philox4x32_10(make_uint4(lb, req0, pos, 0xB10C3A7Cu), make_uint2((uint32_t)seed, (uint32_t)(seed >> 32)));
}

// A lane's EPT logits of one request in a block: the base values at `row` (the stage's row of the
// request, the lane's EPT columns) plus the mma accumulators of half h (rows g or g + 8), -inf past V
// (only in the vocabulary's last block, `tail`).
template <int EPT, int NT, typename TB>
__device__ __forceinline__ void lane_logits(const TB* row, const float (&acc)[NT][4], int h, int v0, int V, bool tail,
                                            float (&x)[EPT]) {
  load_vals<EPT>(row, x);
#pragma unroll
  for (int e = 0; e < EPT; ++e) x[e] = acc[e >> 1][2 * h + (e & 1)] + x[e];
  if (tail) {
#pragma unroll
    for (int e = 0; e < EPT; ++e) if (v0 + e >= V) x[e] = -__int_as_float(0x7F800000);
  }
}

// Per (thread, request) greedy state: the first maximum of the approximate logits (NaN counts as
// largest) and a2, the largest of the others (an upper bound of every value not recomputed when
// only (a1, i1) is). Elements in increasing index order; branch-free: 5 instructions per element
// (a top-two state with a bound of the rest took 1.3x the scan instructions and was 4-8% slower).
struct Top1 {
  float a1, a2;
  int i1;
  __device__ __forceinline__ void init() {
    a1 = a2 = -__int_as_float(0x7F800000);
    i1 = -1;
  }
  template <int N>
  __device__ __forceinline__ void update(const float (&x)[N], int idx0) {
#pragma unroll
    for (int e = 0; e < N; ++e) {
      i1 = x[e] > a1 ? idx0 + e : i1;  // strict: an equal later value leaves i1 (and lands in a2)
      a2 = fmaxf(a2, fminf(a1, x[e]));
      a1 = max_nan(a1, x[e]);          // a NaN sticks: the CTA then recomputes its slice exactly
    }
  }
};

// End of both markov kernels: hand the CTA's w_out slice [v_lo, v_hi) back to normal L2 priority,
// then the last CTA out zeroes the nkeys keys and the barrier / exit counters (every CTA has read
// every key by the time it arrives here), so the scratch is ready for the next launch.
template <int R, int kThreads>
__device__ __forceinline__ void markov_exit(const __nv_bfloat16* w_out, int v_lo, int v_hi, unsigned* sync, int nkeys) {
  __shared__ int s_last;
  const int tid = threadIdx.x;
  {
    const unsigned long long a0 = reinterpret_cast<unsigned long long>(w_out + (int64_t)v_lo * R) & ~127ull;
    const unsigned long long a1 = reinterpret_cast<unsigned long long>(w_out + (int64_t)v_hi * R);
    for (unsigned long long a = a0 + (unsigned long long)tid * 128; a < a1; a += kThreads * 128)
      asm volatile("applypriority.global.L2::evict_normal [%0], 128;" :: "l"(a) : "memory");
  }
  __syncthreads();
  if (tid == 0) {
    __threadfence();
    s_last = atomicAdd(sync + 1, 1u) == (unsigned)gridDim.x - 1;
    if (s_last) __threadfence();
  }
  __syncthreads();
  if (s_last) {
    unsigned long long* keys = reinterpret_cast<unsigned long long*>(sync + 4);
    for (int i = tid; i < nkeys; i += kThreads) keys[i] = 0ull;
    __syncthreads();
    if (tid == 0) { sync[0] = 0u; sync[1] = 0u; __threadfence(); }
  }
}

// Margin m(a) (see the file comment): |approximate - exact| <= m(a) when E is the dot bound.
__device__ __forceinline__ float margin(float a, float E) { return E + fabsf(a) * 0x1p-20f + 0x1p-100f; }

}  // namespace spec

// base [b, k, V] bf16/fp32 (request stride bs, position stride V, V contiguous); first_prev [b];
// w_in, w_out [V, R] bf16 contiguous, 16-byte aligned; sync: u32 scratch, zero on entry and left
// zero: [0] barrier, [1] exit count, [2..3] unused, then k * b u64 argmax keys at sync + 4 and
// (greedy) k * b u64 lower bounds after them (markov_scratch_words on the host);
// out [b, k] int32. Grid: one CTA per SM (all co-resident), 256 threads, dynamic smem from
// markov_smem_bytes on the host. kVec: 16-byte aligned base rows (V and bs multiples of 16 bytes).
// cache_blocks: how many of each warp's blocks keep their w_out tile in shared memory across
// positions (filled during the first pass, read with conflict-free 16-byte loads afterwards).
//
// Warp tiles: a warp takes blocks of BR = 8 * NT vocabulary rows (NT n-tiles of 8) and all 16 * MT
// requests of the pass. The reduction dimension is permuted (same permutation for both operands,
// so the dot product is unchanged) so that each lane reads 16 contiguous bytes per row and per two
// k-steps: lane (g, t) holds columns 32q + 8t .. 32q + 8t + 7 of chunk q. The n dimension is
// permuted so that lane t owns EPT = 2 * NT consecutive vocabulary rows of the block: n-tile j,
// column n maps to block row EPT * (n / 2) + 2j + n % 2.
template <typename TB, typename TokT, int R, int MT, bool kSampled, bool kVec>
__global__ void __launch_bounds__(256, 1) markov_draft(
    const TB* __restrict__ base, int64_t bs, int V, int k, int b, const TokT* __restrict__ first_prev,
    const __nv_bfloat16* __restrict__ w_in, const __nv_bfloat16* __restrict__ w_out, float temp, uint64_t seed,
    unsigned* __restrict__ sync, int* __restrict__ out, int cache_blocks) {
  constexpr int kThreads = 256, kWarps = 8;
  constexpr int NT = R <= 128 ? 4 : 2, EPT = 2 * NT, BR = 8 * NT, Q = R / 32, BP = 16 * MT;
  constexpr bool kBlockRace = kSampled && JITKERN_MARKOV_BLOCK_RACE;
  constexpr int BRS = BR + ((sizeof(TB) == 4 && BR == 32) ? 4 : 0);  // base stage row stride, same reason
  constexpr int STAGE = BP * BRS;
  constexpr int CPR = BR * (int)sizeof(TB) / 16;  // 16-byte chunks per base row of a block
  constexpr int kMaxCand = 512;
  static_assert(R == 64 || R == 128 || R == 256, "R must be 64, 128 or 256");

  extern __shared__ __align__(16) unsigned char smem[];
  uint32_t* sh_h = reinterpret_cast<uint32_t*>(smem);                          // [BP][R] bf16, HLayout
  TB* sh_base = reinterpret_cast<TB*>(smem + BP * R * 2);                      // [kWarps][2][BP][BRS]
  uint4* sh_w = reinterpret_cast<uint4*>(smem + BP * R * 2 + kWarps * 2 * STAGE * sizeof(TB));
  // sh_w: [kWarps][cache_blocks][NT][Q][32 lanes] uint4
  __shared__ float s_hn[BP];              // ||h||_2 of each request of the pass (inflated)
  __shared__ unsigned s_amax[BP];         // CTA max of the approximate logits (order_bits)
  __shared__ unsigned s_lb[BP];           // lower bound of the request's max F over the grid so far
  __shared__ int s_fb[BP];                // 1: recompute the whole slice exactly for this request
  __shared__ int s_prev[BP];              // the pass's previous tokens (h = w_in[s_prev[row]])
  __shared__ unsigned long long s_key[BP];
  __shared__ int2 s_cand[kMaxCand];       // (request row, token) to recompute exactly
  __shared__ int s_ncand;
  __shared__ unsigned s_w2;               // max squared w_out row norm of the slice (float bits)

  const int G = gridDim.x, cta = blockIdx.x, tid = threadIdx.x;
  const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int nblk = (V + BR - 1) / BR;
  const int blk0 = (int)((int64_t)cta * nblk / G), blk1 = (int)((int64_t)(cta + 1) * nblk / G);
  const int v_lo = blk0 * BR, v_hi = min(V, blk1 * BR);
  const int nw = blk1 - blk0 > warp ? (blk1 - blk0 - warp + kWarps - 1) / kWarps : 0;  // this warp's blocks
  const int ncache = min(cache_blocks, nw);
  const float inv_t = kSampled ? 1.0f / temp : 0.0f;
  const uint64_t pol_w = sm90::l2_policy_evict_last(), pol_b = sm90::l2_policy_evict_first();
  unsigned long long* keys = reinterpret_cast<unsigned long long*>(sync + 4);
  unsigned long long* bounds = keys + (int64_t)k * b;  // [k][b] order_bits of a lower bound of max F
  [[maybe_unused]] const int64_t trace_base = (kSampled ? 1 : 2) * (int64_t)k * b;  // = markov_exit's nkeys
  TB* my_stage = sh_base + warp * 2 * STAGE;
  uint4* my_cache = sh_w + (int64_t)warp * cache_blocks * NT * Q * 32 + lane;

  if (tid == 0) s_w2 = 0u;
  float wsq = 0.0f;  // this thread's largest squared row norm (greedy, first pass only)
  bool filled = false;

  uint4 wg[NT][Q];  // the warp's next block from global memory (in flight), or its kept block (keep_w)

  MARKOV_STAMP(0);
  for (int t = 0; t < k; ++t) {
    for (int p0 = 0; p0 < b; p0 += BP) {
      const int nb = min(BP, b - p0);
      __syncthreads();  // previous pass done with sh_h and the s_ arrays
      // prev token: first_prev at t = 0, else the previous position's winner (read after the
      // barrier); all of the pass's tokens first, then every h chunk load in flight at once (a
      // token -> row chain per chunk took ~2.5 us per position at b = 64).
      if (tid < nb) {
        const int pv = t == 0 ? (int)first_prev[p0 + tid] : spec::key_index(__ldcg(keys + (int64_t)(t - 1) * b + p0 + tid));
        s_prev[tid] = min(max(pv, 0), V - 1);
      }
      __syncthreads();
      {
        constexpr int kChunks = BP * (R / 8), kPer = (kChunks + kThreads - 1) / kThreads;  // 16-byte h chunks
        uint4 u[kPer];
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          const int e = tid + i * kThreads, row = e / (R / 8), ch = e % (R / 8);
          u[i] = e < kChunks && row < nb ? __ldg(reinterpret_cast<const uint4*>(w_in + (int64_t)s_prev[row] * R) + ch)
                                         : make_uint4(0u, 0u, 0u, 0u);
        }
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          const int e = tid + i * kThreads, row = e / (R / 8), ch = e % (R / 8);
          if (e >= kChunks) break;
          const uint32_t w4[4] = {u[i].x, u[i].y, u[i].z, u[i].w};
#pragma unroll
          for (int c = 0; c < 4; ++c) sh_h[spec::HLayout<R>::word(row, 8 * ch + 2 * c)] = w4[c];
        }
      }
      if (tid < BP) { s_amax[tid] = 0u; s_fb[tid] = 0; s_key[tid] = 0ull; }
      if (tid == 0) s_ncand = 0;
      __syncthreads();
      if (p0 == 0) MARKOV_STAMP(1 + 6 * t);  // h loaded
      if (p0 == 0 && t == 1) MARKOV_STAMP_ALL(0);
      // MT = 1: the pass's h fragments (8 x 16 bytes per lane at R = 128) stay in registers for all
      // blocks instead of being re-read from shared memory per block (a third of the scan's smem
      // traffic at MT = 1).
      constexpr bool kHoldH = JITKERN_MARKOV_HOLD_H && MT == 1;
      uint4 hreg[kHoldH ? Q : 1][2];
      if constexpr (kHoldH) {
#pragma unroll
        for (int q = 0; q < Q; ++q) {
          hreg[q][0] = reinterpret_cast<const uint4*>(sh_h)[(q * 2) * 32 + lane];
          hreg[q][1] = reinterpret_cast<const uint4*>(sh_h)[(q * 2) * 32 + 32 + lane];
        }
      }
      if constexpr (!kSampled) {
        for (int row = warp; row < BP; row += kWarps) {  // ||h||_2 in fp32, inflated below
          float sum = 0.0f;
          for (int c = 2 * lane; c < R; c += 64) {
            const uint32_t w = sh_h[spec::HLayout<R>::word(row, c)];
            sum = fmaf(spec::bf_lo(w), spec::bf_lo(w), sum);
            sum = fmaf(spec::bf_hi(w), spec::bf_hi(w), sum);
          }
#pragma unroll
          for (int o = 16; o; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
          if (lane == 0) s_hn[row] = sqrtf(sum) * (1.0f + 0x1p-10f) + 0x1p-60f;
        }
      }

      // ---- scan over this warp's blocks: cached ones (from smem) first, then the ones streamed from
      // global memory, whose w_out loads run one block ahead in registers; base tiles go through a
      // per-warp double buffer of cp.async stages ----
      spec::Top1 top[MT][2];
      float yb[MT][2];
      int ib[MT][2];
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int h = 0; h < 2; ++h) { top[m][h].init(); yb[m][h] = -__int_as_float(0x7F800000); ib[m][h] = -1; }
      const bool norms = !kSampled && t == 0 && p0 == 0;
      const int first_global = filled ? ncache : 0;  // blocks [first_global, nw) come from global memory

      auto blk_of = [&](int i) { return blk0 + warp + i * kWarps; };
      auto load_w = [&](uint4 (&bw)[NT][Q], int blk) {
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          const int v = blk * BR + EPT * (g >> 1) + 2 * j + (g & 1);
          const uint4* src = reinterpret_cast<const uint4*>(w_out + (int64_t)v * R + 8 * t4);
#pragma unroll
          for (int q = 0; q < Q; ++q) bw[j][q] = v < V ? spec::ld_hint(src + 4 * q, pol_w) : make_uint4(0u, 0u, 0u, 0u);
        }
      };
      auto load_base = [&](int blk, int st) {
        TB* dst = my_stage + st * STAGE;
        const int vb = blk * BR;
        if constexpr (kVec) {
          for (int c = lane; c < nb * CPR; c += 32) {
            const int row = c / CPR, ch = c % CPR, v = vb + ch * (16 / (int)sizeof(TB));
            if (v < V)
              spec::cp_async16(dst + row * BRS + ch * (16 / (int)sizeof(TB)),
                               base + (int64_t)(p0 + row) * bs + (int64_t)t * V + v, pol_b);
          }
        } else {
          for (int c = lane; c < nb * BR; c += 32) {
            const int row = c / BR, x = c % BR;
            if (vb + x < V) dst[row * BRS + x] = base[(int64_t)(p0 + row) * bs + (int64_t)t * V + vb + x];
          }
        }
        spec::cp_async_commit();
      };

      uint4 wc[NT][Q];  // the block being processed
      // A warp with a single block past its shared-memory cache (every warp at MT = 1 on the
      // DeepSeek shape) keeps that block in wg from the first pass on: the first pass ends with it
      // there, and no pass streams w_out from L2 again.
      const bool keep_w = JITKERN_MARKOV_KEEP_W && filled && nw - ncache == 1;
      if (first_global < nw && !keep_w) load_w(wg, blk_of(first_global));
      if (nw > 0) load_base(blk_of(0), 0);
      for (int i = 0; i < nw; ++i) {
        const int blk = blk_of(i), st = i & 1;
        if (i + 1 < nw) load_base(blk_of(i + 1), st ^ 1); else spec::cp_async_commit();
        if (i >= first_global) {
#pragma unroll
          for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int q = 0; q < Q; ++q) wc[j][q] = wg[j][q];
          if (i + 1 < nw) load_w(wg, blk_of(i + 1));
          if (i < ncache) {  // first pass: keep this tile for the later positions
#pragma unroll
            for (int j = 0; j < NT; ++j)
#pragma unroll
              for (int q = 0; q < Q; ++q) my_cache[((i * NT + j) * Q + q) * 32] = wc[j][q];
          }
        } else {
#pragma unroll
          for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int q = 0; q < Q; ++q) wc[j][q] = my_cache[((i * NT + j) * Q + q) * 32];
        }
        spec::cp_async_wait1();
        __syncwarp();
        if (p0 == 0 && t == 1 && i < 8) MARKOV_STAMP(44 + 2 * i);  // warp 0: block i's base tile here
        const TB* stg = my_stage + st * STAGE;
        if (p0 == 0 && t == 1 && i == 0) MARKOV_STAMP(60);  // warp 0: block 0's operands in hand
        const int v0 = blk * BR + EPT * t4;  // this lane's first vocabulary row of the block
        if (norms) {
#pragma unroll
          for (int j = 0; j < NT; ++j) {
            float sq = 0.0f;
#pragma unroll
            for (int q = 0; q < Q; ++q) {
              const uint32_t w4[4] = {wc[j][q].x, wc[j][q].y, wc[j][q].z, wc[j][q].w};
#pragma unroll
              for (int x = 0; x < 4; ++x) {
                sq = fmaf(spec::bf_lo(w4[x]), spec::bf_lo(w4[x]), sq);
                sq = fmaf(spec::bf_hi(w4[x]), spec::bf_hi(w4[x]), sq);
              }
            }
            sq += __shfl_xor_sync(0xffffffffu, sq, 1);
            sq += __shfl_xor_sync(0xffffffffu, sq, 2);
            wsq = fmaxf(wsq, sq);
          }
        }
        const bool tail = v0 + EPT > V;  // only in the vocabulary's last block
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          if (m * 16 >= nb) break;  // warp-uniform
          float acc[NT][4];
#pragma unroll
          for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
#pragma unroll
          for (int q = 0; q < Q; ++q) {
            const uint4* hf = reinterpret_cast<const uint4*>(sh_h) + ((m * Q + q) * 2) * 32 + lane;
            const uint4 a0 = kHoldH ? hreg[q][0] : hf[0], a1 = kHoldH ? hreg[q][1] : hf[32];  // HLayout: k-steps 0 and 1 of chunk q
#pragma unroll
            for (int j = 0; j < NT; ++j) {
              spec::mma_bf16(acc[j], a0.x, a0.y, a0.z, a0.w, wc[j][q].x, wc[j][q].y);
              spec::mma_bf16(acc[j], a1.x, a1.y, a1.z, a1.w, wc[j][q].z, wc[j][q].w);
            }
          }
          [[maybe_unused]] uint4 brnd;  // block race: this lane block's random words for rows g, g + 8
          if constexpr (kBlockRace) brnd = spec::markov_block_random((uint32_t)(v0 / EPT), (uint32_t)(p0 + m * 16 + g),
                                                                     (uint32_t)t, seed);
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int row = m * 16 + 8 * h + g;
            if (m * 16 + 8 * h >= nb) break;  // warp-uniform: no valid request in this half
            float x[EPT];
            spec::lane_logits(stg + row * BRS + EPT * t4, acc, h, v0, V, tail, x);
            if (row >= nb) continue;
            if constexpr (!kSampled) {
              top[m][h].update(x, v0);
            } else if constexpr (kBlockRace) {
              float mx = -__int_as_float(0x7F800000);
#pragma unroll
              for (int e = 0; e < EPT; ++e) mx = fmaxf(mx, x[e]);  // NaN ignored
              if (mx > -__int_as_float(0x7F800000)) {  // some token of the lane block has weight
                // weights exp((a - M) / T) = exp2(a c - M c), the block's largest ~1; one rounding of
                // M c inside the exponent, as the per-token path rounds a / T
                const float c = inv_t * 1.4426950408889634f, mc = mx * c;
#pragma unroll
                for (int e = 0; e < EPT; ++e) x[e] = spec::ex2_ftz(fmaf(x[e], c, -mc));
                float S = spec::lane_sum(x);
                if (!(S > 0.5f)) {
                  // Rare: NaN logits, +inf, or M c past FLT_MAX. The logits again, NaN never drawn,
                  // +inf as the largest finite value, weights from a - M exactly.
                  spec::lane_logits(stg + row * BRS + EPT * t4, acc, h, v0, V, tail, x);
#pragma unroll
                  for (int e = 0; e < EPT; ++e) x[e] = fminf(fmaxf(x[e], -__int_as_float(0x7F800000)), 0x1.fffffep127f);
                  mx = fminf(mx, 0x1.fffffep127f);
#pragma unroll
                  for (int e = 0; e < EPT; ++e) x[e] = spec::ex2_ftz(__fmul_rn(__fsub_rn(x[e], mx), c));
                  S = spec::lane_sum(x);
                }
                const float zt = mx * inv_t;
                const float u = spec::open01(h ? brnd.z : brnd.x);
                // Skip the logs when even this draw cannot win: zt + log S + gumbel(u) > yb  <=>
                // u > exp(-S exp(zt - yb)) (with the per-token test's slack for the fast exps).
                if (u > __expf(-S * __expf(zt - yb[m][h])) - 0x1p-18f) {
                  const float y = zt + __logf(S) + spec::gumbel(u);
                  if (spec::better(y, yb[m][h])) {
                    yb[m][h] = y;
                    ib[m][h] = v0 + spec::pick_in_lane(x, __fmul_rn(spec::uniform01(h ? brnd.w : brnd.y), S));
                  }
                }
              }
            } else {
              const int req = p0 + row;
#pragma unroll
              for (int g4 = 0; g4 < EPT / 4; ++g4) {
                const uint4 rnd = spec::markov_random((uint32_t)((v0 >> 2) + g4), (uint32_t)req, (uint32_t)t, seed);
                const uint32_t r4[4] = {rnd.x, rnd.y, rnd.z, rnd.w};
#pragma unroll
                for (int e4 = 0; e4 < 4; ++e4) {
                  const int e = 4 * g4 + e4;
                  const float z = x[e] * inv_t;
                  const float u = spec::open01(r4[e4]);
                  // Skip the logs when even this draw cannot win: gumbel(u) > yb - z  <=>  u > exp(-exp(z - yb)).
                  const float thr = __expf(-__expf(z - yb[m][h]));
                  if (u > thr - 0x1p-18f) {
                    const float y = z + spec::gumbel(u);
                    if (spec::better(y, yb[m][h])) { yb[m][h] = y; ib[m][h] = v0 + e; }
                  }
                }
              }
            }
          }
        }
        __syncwarp();  // stage st fully read before it is refilled
        if (p0 == 0 && t == 1 && i < 8) MARKOV_STAMP(45 + 2 * i);  // warp 0: block i done
      }
      if (p0 == 0) MARKOV_STAMP(2 + 6 * t);  // warp 0's scan done

      // ---- CTA combine for this pass ----
      if constexpr (kSampled) {
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            uint64_t key = spec::argmax_key(yb[m][h], ib[m][h]);
            key = spec::u64max(key, __shfl_xor_sync(0xffffffffu, key, 1));
            key = spec::u64max(key, __shfl_xor_sync(0xffffffffu, key, 2));
            const int row = m * 16 + 8 * h + g;
            if (t4 == 0 && row < nb && key) atomicMax(&s_key[row], (unsigned long long)key);
          }
      } else {
        if (norms) {
#pragma unroll
          for (int o = 16; o; o >>= 1) wsq = fmaxf(wsq, __shfl_xor_sync(0xffffffffu, wsq, o));
          if (lane == 0) atomicMax(&s_w2, __float_as_uint(wsq));
        }
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            // -inf when the thread saw nothing finite: the CTA max is then -inf and the slice is recomputed.
            uint32_t o = spec::order_bits(top[m][h].a1);
            o = max(o, __shfl_xor_sync(0xffffffffu, o, 1));
            o = max(o, __shfl_xor_sync(0xffffffffu, o, 2));
            const int row = m * 16 + 8 * h + g;
            if (t4 == 0 && row < nb && o) atomicMax(&s_amax[row], o);
          }
        __syncthreads();
        if (p0 == 0) MARKOV_STAMP(3 + 6 * t);  // every warp's scan done
        if (p0 == 0 && t == 1) MARKOV_STAMP_ALL(1);
        const float w2 = sqrtf(__uint_as_float(s_w2)) * (1.0f + 0x1p-10f) + 0x1p-60f;
        // The CTA's lower bound L = A - m(A) of max F is valid for the whole grid: it is published
        // (atomicMax of its order bits per request and position) and the largest bound published so
        // far replaces it. Only CTAs whose candidates could beat every earlier CTA's then recompute
        // (~ln G of them per request instead of all G), so the last CTA to finish its scan, which
        // sees nearly every bound, rarely has any recompute left before the grid barrier.
        if (tid < nb) {
          unsigned lb = 0u;
          if (s_amax[tid] != 0u) {
            const float A = spec::ordered_value(s_amax[tid]);
            const float E = (float)R * 0x1p-17f * w2 * s_hn[tid];
            if (fabsf(A) < 0x1p100f && E < 0x1p64f) {
              lb = spec::order_bits(A - spec::margin(A, E));
#if JITKERN_MARKOV_GLOBAL_LB
              lb = max(lb, (unsigned)atomicMax(bounds + (int64_t)t * b + p0 + tid, (unsigned long long)lb));
#endif
            }
          }
          s_lb[tid] = lb;
        }
        __syncthreads();
        // Candidates (approximate value within the margin of the lower bound) go to a list that the
        // whole CTA recomputes in parallel; a thread whose dropped values are doubtful adds all its
        // rows; an overflowing list or a non-finite bound sends the request to the exact slice pass.
        // First of n list slots for request `row`, or -1 when the list is full: the request then
        // takes the exact slice pass, and the slots it reserved below kMaxCand are marked unused.
        auto reserve = [&](int row, int n) -> int {
          const int slot = atomicAdd(&s_ncand, n);
          if (slot + n <= kMaxCand) return slot;
          for (int c = slot; c < kMaxCand; ++c) s_cand[c] = make_int2(row, -1);
          s_fb[row] = 1;
          return -1;
        };
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int row = m * 16 + 8 * h + g;
            if (row >= nb || s_amax[row] == 0u) continue;
            const auto& tp = top[m][h];
            const float A = spec::ordered_value(s_amax[row]);
            const float E = (float)R * 0x1p-17f * w2 * s_hn[row];
            const float bound = tp.a2;  // every value of the thread but its first maximum
            if (!(fabsf(A) < 0x1p100f && E < 0x1p64f && bound == bound)) { s_fb[row] = 1; continue; }
            const float L = spec::ordered_value(s_lb[row]);  // >= A - m(A): nonzero when A, E are finite
            if (bound + spec::margin(bound, E) >= L) {
              // A value this thread kept no index for could reach L: every row it scanned for this
              // request (EPT per block of its warp) joins the list, so one round of the parallel
              // recompute replaces the CTA's walk over its whole slice.
              const int n = nw * EPT;
              const int slot = reserve(row, n);
              if (slot < 0) continue;
              for (int i = 0; i < nw; ++i)
#pragma unroll
                for (int e = 0; e < EPT; ++e) {
                  const int v = blk_of(i) * BR + EPT * t4 + e;
                  s_cand[slot + i * EPT + e] = make_int2(row, v < V ? v : -1);
                }
              continue;
            }
            if (tp.i1 >= 0 && tp.a1 + spec::margin(tp.a1, E) >= L) {
              const int slot = reserve(row, 1);
              if (slot >= 0) s_cand[slot] = make_int2(row, tp.i1);
            }
          }
        __syncthreads();
        if (p0 == 0) MARKOV_STAMP(4 + 6 * t);  // candidate list complete
        // A list that one round of quads holds is recomputed a candidate per quad of lanes
        // (exact_logit_quad: one L2 round trip), a longer one a candidate per thread (one round
        // instead of several). H200, bench inputs (scripts/markov_ab.py): quads b=2 67.8 vs 69.6 us,
        // b=16 76.2 vs 77.6; threads b=64 (~66 candidates per CTA) 175.2 vs 176.7 (quads).
        const int ncand = min(s_ncand, kMaxCand);
        const bool quad = JITKERN_MARKOV_QUAD_EXACT && ncand <= kThreads / 4;  // CTA-uniform
        for (int c = quad ? tid >> 2 : tid; c < ncand; c += quad ? kThreads / 4 : kThreads) {
          const int row = s_cand[c].x, v = s_cand[c].y;
          if (v < 0 || s_fb[row]) continue;  // past the vocabulary / the exact slice pass covers it
          const TB* bp = base + (int64_t)(p0 + row) * bs + (int64_t)t * V + v;
          const __nv_bfloat16* hrow = w_in + (int64_t)s_prev[row] * R;
          if (quad) {
            const float F = spec::exact_logit_quad<R>(w_out, hrow, bp, v, tid & 3);
            if ((tid & 3) == 0) atomicMax(&s_key[row], (unsigned long long)spec::argmax_key(F, v));
          } else {
            atomicMax(&s_key[row], (unsigned long long)spec::argmax_key(spec::exact_logit<R>(w_out, hrow, (float)*bp, v), v));
          }
        }
        // Any request for the exact slice pass? (One barrier instead of nb dependent shared loads.)
        for (int row = 0, any = __syncthreads_or(tid < nb && s_fb[tid]); any && row < nb; ++row) {
          if (!s_fb[row]) continue;  // CTA-uniform (s_fb is final since the barrier above)
          const TB* brow = base + (int64_t)(p0 + row) * bs + (int64_t)t * V;
          const __nv_bfloat16* hrow = w_in + (int64_t)s_prev[row] * R;
          uint64_t key = 0;
          for (int v = v_lo + tid; v < v_hi; v += kThreads)
            key = spec::u64max(key, spec::argmax_key(spec::exact_logit<R>(w_out, hrow, (float)brow[v], v), v));
#pragma unroll
          for (int o = 16; o; o >>= 1) key = spec::u64max(key, __shfl_xor_sync(0xffffffffu, key, o));
          if (lane == 0 && key) atomicMax(&s_key[row], (unsigned long long)key);
        }
      }
      __syncthreads();
      if (p0 == 0) MARKOV_STAMP(5 + 6 * t);  // candidates recomputed
      if (p0 == 0 && t == 1) MARKOV_STAMP_ALL(2);
      if (tid < nb && s_key[tid]) atomicMax(keys + (int64_t)t * b + p0 + tid, s_key[tid]);
      if (t == 0 && p0 == 0) filled = true;
    }
    spec::grid_barrier(sync, (unsigned)G * (t + 1));
    MARKOV_STAMP(6 + 6 * t);  // past the grid barrier
    if (cta == 0)
      for (int i = tid; i < b; i += kThreads) out[(int64_t)i * k + t] = spec::key_index(__ldcg(keys + (int64_t)t * b + i));
  }

  spec::markov_exit<R, kThreads>(w_out, v_lo, v_hi, sync, kSampled ? k * b : 2 * k * b);
}

namespace spec {

// One vocabulary row's exact logits for the kernel below: acc_i = acc_i + w[c] * h_i[c] for c in
// increasing order (each product rounded on its own: __fmul_rn / __fadd_rn forbid FMA), then
// base + acc, exactly the reference's definition. kSmem: w row from the swizzled shared cache
// (16-byte chunk c of row j stored at c ^ (j & 7): the 8 lanes of a quarter-warp read 8 rows'
// chunk c from 8 different bank groups), else from global memory with the evict_last policy.
// From global memory the row is read 8 chunks at a time, all 8 loads issued before the first is
// used (one L2 round trip per 8 chunks instead of one per chunk).
// kSrc 0: the row from the swizzled shared cache (wsrc); 1: from global memory (wsrc), 8 chunks in
// flight; 2: from registers (`regs`, C8 chunks loaded before the position loop).
template <int R, int kMaxB, int kSrc>
__device__ __forceinline__ void exact_row(const uint4* __restrict__ wsrc, int j, uint64_t pol, const float (*h)[R],
                                          int b, float (&acc)[kMaxB], const uint4* regs = nullptr) {
#pragma unroll
  for (int i = 0; i < kMaxB; ++i) acc[i] = 0.0f;
  auto chunk = [&](const uint4& wu, int c) {
    const uint32_t ww[4] = {wu.x, wu.y, wu.z, wu.w};
#pragma unroll
    for (int i = 0; i < kMaxB; ++i) {
      if (i >= b) break;
      const float4 h0 = *reinterpret_cast<const float4*>(&h[i][8 * c]);
      const float4 h1 = *reinterpret_cast<const float4*>(&h[i][8 * c + 4]);
      const float hv[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        acc[i] = __fadd_rn(acc[i], __fmul_rn(bf_lo(ww[q]), hv[2 * q]));
        acc[i] = __fadd_rn(acc[i], __fmul_rn(bf_hi(ww[q]), hv[2 * q + 1]));
      }
    }
  };
  if constexpr (kSrc == 2) {
#pragma unroll  // fully: `regs` must stay in registers
    for (int c = 0; c < R / 8; ++c) chunk(regs[c], c);
  } else {
    uint4 buf[8];
#pragma unroll 8
    for (int c = 0; c < R / 8; ++c) {
      if (kSrc == 1 && c % 8 == 0) {
#pragma unroll
        for (int q = 0; q < 8; ++q) buf[q] = ld_hint(wsrc + c + q, pol);
      }
      chunk(kSrc == 0 ? wsrc[c ^ (j & 7)] : buf[c % 8], c);
    }
  }
}

}  // namespace spec

// Greedy markov_draft for tiny batches (b <= kMaxB): every logit computed exactly in the
// reference's order on the CUDA cores, so the argmax is exact by construction (no error bound,
// no candidate recompute, no fallback). At b = 1 the tensor-core kernel above is latency-bound
// (16-row m-tiles for one request, then the candidate pass); here a position is one pass of
// ~4 rows per thread over w_out held in shared memory. Same persistent grid, grid barrier, keys
// and scratch protocol as markov_draft (sync: [0] barrier, [1] exit count, keys at sync + 4).
// base [b, k, V] (request stride bs, position stride V; any alignment), first_prev [b], w_in / w_out
// [V, R] bf16 contiguous 16-byte aligned, out [b, k] int32. Dynamic smem: cache_rows * R * 2 bytes.
template <typename TB, typename TokT, int R, int kMaxB>
__global__ void __launch_bounds__(256, 1) markov_draft_exact(
    const TB* __restrict__ base, int64_t bs, int V, int k, int b, const TokT* __restrict__ first_prev,
    const __nv_bfloat16* __restrict__ w_in, const __nv_bfloat16* __restrict__ w_out, unsigned* __restrict__ sync,
    int* __restrict__ out, int cache_rows) {
  constexpr int kThreads = 256, C8 = R / 8;
  static_assert(C8 >= 8, "the cache swizzle needs at least 8 chunks per row");
  extern __shared__ __align__(16) unsigned char smem[];
  uint4* sh_w = reinterpret_cast<uint4*>(smem);  // [cache_rows][C8], swizzled
  __shared__ __align__(16) float s_h[kMaxB][R];
  __shared__ uint64_t red[kThreads / 32];
  const int G = gridDim.x, cta = blockIdx.x, tid = threadIdx.x;
  const int v_lo = (int)((int64_t)cta * V / G), v_hi = (int)((int64_t)(cta + 1) * V / G);
  const int n = v_hi - v_lo, nc = min(n, cache_rows);
  unsigned long long* keys = reinterpret_cast<unsigned long long*>(sync + 4);
  [[maybe_unused]] const int64_t trace_base = (int64_t)k * b;
  const uint64_t pol = sm90::l2_policy_evict_last();
  const uint4* wg = reinterpret_cast<const uint4*>(w_out);

  // Fill the cache asynchronously (every copy in flight at once; a register round trip per chunk
  // would serialise ~50 DRAM latencies per thread).
  for (int e = tid; e < nc * C8; e += kThreads) {
    const int j = e / C8, c = e % C8;
    spec::cp_async16(sh_w + j * C8 + (c ^ (j & 7)), wg + (int64_t)(v_lo + j) * C8 + c, pol);
  }
  constexpr int kRows = 4;  // rows per thread whose base logits are loaded together
  // A thread's row past the cache (at most its last row of the first pass when the cache holds
  // more than (kRows - 1) * kThreads rows: 96 rows per CTA at V = 129280, r = 128 on 132 SMs) is
  // kept in registers for all positions (R <= 128: 64 registers) instead of being read from global
  // memory each position, where those threads finished ~1.4 us after the others (trace, run 1).
  constexpr bool kRegRow = C8 <= 16;
  const int jl = tid + (kRows - 1) * kThreads;
  const bool reg_ok = kRegRow && jl < n && jl >= nc;
  uint4 wreg[kRegRow ? C8 : 1];
  if (reg_ok) {
#pragma unroll
    for (int c = 0; c < C8; ++c) wreg[c] = spec::ld_hint(wg + (int64_t)(v_lo + jl) * C8 + c, pol);
  }
  spec::cp_async_commit();
  spec::cp_async_wait_all();
  MARKOV_STAMP(0);
  auto load_base = [&](int t, int j0, float (&bv)[kRows][kMaxB]) {
#pragma unroll
    for (int q = 0; q < kRows; ++q) {
      const int j = j0 + q * kThreads;
#pragma unroll
      for (int i = 0; i < kMaxB; ++i)
        bv[q][i] = (i < b && j < n) ? (float)base[(int64_t)i * bs + (int64_t)t * V + v_lo + j] : 0.0f;
    }
  };
  for (int t = 0; t < k; ++t) {
    // The first rows' base logits do not depend on the previous token: in flight during the
    // barrier's tail and the h load below.
    float bv[kRows][kMaxB];
    load_base(t, tid, bv);
    __syncthreads();  // the cache is filled; the previous position is done with s_h
    for (int e = tid; e < b * (R / 8); e += kThreads) {
      const int i = e / (R / 8), c8 = e % (R / 8);
      const int pv = t == 0 ? (int)first_prev[i] : spec::key_index(__ldcg(keys + (int64_t)(t - 1) * b + i));
      const uint4 u = __ldg(reinterpret_cast<const uint4*>(w_in + (int64_t)min(max(pv, 0), V - 1) * R) + c8);
      const uint32_t w4[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        s_h[i][8 * c8 + 2 * q] = spec::bf_lo(w4[q]);
        s_h[i][8 * c8 + 2 * q + 1] = spec::bf_hi(w4[q]);
      }
    }
    __syncthreads();
    MARKOV_STAMP(1 + 6 * t);  // h loaded
    uint64_t best[kMaxB];
#pragma unroll
    for (int i = 0; i < kMaxB; ++i) best[i] = 0ull;
    for (int j0 = tid; j0 < n; j0 += kRows * kThreads) {
      if (j0 != tid) load_base(t, j0, bv);  // slices longer than kRows * kThreads rows
#pragma unroll
      for (int q = 0; q < kRows; ++q) {
        const int j = j0 + q * kThreads, v = v_lo + j;
        if (j >= n) break;
        float acc[kMaxB];
        if (j < nc) spec::exact_row<R, kMaxB, 0>(sh_w + j * C8, j, pol, s_h, b, acc);
        else if (reg_ok && j == jl) spec::exact_row<R, kMaxB, 2>(nullptr, j, pol, s_h, b, acc, wreg);
        else spec::exact_row<R, kMaxB, 1>(wg + (int64_t)v * C8, j, pol, s_h, b, acc);
#pragma unroll
        for (int i = 0; i < kMaxB; ++i)
          best[i] = spec::u64max(best[i], spec::argmax_key(__fadd_rn(bv[q][i], acc[i]), v));
      }
    }
    MARKOV_STAMP(2 + 6 * t);  // thread 0's rows done
#pragma unroll
    for (int i = 0; i < kMaxB; ++i) {
      if (i >= b) break;
      const uint64_t key = spec::block_max_u64<kThreads>(best[i], red);
      if (tid == 0 && key) {
        atomicMax(keys + (int64_t)t * b + i, (unsigned long long)key);
        // The next position's h is the w_in row of the global winner, one of the CTAs' winners:
        // each CTA pulls its own into L2 now, so the read after the barrier hits L2.
        const char* row = reinterpret_cast<const char*>(w_in + (int64_t)spec::key_index(key) * R);
#pragma unroll
        for (int o = 0; o < R * 2; o += 128) spec::prefetch_l2_line(row + o);
      }
    }
    MARKOV_STAMP(3 + 6 * t);  // every thread's rows reduced
    MARKOV_STAMP(4 + 6 * t);
    MARKOV_STAMP(5 + 6 * t);
    spec::grid_barrier(sync, (unsigned)G * (t + 1));
    MARKOV_STAMP(6 + 6 * t);  // past the grid barrier
    if (cta == 0 && tid < b) out[(int64_t)tid * k + t] = spec::key_index(__ldcg(keys + (int64_t)t * b + tid));
  }

  spec::markov_exit<R, kThreads>(w_out, v_lo, v_hi, sync, k * b);
}


}  // namespace jitkern
