// Rejection-sampled speculative verification (Leviathan et al. 2023 / Chen et al. 2023), chains
// and Eagle-style token trees, one launch each. Semantics: jitkern/ops/speculative.py
// (verify_sampled, verify_tree_sampled); oracle: jitkern/reference/speculative.py.
//
// Sampling from unnormalised weights w (p, or the residual max(0, p - q)) is a two-level race in
// one pass over the row: tokens form fixed blocks of 32 * N (N tokens per 16-byte logits vector:
// one warp-wide load per block). Blocks race exponentially (block B's key E_B / W_B, W_B = sum of
// its weights in a fixed order, E_B ~ Exp(1)), so B wins with probability W_B / sum W; inside the
// winning block an inverse-CDF step picks token i with probability w_i / W_B. Together: w_i / sum w,
// exactly as a race of every token, but with one Philox call per block (keyed by seed, request,
// position, block) instead of one per 4 tokens. Deterministic for a seed whatever the launch split
// (vocab tiles are whole blocks; ties: lowest block).
//
// Top-k / top-p: a row's threshold key tau (keep tokens whose logit key is >= tau), one CTA per
// row. filter_fast first: one pass collects every element that can survive (at most kFilterCap;
// the bound comes from the argmax pass for top-k, from the softmax sum for top-p alone) and a sort
// of those gives tau and the normaliser. Rows whose survivors may be more (top-k above the thread
// count, top-p over a flat distribution) take a 16-way threshold search over the order-preserving
// bit pattern of the logits (counts for top-k, masses for top-p), re-reading the row through L2
// 5-8 times. Both deterministic. (A 256-bin shared-atomic radix histogram was 1.4-7 ms per call:
// real logits share a few top-key bins, so the atomics serialise.)
#pragma once
#include "spec/common.cuh"
#include "spec/greedy.cuh"

// Diagnostic timeline of verify_sampled (scripts/sampled_trace.py compiles with
// -DJITKERN_SAMPLED_TRACE=1): thread 0 stamps %globaltimer into u64 slots after the sync counters
// and race slots (the script allocates them): CTA start [G], CTA exit [G], A tile done [tiles_a],
// decision computed by the request's first B tile [b], B tile saw every A tile arrived
// [b * splits_b], B tile done [b * splits_b], token written [b]. Off: compiles to nothing.
#if defined(JITKERN_SAMPLED_TRACE) && JITKERN_SAMPLED_TRACE
#define SAMPLED_STAMP(slot)                                                                            \
  do {                                                                                                 \
    if (threadIdx.x == 0) {                                                                            \
      unsigned long long ns;                                                                           \
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));                                           \
      race_slot[b + (slot)] = ns; /* past the b race slots */                                          \
    }                                                                                                  \
  } while (0)
#else
#define SAMPLED_STAMP(slot) do {} while (0)
#endif

// 0: every filtered row takes the threshold search (ops.SAMPLED_FILTER_FAST = False).
#ifndef JITKERN_FILTER_FAST
#define JITKERN_FILTER_FAST 1
#endif
// Diagnostics of filter_fast (scripts/filter_ab.py): loads in flight per thread in its passes, and
// JITKERN_FILTER_STOP = 1 / 2 / 3 ends it after the argmax pass / the threshold sketch / the
// collecting pass (wrong results: timing only). Defaults: the shipped kernel.
#ifndef JITKERN_FILTER_UNROLL
#define JITKERN_FILTER_UNROLL 4
#endif
#ifndef JITKERN_FILTER_STOP
#define JITKERN_FILTER_STOP 0
#endif

namespace jitkern {
namespace spec {

__device__ __forceinline__ float neg_inf() { return -__int_as_float(0x7F800000); }

// Order key of a logit of type T (monotone in the value, -0 == +0, NaN largest). bf16 values
// widened to fp32 have 16 meaningless low key bits, masked so that equal bf16 values tie.
template <typename T>
__device__ __forceinline__ uint32_t fkey(float v) {
  return order_bits(v) & (sizeof(T) == 2 ? 0xFFFF0000u : 0xFFFFFFFFu);
}

// Target distribution of one row after temperature and filters:
// p(i) = [key_i >= tau] * exp2((l_i - m) * s2) * inv_z   (s2 = log2(e) / temperature),
// or one-hot at amax when greedy (temperature 0). Round-to-nearest intrinsics forbid FMA
// contraction, so every call site computes bit-identical p.
struct PStat {
  float m, s2, inv_z;
  uint32_t tau;
  int amax;
  bool greedy;
  __device__ __forceinline__ float p(float l, int idx, uint32_t key) const {
    if (greedy) return idx == amax ? 1.0f : 0.0f;
    return key >= tau ? __fmul_rn(exp2f(__fmul_rn(__fsub_rn(l, m), s2)), inv_z) : 0.0f;
  }
};

// Acceptance uniform of the `ordinal`-th candidate tried at `position` (a chain: ordinal 0,
// the same stream as spec_uniforms(seed, request, position).x).
__device__ __forceinline__ float accept_uniform(uint64_t seed, int request, int position, int ordinal) {
  uint4 r = philox4x32_10(make_uint4((uint32_t)position, (uint32_t)request, 0x5EC0DEu, (uint32_t)ordinal),
                          make_uint2((uint32_t)seed, (uint32_t)(seed >> 32)));
  return uniform01(r.x);
}

// Random numbers of race block `blk` when sampling at (request, position): .x drives the block's
// Exp(1) variate, .y the inverse-CDF step inside it.
__device__ __forceinline__ uint4 race_block_random(uint64_t seed, int request, int position, int blk) {
  return philox4x32_10(make_uint4((uint32_t)blk, (uint32_t)request, (uint32_t)position, 0xB10C4ACEu),
                       make_uint2((uint32_t)seed, (uint32_t)(seed >> 32)));
}

// Race key: smaller wins; (E / w) bits (positive float: monotone as uint), then lowest index.
__device__ __forceinline__ uint64_t race_key(float e, float w, int idx) {
  return w > 0.0f ? ((uint64_t)__float_as_uint(__fdividef(e, w)) << 32) | (uint32_t)idx : ~0ull;
}
__device__ __forceinline__ uint64_t u64min(uint64_t a, uint64_t b) { return a < b ? a : b; }

template <int kThreads>
__device__ __forceinline__ uint64_t block_min_u64(uint64_t v, uint64_t* red) {
  return ~block_max_u64<kThreads>(~v, red);
}

template <int kThreads>
__device__ __forceinline__ float block_max_f(float v, float* red) {
#pragma unroll
  for (int o = 16; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  v = red[0];
#pragma unroll
  for (int w = 1; w < kThreads / 32; ++w) v = fmaxf(v, red[w]);
  return v;
}

// (m, s) softmax partials: s = sum exp2((l - m) * s2). Combine in a fixed order (deterministic).
__device__ __forceinline__ void softmax_merge(float& m, float& s, float m2, float s2v, float scale) {
  if (!(s2v > 0.0f)) return;
  if (!(s > 0.0f)) { m = m2; s = s2v; return; }
  const float mm = fmaxf(m, m2);
  s = s * exp2f((m - mm) * scale) + s2v * exp2f((m2 - mm) * scale);
  m = mm;
}

// Online softmax over elements v of a thread's stream: running (m, s). -inf contributes nothing.
__device__ __forceinline__ void softmax_add(float& m, float& s, float v, float scale) {
  if (!(v > neg_inf())) return;
  if (v > m) { s = s * exp2f((m - v) * scale) + 1.0f; m = v; }  // m = -inf: s is 0, exp2 gives 0
  else s += exp2f((v - m) * scale);
}

// Calls f(index, value) for every element of row[0, n), each thread on a fixed subset in a fixed
// order (16-byte vectors when kVec: row 16-byte aligned). Loads go through L2 (__ldcg): the
// filter passes re-read the row.
template <typename T, bool kVec, int kThreads, typename F>
__device__ __forceinline__ void row_for_each(const T* __restrict__ row, int n, F&& f) {
  if (kVec) {
    constexpr int N = 16 / sizeof(T), U = 4;
    const int nvec = n / N;
    const uint4* p = reinterpret_cast<const uint4*>(row);
    for (int base = threadIdx.x; base < nvec; base += kThreads * U) {
      uint4 u[U];
#pragma unroll
      for (int r = 0; r < U; ++r)
        if (base + r * kThreads < nvec) u[r] = __ldcg(p + base + r * kThreads);
#pragma unroll
      for (int r = 0; r < U; ++r) {
        if (base + r * kThreads < nvec) {
          float v[N];
          unpack(u[r], (const T*)nullptr, v);
#pragma unroll
          for (int e = 0; e < N; ++e) f((base + r * kThreads) * N + e, v[e]);
        }
      }
    }
    for (int i = nvec * N + threadIdx.x; i < n; i += kThreads) f(i, (float)row[i]);
  } else {
    for (int i = threadIdx.x; i < n; i += kThreads) f(i, (float)row[i]);
  }
}

// Candidate keys of the filter fast path (filter_fast): a row whose top-k / top-p survivors
// provably lie among at most this many elements gets its threshold from a sort of them. The keys
// live in dynamic shared memory ((kFilterCap + 4) * 4 bytes, ops.SAMPLED_FILTER_SMEM) that the
// host passes to the launches that filter (verify_sampled's kFilter instantiation); with less,
// no fast path (the threshold search).
constexpr int kFilterCap = 4096;

// filter_fast's candidate buffer: the launch's dynamic shared memory if it holds kFilterCap keys
// and the count after them, else null.
__device__ __forceinline__ uint32_t* filter_buffer() {
  extern __shared__ __align__(16) uint32_t filter_dyn_smem[];
  uint32_t bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(bytes));
  return bytes >= (kFilterCap + 4) * 4u ? filter_dyn_smem : nullptr;
}

// Shared memory of the whole-row statistics (one CTA per row).
struct RowSmem {
  uint64_t hist[256];  // above16's [warps][17] float partials
  uint64_t red[32];
};

// 16 thresholds at once: F[c] = sum over elements with key unit u >= max(ufloor, t[c]) of val
// (1, or exp2((l - m) * s2) when kMass), F[16] = the same over u >= ufloor. t ascending. Only
// elements inside [t[0], t[15]] pay the 16 compares; a fixed per-thread order and fixed-order
// reductions make F deterministic (no atomics).
template <typename T, bool kVec, int kThreads, bool kMass>
__device__ __forceinline__ void above16(const T* __restrict__ row, int V, const uint32_t (&t)[16], uint32_t ufloor,
                                        float m, float s2, RowSmem& sm, float (&F)[17]) {
  constexpr int ks = sizeof(T) == 2 ? 16 : 0;
  float acc[16];
#pragma unroll
  for (int c = 0; c < 16; ++c) acc[c] = 0.0f;
  float all = 0.0f, tot = 0.0f;
  row_for_each<T, kVec, kThreads>(row, V, [&](int, float v) {
    const uint32_t u = fkey<T>(v) >> ks;
    if (u >= ufloor) {
      const float val = kMass ? exp2f(__fmul_rn(__fsub_rn(v, m), s2)) : 1.0f;
      tot += val;
      if (u > t[15]) {
        all += val;
      } else if (u >= t[0]) {
#pragma unroll
        for (int c = 0; c < 16; ++c) acc[c] += u >= t[c] ? val : 0.0f;
      }
    }
  });
  float* red = reinterpret_cast<float*>(sm.hist);  // [warps][17]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int c = 0; c < 17; ++c) {
    float x = c < 16 ? acc[c] + all : tot;
#pragma unroll
    for (int o = 16; o; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    if (c < 16) acc[c] = x; else tot = x;
  }
  __syncthreads();
  if (lane == 0) {
#pragma unroll
    for (int c = 0; c < 16; ++c) red[warp * 17 + c] = acc[c];
    red[warp * 17 + 16] = tot;
  }
  __syncthreads();
#pragma unroll
  for (int c = 0; c < 17; ++c) {
    float f = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) f += red[w * 17 + c];
    F[c] = f;
  }
  __syncthreads();
}

// The largest key tau >= floor_key with F(tau) >= need, F(t) = sum over keys >= max(t, floor_key)
// of 1 (top-k: need = k) or of the mass exp2((l - m) * s2) (top-p: need = topp * F(floor_key)).
// First pass: 16 thresholds at geometric logit distances below the max (1/64 .. 512 logits for
// counts; T/256 .. 128 T for masses); then 16-way subdivision of the bracketing key interval.
// Each pass reads the row once (through L2); typical rows take 3-5 passes.
template <typename T, bool kVec, int kThreads, bool kMass>
__device__ __forceinline__ uint32_t select_threshold(const T* __restrict__ row, int V, uint32_t floor_key, float m, float s2,
                                     float need, float topp, RowSmem& sm) {
  constexpr int ks = sizeof(T) == 2 ? 16 : 0;
  const uint32_t ufloor = floor_key >> ks;
  uint32_t lo = ufloor, hi = fkey<T>(m) >> ks;  // inclusive bracket in key units
  const float temp = s2 > 0.0f ? 1.4426950408889634f / s2 : 1.0f;
  bool first = true;
  while (lo < hi) {
    uint32_t t[16];
    const uint64_t span = hi - lo;
#pragma unroll
    for (int c = 0; c < 16; ++c) {
      uint32_t x;
      if (first) {
        const float d = kMass ? temp * exp2f((float)(7 - c)) : exp2f((float)(9 - c));
        x = fkey<T>(__fsub_rn(m, d)) >> ks;
        x = x < lo ? lo : (x > hi ? hi : x);
        if (c > 0 && x < t[c - 1]) x = t[c - 1];
      } else {
        x = lo + (uint32_t)((span * (uint64_t)c + 15) / 16);
      }
      t[c] = x;
    }
    float F[17];
    above16<T, kVec, kThreads, kMass>(row, V, t, ufloor, m, s2, sm, F);
    if (first && kMass) need = topp * F[16];
    first = false;
    int cs = -1;
#pragma unroll
    for (int c = 0; c < 16; ++c)
      if (F[c] >= need) cs = c;
    if (cs < 0) {
      hi = t[0] - 1;  // t[0] > lo here: F(lo) >= need holds (lo = floor or an earlier feasible t)
    } else {
      lo = t[cs];
      if (cs < 15) hi = t[cs + 1] - 1;
    }
  }
  return lo << ks;
}

// Value of a key made by fkey<T> (exact: bf16 keys keep the value's 16 significant bits).
template <typename T>
__device__ __forceinline__ float key_to_value(uint32_t key) {
  if (key & 0x80000000u) return __uint_as_float(key & 0x7FFFFFFFu);
  return __uint_as_float(sizeof(T) == 2 ? (~key & 0xFFFF0000u) : ~key);
}

// The k-th largest (1 <= k <= kThreads) of one key per thread: ranks by counting (ties broken by
// thread index, so every rank is taken once), two barriers instead of a sort's log^2 stages.
template <int kThreads>
__device__ __forceinline__ uint32_t kth_largest(uint32_t key, int k, uint32_t* buf, uint32_t* out) {
  buf[threadIdx.x] = key;
  __syncthreads();
  int rank = 0;
#pragma unroll 8
  for (int j = 0; j < kThreads; ++j) {
    const uint32_t x = buf[j];
    rank += (x > key) | ((x == key) & (j < (int)threadIdx.x));
  }
  if (rank == k - 1) *out = key;
  __syncthreads();
  return *out;
}

// Sorts a[0, n) descending in place by ranks (n <= kPer * kThreads): a few barriers, n compares
// per key. For the common small candidate sets; sort_desc above that.
template <int kThreads, int kPer>
__device__ __forceinline__ void rank_sort_desc(uint32_t* a, int n) {
  uint32_t mine[kPer];
  int rank[kPer];
#pragma unroll
  for (int r = 0; r < kPer; ++r) {
    const int i = threadIdx.x + r * kThreads;
    mine[r] = i < n ? a[i] : 0u;
    rank[r] = 0;
  }
  for (int j = 0; j < n; ++j) {
    const uint32_t x = a[j];
#pragma unroll
    for (int r = 0; r < kPer; ++r) {
      const int i = threadIdx.x + r * kThreads;
      rank[r] += (x > mine[r]) | ((x == mine[r]) & (j < i));
    }
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < kPer; ++r)
    if (threadIdx.x + r * kThreads < n) a[rank[r]] = mine[r];
  __syncthreads();
}

// Bitonic sort of a[0, n) into descending order by the CTA (n a power of two, n >= 2).
template <int kThreads>
__device__ __forceinline__ void sort_desc(uint32_t* a, int n) {
  for (int k = 2; k <= n; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = threadIdx.x; i < n; i += kThreads) {
        const int ixj = i ^ j;
        if (ixj > i) {
          const uint32_t x = a[i], y = a[ixj];
          if (((i & k) == 0) ? x < y : x > y) { a[i] = y; a[ixj] = x; }
        }
      }
      __syncthreads();
    }
  }
}

// Appends the key of every element of row[0, V) whose key is >= gkey to cand (order
// unspecified: callers sort) and returns how many there are; stops early once more than
// kFilterCap are found (the result is then > kFilterCap). Loops are CTA-uniform so that a warp
// reserves its slots with one shared atomic per vector round.
template <typename T, bool kVec, int kThreads>
__device__ __forceinline__ int collect_keys(const T* __restrict__ row, int V, uint32_t gkey, RowSmem& sm,
                                            uint32_t* __restrict__ cand) {
  constexpr int N = 16 / sizeof(T), U = JITKERN_FILTER_UNROLL;
  const int lane = threadIdx.x & 31;
  int* count = reinterpret_cast<int*>(cand + kFilterCap);
  // gkey as a value: for bf16/fp32 keys v >= gval <=> fkey(v) >= gkey, except NaN (key max).
  const float gval = gkey ? key_to_value<T>(gkey) : neg_inf();
  if (threadIdx.x == 0) *count = 0;
  __syncthreads();
  // Appends the keys of v[e] for the lane's set bits e of `hit` warp-wide (static register indices).
  auto append = [&](const float (&v)[N], unsigned hit) {
    if (!__ballot_sync(0xffffffffu, hit != 0u)) return;
    const int c = __popc(hit);
    int incl = c;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    int base = 0;
    if (lane == 31) base = atomicAdd(count, incl);
    base = __shfl_sync(0xffffffffu, base, 31) + incl - c;
#pragma unroll
    for (int e = 0; e < N; ++e) {
      const int at = base + __popc(hit & ((1u << e) - 1u));
      if (((hit >> e) & 1u) && at < kFilterCap) cand[at] = fkey<T>(v[e]);
    }
  };
  const int nvec = kVec ? V / N : 0;
  if constexpr (kVec) for (int b0 = 0; b0 < nvec; b0 += kThreads * U) {
    uint4 u[U];
#pragma unroll
    for (int r = 0; r < U; ++r) {
      const int vi = b0 + r * kThreads + threadIdx.x;
      u[r] = vi < nvec ? __ldcg(reinterpret_cast<const uint4*>(row) + vi) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int r = 0; r < U; ++r) {
      const bool in = b0 + r * kThreads + (int)threadIdx.x < nvec;
      unsigned hit = 0u;
      float v[N];
      unpack(u[r], (const T*)nullptr, v);
#pragma unroll
      for (int e = 0; e < N; ++e)
        if (v[e] >= gval || v[e] != v[e]) hit |= 1u << e;  // key >= gkey (NaN keys are the largest)
      append(v, in ? hit : 0u);
    }
    if (__shfl_sync(0xffffffffu, *(volatile int*)count, 0) > kFilterCap) break;  // warp-uniform
  }
  for (int i0 = nvec * N; i0 < V; i0 += kThreads) {
    const int i = i0 + threadIdx.x;
    float v[N];
#pragma unroll
    for (int e = 0; e < N; ++e) v[e] = 0.0f;
    unsigned hit = 0u;
    if (i < V) {
      v[0] = (float)row[i];
      if (fkey<T>(v[0]) >= gkey) hit = 1u;
    }
    append(v, hit);
    if (__shfl_sync(0xffffffffu, *(volatile int*)count, 0) > kFilterCap) break;
  }
  __syncthreads();
  return *count;
}

// Filter thresholds without the threshold search, for rows whose survivors provably lie among a
// few elements: candidates = every element with key >= g, where g is
//  * top-k (k <= kThreads): the k-th largest of the threads' maxima from the argmax pass (tkey),
//    so at least k elements are >= g and the k-th largest logit is among the candidates;
//  * top-p alone: the value whose mass w(g) = (1 - topp) * Z / (2 V) (Z: the row's softmax sum),
//    so the elements below g carry less than half the mass top-p may drop;
//  * V <= kFilterCap: the whole row.
// The candidates are sorted; tau_k = the k-th key, then top-p's tau = the key at which the running
// mass (sorted order, fixed) first reaches topp * F(tau_k), and z = the mass of the keys >= tau.
// Same thresholds as select_threshold (top-k exactly; top-p up to the order of the fp32 sums).
// Returns false (nothing decided) when the candidates overflow kFilterCap or when k > kThreads:
// the caller then runs the threshold search. Deterministic: sorted order, fixed-order sums.
template <typename T, bool kVec, int kThreads>
__device__ __forceinline__ bool filter_fast(const T* __restrict__ row, int V, float m, float s2, int topk, float topp,
                                         uint32_t tkey, RowSmem& sm, uint32_t* __restrict__ cand, uint32_t& tau_out,
                                         float& z_out) {
  static_assert(kThreads <= kFilterCap && (kThreads & (kThreads - 1)) == 0, "thread count: a power of two <= cap");
  const bool filt_k = topk > 0, filt_p = topp < 1.0f;
  const bool whole = V <= kFilterCap;
  if (filt_k && topk > kThreads && !whole) return false;
  uint32_t gkey = 0u;
  float zrow = 0.0f;
  if (!whole && filt_k) {
    gkey = kth_largest<kThreads>(tkey, topk, cand, cand + kThreads);
    if (JITKERN_FILTER_STOP == 2) { tau_out = gkey; z_out = 1.0f; return true; }
    // (collect_keys' first barrier orders every thread's read of gkey before the overwrite)
  } else if (!whole) {
    float z = 0.0f;
    row_for_each<T, kVec, kThreads>(row, V, [&](int, float v) { z += exp2f(__fmul_rn(__fsub_rn(v, m), s2)); });
    zrow = block_sum<kThreads>(z, reinterpret_cast<float*>(sm.red));
    const float g = __fadd_rn(m, __fdiv_rn(log2f((1.0f - topp) * zrow / (2.0f * (float)V)), s2));
    if (!(g < m)) return false;  // topp so small that g rounds to m (or NaN): let the search decide
    gkey = fkey<T>(g);
  }
  const int n = collect_keys<T, kVec, kThreads>(row, V, gkey, sm, cand);
  if (JITKERN_FILTER_STOP == 3) { tau_out = gkey; z_out = 1.0f; return true; }
  if (n > kFilterCap || n < 1) return false;  // CTA-uniform
  if (n <= 2 * kThreads) {
    rank_sort_desc<kThreads, 2>(cand, n);
  } else {
    int npad = 2;
    while (npad < n) npad <<= 1;
    for (int i = n + threadIdx.x; i < npad; i += kThreads) cand[i] = 0u;  // 0: below every key
    __syncthreads();
    sort_desc<kThreads>(cand, npad);
  }
  if (filt_k && topk > n) return false;  // cannot happen (g guarantees k candidates): stay safe
  // Warp 0: running mass over the survivors of top-k in sorted order, 32 keys per step. (tau_k is
  // read by warp 0 only: another warp's read of cand[0] would race with lane 0's write below.)
  if (threadIdx.x < 32) {
    const uint32_t tau_k = filt_k ? cand[topk - 1] : 0u;
    const int lane = threadIdx.x;
    const bool full = filt_k || whole;  // candidates hold every top-k survivor: F(tau_k) from them
    float need = -1.0f;
    if (filt_p && !full) need = topp * zrow;
    if (filt_p && full) {
      float f = 0.0f;
      for (int i0 = 0; i0 < n; i0 += 32) {
        const int i = i0 + lane;
        const uint32_t key = i < n ? cand[i] : 0u;
        float w = key >= tau_k && i < n ? exp2f(__fmul_rn(__fsub_rn(key_to_value<T>(key), m), s2)) : 0.0f;
#pragma unroll
        for (int o = 16; o; o >>= 1) w = __fadd_rn(w, __shfl_xor_sync(0xffffffffu, w, o));
        f = __fadd_rn(f, w);
      }
      need = topp * f;
    }
    // tau: key of the first survivor whose running mass reaches need (filt_p), else tau_k.
    uint32_t tau = filt_p ? 0xFFFFFFFFu : tau_k;
    bool found = !filt_p;
    float run = 0.0f, z = 0.0f;
    for (int i0 = 0; i0 < n; i0 += 32) {
      const int i = i0 + lane;
      const uint32_t key = i < n ? cand[i] : 0u;
      const bool surv = i < n && key >= tau_k;
      const float w = surv ? exp2f(__fmul_rn(__fsub_rn(key_to_value<T>(key), m), s2)) : 0.0f;
      float incl = w;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl = __fadd_rn(y, incl);
      }
      const float cum = __fadd_rn(run, incl);
      if (!found) {
        const unsigned hit = __ballot_sync(0xffffffffu, surv && cum >= need);
        if (hit) {
          found = true;
          tau = __shfl_sync(0xffffffffu, key, __ffs(hit) - 1);
        }
      }
      // z: mass of the survivors with key >= tau (the keys are sorted: a prefix)
      float zw = surv && key >= tau ? w : 0.0f;
#pragma unroll
      for (int o = 16; o; o >>= 1) zw = __fadd_rn(zw, __shfl_xor_sync(0xffffffffu, zw, o));
      z = __fadd_rn(z, zw);
      run = __shfl_sync(0xffffffffu, cum, 31);
      if (found && __shfl_sync(0xffffffffu, key, 31) < tau) break;  // past the kept prefix
    }
    __syncwarp();  // every lane's reads of cand before lane 0 overwrites cand[0] (racecheck)
    if (lane == 0) {
      cand[kFilterCap] = found ? 1 : 0;
      reinterpret_cast<float*>(sm.red)[0] = z;
      cand[0] = tau;  // sorted data no longer needed
    }
  }
  __syncthreads();
  const bool ok = cand[kFilterCap] != 0;
  tau_out = cand[0];
  z_out = reinterpret_cast<float*>(sm.red)[0];
  __syncthreads();
  return ok;
}


// Whole-row statistics of one row by one CTA: argmax, then (temperature > 0) the filter
// threshold tau and the normaliser of the kept tokens. topk: 0 = off (else 1 <= topk < V);
// topp >= 1 = off. Without a filter: one online-softmax pass. With one: select_threshold's
// passes (re-reading the row through L2) and one normaliser pass.
template <typename T, bool kVec, int kThreads, bool kFast>
__device__ __forceinline__ PStat row_stats_inl(const T* __restrict__ row, int V, bool greedy, float s2, int topk, float topp,
                           RowSmem& sm) {
  PStat st;
  st.greedy = greedy;
  st.s2 = s2;
  st.tau = 0u;
  st.inv_z = 1.0f;
  const bool filt_k = !greedy && topk > 0 && topk < V;
  const bool filt_p = !greedy && topp < 1.0f;
  float best = 0.0f;
  int bidx = -1;
  chunk_argmax<T, kVec, kThreads, JITKERN_FILTER_UNROLL>(row, 0, V, best, bidx);
  const uint64_t key = block_max_u64<kThreads>(argmax_key(best, bidx), sm.red);
  st.amax = key_index(key);
  st.m = key_value(key);
  if (greedy || JITKERN_FILTER_STOP == 1) return st;
  uint32_t* cand;
  if (kFast && JITKERN_FILTER_FAST && (filt_k || filt_p) && (cand = filter_buffer()) != nullptr) {
    uint32_t tau;
    float z;
    if (filter_fast<T, kVec, kThreads>(row, V, st.m, s2, filt_k ? topk : 0, filt_p ? topp : 1.0f,
                                       bidx < 0 ? 0u : fkey<T>(best), sm, cand, tau, z)) {
      st.tau = tau;
      st.inv_z = 1.0f / z;
      return st;
    }
  }
  if (!filt_k && !filt_p) {
    float m = neg_inf(), s = 0.0f;
    row_for_each<T, kVec, kThreads>(row, V, [&](int, float v) { softmax_add(m, s, v, s2); });
    const float mm = st.m;
    float z = block_sum<kThreads>(s > 0.0f ? s * exp2f((m - mm) * s2) : 0.0f, reinterpret_cast<float*>(sm.red));
    st.inv_z = 1.0f / z;
    return st;
  }
  const uint32_t tau_k = filt_k ? select_threshold<T, kVec, kThreads, false>(row, V, 0u, st.m, s2, (float)topk,
                                                                             -1.0f, sm)
                                : 0u;
  st.tau = filt_p ? select_threshold<T, kVec, kThreads, true>(row, V, tau_k, st.m, s2, 0.0f, topp, sm) : tau_k;
  // Normaliser of the kept tokens (fixed per-thread order, fixed-order block sum).
  const float m = st.m;
  const uint32_t tau = st.tau;
  float z = 0.0f;
  row_for_each<T, kVec, kThreads>(row, V, [&](int, float v) {
    if (fkey<T>(v) >= tau) z += exp2f(__fmul_rn(__fsub_rn(v, m), s2));
  });
  st.inv_z = 1.0f / block_sum<kThreads>(z, reinterpret_cast<float*>(sm.red));
  return st;
}

// ---- two-level race (file comment) ----
template <typename T> struct RaceBlock {
  static constexpr int N = 16 / sizeof(T);  // tokens per lane
  static constexpr int size = 32 * N;       // tokens per block
};

// A block's weight: each lane's N weights summed in index order (lane_sum), then the warp's in a
// fixed butterfly; every lane gets lane 0's value, so the same block always gets the same bits.
__device__ __forceinline__ float warp_total(float s) {
#pragma unroll
  for (int o = 16; o; o >>= 1) s = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, o));
  return __shfl_sync(0xffffffffu, s, 0);
}

// Logits of tokens [tok, tok + N) as one raw 16-byte vector (-inf at or past `end`) and q as floats
// (0 past `end`, or everywhere without qrow). kVec: 16-byte aligned rows, tok a multiple of N.
template <typename T, bool kVec, int N>
__device__ __forceinline__ void load_lq(const T* __restrict__ lrow, const float* __restrict__ qrow, int tok, int end,
                                        uint4& lu, float (&qv)[N]) {
  if (kVec && tok + N <= end) {
    lu = __ldcs(reinterpret_cast<const uint4*>(lrow + tok));
    if (qrow) {
#pragma unroll
      for (int h = 0; h < N / 4; ++h) {
        const float4 f = __ldcs(reinterpret_cast<const float4*>(qrow + tok) + h);
        qv[4 * h] = f.x; qv[4 * h + 1] = f.y; qv[4 * h + 2] = f.z; qv[4 * h + 3] = f.w;
      }
    } else {
#pragma unroll
      for (int e = 0; e < N; ++e) qv[e] = 0.0f;
    }
  } else {  // element loads packed into the vector's bit layout (no local array)
    uint32_t wd[4] = {0u, 0u, 0u, 0u};
#pragma unroll
    for (int e = 0; e < N; ++e) {
      const bool in = tok + e < end;
      uint32_t bits;
      if constexpr (sizeof(T) == 2) bits = in ? (uint32_t)__bfloat16_as_ushort(lrow[tok + e]) : 0xFF80u;
      else bits = in ? __float_as_uint((float)lrow[tok + e]) : 0xFF800000u;
      wd[e * sizeof(T) / 4] |= bits << (8 * ((e * sizeof(T)) % 4));
      qv[e] = in && qrow ? qrow[tok + e] : 0.0f;
    }
    lu = make_uint4(wd[0], wd[1], wd[2], wd[3]);
  }
}

// Weights of tokens [tok, tok + N): p (q_mode false) or max(0, p - q); anything not > 0 (NaN
// included) is 0.
template <typename T, int N>
__device__ __forceinline__ void race_weights(const uint4& lu, const float (&qv)[N], bool q_mode, const PStat& st,
                                             int tok, float (&w)[N]) {
  float l[N];
  unpack(lu, (const T*)nullptr, l);
#pragma unroll
  for (int e = 0; e < N; ++e) {
    const float pp = st.p(l[e], tok + e, fkey<T>(l[e]));
    const float x = q_mode ? fmaxf(__fsub_rn(pp, qv[e]), 0.0f) : pp;
    w[e] = x > 0.0f ? x : 0.0f;
  }
}

// Stage 1 bookkeeping of one warp: block j of the warp's sequence parks its weight in lane j % 32;
// every 32 blocks (and at the end) the lanes draw their blocks' variates at once, so the Philox
// and log cost is spread over the warp instead of repeated per block. best: smallest key seen
// ((E / W bits) << 32 | block), ~0 if no block had weight.
struct BlockRace {
  float w = 0.0f;
  int blk = 0, n = 0;
  uint64_t best = ~0ull;
  __device__ __forceinline__ void flush(uint64_t seed, int request, int position) {
    if ((int)(threadIdx.x & 31) < n && w > 0.0f) {
      const float e = -logf(open01(race_block_random(seed, request, position, blk).x));
      best = u64min(best, race_key(e, w, blk));
    }
    n = 0;
  }
  // Warp-uniform call: every lane passes the block's total weight W and index.
  __device__ __forceinline__ void add(float W, int b, uint64_t seed, int request, int position) {
    if ((int)(threadIdx.x & 31) == n) { w = W; blk = b; }
    if (++n == 32) flush(seed, request, position);
  }
};

// Stage 2 by one full warp: lane l holds the weights w of tokens blk * 32N + l * N + e. Inverse CDF
// with the block's second uniform u (uniform01 of race_block_random(...).y) over the fixed-order
// prefix sums; returns the token (every lane), or -1 if the block has no weight.
template <int N>
__device__ __forceinline__ int race_pick_warp(const float (&w)[N], int blk, float u) {
  const int lane = threadIdx.x & 31;
  const float s = lane_sum(w);
  float incl = s;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl = __fadd_rn(incl, y);
  }
  float excl = __shfl_up_sync(0xffffffffu, incl, 1);
  if (lane == 0) excl = 0.0f;
  const unsigned any = __ballot_sync(0xffffffffu, s > 0.0f);
  if (!any) return -1;
  const float total = __shfl_sync(0xffffffffu, incl, 31);
  const float target = __fmul_rn(u, total);
  const unsigned own = __ballot_sync(0xffffffffu, s > 0.0f && excl <= target && target < incl);
  // The lane whose prefix interval holds the target, else (rounding at the top) the last lane with weight.
  const int owner = own ? __ffs(own) - 1 : 31 - __clz(any);
  int pick = -1;
  if (lane == owner) {
    const float rel = own ? __fsub_rn(target, excl) : __int_as_float(0x7F800000);
    pick = pick_in_lane(w, rel);
  }
  pick = __shfl_sync(0xffffffffu, pick, owner);
  return blk * 32 * N + owner * N + pick;
}

// Both stages in one pass over the blocks of row[c0, c1) (c0 a multiple of RaceBlock<T>::size, c1
// the tile end or V) with weights p (qrow null) or max(0, p - q). Each warp takes whole blocks, R
// per pass in flight; lane l draws the variates of the warp's l-th block of each run of 32 while
// the pass's loads are in flight, and the warp keeps the weights of its best block so far in
// registers, so the winner is inverted without a second read of the row. Returns the CTA's
// smallest token key ((E / W bits) << 32 | token), ~0 if no block had weight. Same token as a race
// of block keys (race_key: ties to the lowest block) followed by stage 2 on the winning block:
// tokens increase with their block, so token keys order blocks as block keys do.
// JITKERN_RACE_IN_FLIGHT: R. 4 against 2 (H200, 2026-12-04 run 1, us): b=1 11.4-11.8 / 11.5-11.8,
// b=16 28.3-28.6 / 28.8-29.1, b=64 72.4 / 74.4, b=256 148.6-148.8 / 153.4-153.7 (a B tile's
// ~4 blocks per warp in one round trip; stage 1 then stage 2 with R = 2 ran 12.5 / 28.7-29.3 /
// 73.5-74.2 / 149.8-150.3).
#ifndef JITKERN_RACE_IN_FLIGHT
#define JITKERN_RACE_IN_FLIGHT 4
#endif
template <typename T, bool kVec, int kThreads>
__device__ __forceinline__ uint64_t race_tile_inl(const T* __restrict__ lrow, const float* __restrict__ qrow, int c0,
                                                  int c1, const PStat st, uint64_t seed, int request, int position,
                                                  uint64_t* red) {
  constexpr int N = RaceBlock<T>::N, BS = RaceBlock<T>::size, kWarps = kThreads / 32, R = JITKERN_RACE_IN_FLIGHT;
  static_assert(32 % R == 0, "a pass must not straddle a run of 32 blocks");
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int nblk = (c1 - c0 + BS - 1) / BS, blk0 = c0 / BS;
  float e_l = 0.0f, u_l = 0.0f;  // Exp(1) variate and stage-2 uniform of this lane's block in the run
  uint64_t best = ~0ull;         // warp-uniform: the warp's smallest block key so far
  float bw[N], bu = 0.0f;        // its weights (this lane's N) and stage-2 uniform
#pragma unroll
  for (int e = 0; e < N; ++e) bw[e] = 0.0f;
  for (int b0 = warp, it = 0; b0 < nblk; b0 += R * kWarps, it += R) {
    uint4 lu[R];
    float qv[R][N];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int tok = c0 + (b0 + r * kWarps) * BS + lane * N;
      if (b0 + r * kWarps < nblk) load_lq<T, kVec, N>(lrow, qrow, tok, c1, lu[r], qv[r]);
    }
    if ((it & 31) == 0) {  // a new run of 32 blocks: lane l's is the warp's (it + l)-th
      const int bl = b0 + lane * kWarps;
      if (bl < nblk) {
        const uint4 rnd = race_block_random(seed, request, position, blk0 + bl);
        e_l = -logf(open01(rnd.x));
        u_l = uniform01(rnd.y);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int b = b0 + r * kWarps;
      if (b >= nblk) break;  // warp-uniform
      float w[N];
      race_weights<T, N>(lu[r], qv[r], qrow != nullptr, st, c0 + b * BS + lane * N, w);
      const float W = warp_total(lane_sum(w));
      const int src = (it + r) & 31;
      const uint64_t key = race_key(__shfl_sync(0xffffffffu, e_l, src), W, blk0 + b);
      const float u = __shfl_sync(0xffffffffu, u_l, src);
      if (key < best) {  // warp-uniform: W and the variates are the same in every lane
        best = key;
        bu = u;
#pragma unroll
        for (int e = 0; e < N; ++e) bw[e] = w[e];
      }
    }
  }
  uint64_t tkey = ~0ull;
  if (best != ~0ull) {
    const int tok = race_pick_warp<N>(bw, (int)(uint32_t)best, bu);
    tkey = (best & 0xFFFFFFFF00000000ull) | (uint32_t)tok;
  }
  return block_min_u64<kThreads>(tkey, red);
}

// Out-of-line copies for the persistent chain kernel: separate register allocation keeps its
// hot streaming loop free of spills under the 128-register cap.
// kFast: try filter_fast first (verify_sampled's kFilter instantiation). The tree kernel keeps the
// threshold search: with filter_fast in its row statistics ptxas spilled 96 instead of 48 bytes in
// the kernel body and unfiltered trees ran 5-11% slower.
template <typename T, bool kVec, int kThreads, bool kFast>
__device__ __noinline__ PStat row_stats(const T* __restrict__ row, int V, bool greedy, float s2, int topk, float topp,
                                        RowSmem& sm) {
  return row_stats_inl<T, kVec, kThreads, kFast>(row, V, greedy, s2, topk, topp, sm);
}
template <typename T, bool kVec, int kThreads>
__device__ __noinline__ uint64_t race_tile(const T* __restrict__ lrow, const float* __restrict__ qrow, int c0, int c1,
                                           const PStat st, uint64_t seed, int request, int position, uint64_t* red) {
  return race_tile_inl<T, kVec, kThreads>(lrow, qrow, c0, c1, st, seed, request, position, red);
}

// exp2 of the streaming loop. JITKERN_SAMPLED_FTZ (default 1): ex2.approx.ftz, which drops
// exp2f's subnormal range fix-up (a compare and two predicated multiplies per element, 3 of ~8
// instructions); results below 2^-126 become 0. Harmless for the partial sums: a thread's running
// sum is >= 1 (its own maximum contributes exp2(0)), so such terms are below half an ulp of it.
// Only the normaliser's partials use it; every p(x) the decisions and races see is PStat::p.
#ifndef JITKERN_SAMPLED_FTZ
#define JITKERN_SAMPLED_FTZ 1
#endif
__device__ __forceinline__ float stream_exp2(float x) {
#if JITKERN_SAMPLED_FTZ
  return ex2_ftz(x);
#else
  return exp2f(x);
#endif
}

// Sum of N values as a balanced tree (depth log2 N instead of a serial chain of N - 1 adds).
template <int N>
__device__ __forceinline__ float pair_sum(float (&v)[N]) {
#pragma unroll
  for (int w = 1; w < N; w <<= 1)
#pragma unroll
    for (int e = 0; e + w < N; e += 2 * w) v[e] += v[e + w];
  return v[0];
}

// Per-thread online softmax partial over row[c0, c1) (16-byte vectors, kUnroll loads in flight,
// the running max updated once per pass of kUnroll vectors).
// kAhead: per-thread L2 prefetch distance in passes, as in chunk_argmax_stream.
template <typename T, int kThreads, int kUnroll, int kAhead = 0>
__device__ __forceinline__ void chunk_softmax_stream(const T* __restrict__ row, int c0, int c1, float scale,
                                                     float& m, float& s) {
  constexpr int N = 16 / sizeof(T);
  const int nvec = (c1 - c0) / N;
  const uint4* p = reinterpret_cast<const uint4*>(row + c0);
  for (int base = threadIdx.x; base < nvec; base += kThreads * kUnroll) {
    if constexpr (kAhead > 0) {
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) {
        const int vi = base + (kAhead * kUnroll + r) * kThreads;
        if (vi < nvec) prefetch_l2_line(p + vi);
      }
    }
    // A slot past the end re-reads the last vector (a defined value, same cache line), whose sum
    // is computed and discarded.
    uint4 u[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) u[r] = __ldcs(p + min(base + r * kThreads, nvec - 1));
    // One max and one rescale per pass, so the vectors' exp2 sums are independent chains (a
    // rescale per vector measured 3-9% slower at b >= 12: templates/spec/NOTES.md). A vector takes
    // part iff its NaN-propagating max is > -inf (NaN or all -inf: skipped); u[r] past the end is
    // never added.
    float vm[kUnroll], pm = neg_inf();
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      vm[r] = base + r * kThreads < nvec ? vec_max(u[r], (const T*)nullptr) : neg_inf();
      if (vm[r] > pm) pm = vm[r];
    }
    if (!(pm > neg_inf())) continue;
    if (pm > m) { s *= exp2f((m - pm) * scale); m = pm; }
    float acc[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      float v[N];
      unpack(u[r], (const T*)nullptr, v);
#pragma unroll
      acc[r] = 0.0f;
      for (int e = 0; e < N; ++e) acc[r] += stream_exp2((v[e] - m) * scale);
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r)
      if (vm[r] > neg_inf()) s += acc[r];
  }
  for (int i = c0 + nvec * N + threadIdx.x; i < c1; i += kThreads) softmax_add(m, s, (float)row[i], scale);
}

__device__ __forceinline__ int ld_acquire(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void red_release_add(int* p, int v) {
  asm volatile("red.release.gpu.global.add.s32 [%0], %1;" :: "l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ int atom_add_acq_rel(int* p, int v) {
  int old;
  asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}

// Per-request filter parameters (pointers may be null: the scalar applies).
struct Knobs {
  const float* temps; float temp;
  const int* topks; int topk;
  const float* topps; float topp;
  __device__ __forceinline__ void get(int req, int V, float& t, int& k, float& p, bool& greedy, bool& filtered) const {
    t = temps ? temps[req] : temp;
    k = topks ? topks[req] : topk;
    p = topps ? topps[req] : topp;
    greedy = !(t > 0.0f);
    if (!(k > 0 && k < V)) k = 0;
    if (!(p < 1.0f)) p = 1.0f;
    filtered = !greedy && (k > 0 || p < 1.0f);
  }
};

constexpr int kModeDone = 0, kModeResidual = 1, kModeBonus = 2;

}  // namespace spec

// Chain verification, one persistent launch with an atomic work queue over two tile kinds:
//  A: (row, vocab chunk) for every logits row: chunk softmax partial (m, sum exp) or, at
//     temperature 0, argmax key; a row of a filtered request (top-k / top-p) is handled whole by
//     its chunk-0 tile (row_stats: filter_fast or the threshold search, row re-read through L2).
//     Thread 0 stores the partial and counts the tile in its request's arrival counter with a
//     release reduction; the CTA does not wait for anything.
//  B: (request, vocab chunk): waits until all of its request's A tiles have arrived, computes the
//     request's decision itself (combines the partials per row, runs the accept chain: p and q at
//     the draft tokens only), then races over the emitted row (residual max(0, p - q), or p for
//     the bonus), both race stages in one pass (race_tile). Every B tile of a request derives the
//     same decision (same code, same data) and folds its token key into the request's race slot;
//     the last one to finish takes the slot's token and writes the whole output row.
// Tiles are claimed in order (all A before any B), so a waiting B tile only depends on A tiles
// already claimed by running CTAs: no deadlock whatever the residency. Determinism: partials are
// combined in chunk order and random numbers depend on (seed, request, position, token) only.
// sync int32 [(2b + 3) & ~1 + 2b]: A counters [b], B counters [b], work counter, exit counter, then
// (8-byte aligned) race slots u64 [b] (complement of the smallest token key): zero on entry, zero
// again on exit (the request's last B tile resets its counters and its slot). partial
// [rows * splits] 8 bytes; rowstat [rows] 16 bytes.
// kAhead: per-thread L2 prefetch distance (passes) of the phase-A streaming loops (0 = off).
// kFilter: the instantiation for launches whose requests may filter (row statistics try
// filter_fast; the host passes its dynamic shared memory). Unfiltered launches take kFilter =
// false, the same machine code as before filter_fast existed: with it in every instantiation the
// unfiltered launches measured 2-5% slower (H200, b = 16..256, same run; ptxas spills moved).
template <typename T, typename TokT, typename CuT, bool kVec, int kThreads, int kUnroll, int kMinBlocks, int kAhead,
          bool kFilter>
__global__ void __launch_bounds__(kThreads, kMinBlocks) verify_sampled(
    const T* __restrict__ logits, int64_t ld, const float* __restrict__ q, int64_t qld, int V, int rows,
    int chunk, int splits, int chunk_b, int splits_b, const TokT* __restrict__ draft, const CuT* __restrict__ cu,
    int b, spec::Knobs knobs, uint64_t seed, uint2* __restrict__ partial, float4* __restrict__ rowstat,
    int* __restrict__ sync, int* __restrict__ accepted,
    int* __restrict__ out, int out_cols) {
  __shared__ spec::RowSmem sm;
  __shared__ int s_req, s_flag, s_next, s_acc, s_emit;
  __shared__ float4 s_stat[kThreads / 32];
  __shared__ int s_ok[kThreads / 32], s_amax[kThreads / 32];
  __shared__ int4 s_dec[2];
  constexpr int kWarps = kThreads / 32;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int* cnt_a = sync;
  int* cnt_b = sync + b;
  int* work = sync + 2 * b;
  int* exits = work + 1;
  unsigned long long* race_slot = reinterpret_cast<unsigned long long*>(sync + ((2 * b + 3) & ~1));  // [b]
  const int tiles_a = rows * splits, total = tiles_a + b * splits_b;
  const int tr_a = 2 * gridDim.x, tr_dec = tr_a + tiles_a, tr_bseen = tr_dec + b, tr_bdone = tr_bseen + b * splits_b,
            tr_tok = tr_bdone + b * splits_b;  // SAMPLED_STAMP slots
  (void)tr_a; (void)tr_dec; (void)tr_bseen; (void)tr_bdone; (void)tr_tok;
  SAMPLED_STAMP(blockIdx.x);

  // cu in shared memory (first kCuCache + 1 entries): an A tile's request lookup and its (d0, k)
  // then cost no global round trip before its loads start. Filled under the first claim's latency.
  constexpr int kCuCache = 1024;
  __shared__ int s_cu[kCuCache + 1];
  for (int i = threadIdx.x; i <= min(b, kCuCache); i += kThreads) s_cu[i] = (int)cu[i];
  const auto cu_at = [&](int i) { return i <= kCuCache ? s_cu[i] : (int)cu[i]; };
  if (threadIdx.x == 0) s_next = atomicAdd(work, 1);
  __syncthreads();
  int tile = s_next;
  while (tile < total) {
    __syncthreads();  // every thread has read s_next
    if (threadIdx.x == 0) s_next = atomicAdd(work, 1);  // claim the next tile while this one runs
    if (tile < tiles_a) {
      // ---------------- A: row statistics ----------------
      const int row = tile / splits, sp = tile - row * splits;
      const int c0 = sp * chunk, c1 = min(V, c0 + chunk);
      if (threadIdx.x < 32) {
        const int r = spec::find_request_warp_at(cu_at, b, row);
        if (threadIdx.x == 0) s_req = r;
      }
      __syncthreads();
      const int req = s_req;
      float temp, topp;
      int topk;
      bool greedy, filtered;
      knobs.get(req, V, temp, topk, topp, greedy, filtered);
      const float s2 = greedy ? 0.0f : 1.4426950408889634f / temp;
      const T* lrow = logits + (int64_t)row * ld;
      if (filtered) {
        if (sp == 0) {
          const spec::PStat st = spec::row_stats<T, kVec, kThreads, kFilter>(lrow, V, false, s2, topk, topp, sm);
          if (threadIdx.x == 0)
            rowstat[row] = make_float4(st.m, st.inv_z, __uint_as_float(st.tau), __int_as_float(st.amax));
        }
      } else if (greedy) {
        float best = 0.0f;
        int bidx = -1;
        if (kVec) spec::chunk_argmax_stream<T, kThreads, kUnroll, kAhead>(lrow, c0, c1, best, bidx);
        else spec::chunk_argmax<T, false, kThreads, 4>(lrow, c0, c1, best, bidx);
        const uint64_t key = spec::block_max_u64<kThreads>(spec::argmax_key(best, bidx), sm.red);
        if (threadIdx.x == 0) partial[tile] = make_uint2((uint32_t)key, (uint32_t)(key >> 32));
      } else {
        float m = spec::neg_inf(), s = 0.0f;
        if (kVec) spec::chunk_softmax_stream<T, kThreads, kUnroll, kAhead>(lrow, c0, c1, s2, m, s);
        else for (int i = c0 + threadIdx.x; i < c1; i += kThreads) spec::softmax_add(m, s, (float)lrow[i], s2);
        const float bm = spec::block_max_f<kThreads>(m, reinterpret_cast<float*>(sm.red));
        const float bs = spec::block_sum<kThreads>(s > 0.0f ? s * exp2f((m - bm) * s2) : 0.0f,
                                                   reinterpret_cast<float*>(sm.red + 16));
        if (threadIdx.x == 0) partial[tile] = make_uint2(__float_as_uint(bm), __float_as_uint(bs));
      }
      SAMPLED_STAMP(tr_a + tile);
      // Thread 0 wrote this tile's partial / rowstat: a release reduction publishes it, and the
      // CTA moves on without waiting for the atomic's round trip (the B tiles count arrivals).
      if (threadIdx.x == 0) spec::red_release_add(cnt_a + req, 1);
    } else {
      // ---------------- B: decide, then sample the emitted token ----------------
      // Every B tile of a request computes the request's decision itself (deterministic: the same
      // code on the same partials, so all agree bit for bit) as soon as the A tiles have arrived:
      // no decision CTA, release flag or decision record between the A and B phases.
      const int tb = tile - tiles_a;
      const int req = tb / splits_b, sp = tb - req * splits_b;
      const int c0 = sp * chunk_b, c1 = min(V, c0 + chunk_b);
      const int d0 = cu_at(req), k = cu_at(req + 1) - d0, r0 = d0 + req;
      float temp, topp;
      int topk;
      bool greedy, filtered;
      knobs.get(req, V, temp, topk, topp, greedy, filtered);
      const float s2 = greedy ? 0.0f : 1.4426950408889634f / temp;
      if (threadIdx.x == 0) { s_acc = -1; s_emit = -1; }
      for (int j0 = 0; j0 <= k; j0 += kWarps) {
        __syncthreads();
        if (s_acc >= 0) break;
        const int j = j0 + warp;
        // The draft token, its logit and q and the acceptance uniform do not depend on the A tiles:
        // lane 0 issues them before the wait, so their round trips overlap it.
        int x = -1;
        float lx = 0.0f, qx = 0.0f, ux = 0.0f;
        if (lane == 0 && j < k) {
          x = (int)draft[d0 + j];
          if (x >= 0 && x < V) {
            lx = (float)logits[(int64_t)(r0 + j) * ld + x];
            qx = q[(int64_t)(d0 + j) * qld + x];
            ux = spec::accept_uniform(seed, req, j, 0);
          } else {
            x = -1;
          }
        }
        if (j0 == 0) {  // wait until every A tile of the request has arrived
          if (threadIdx.x == 0)
            while (spec::ld_acquire(cnt_a + req) < (k + 1) * splits) __nanosleep(32);
          __syncthreads();
          SAMPLED_STAMP(tr_bseen + tb);
        }
        if (j <= k) {
          spec::PStat st;
          st.greedy = greedy;
          st.s2 = s2;
          st.tau = 0u;
          st.inv_z = 1.0f;
          st.m = 0.0f;
          st.amax = 0;
          const int row_j = r0 + j;
          if (filtered) {
            const float4 f = __ldcg(rowstat + row_j);
            st.m = f.x; st.inv_z = f.y; st.tau = __float_as_uint(f.z); st.amax = __float_as_int(f.w);
          } else if (greedy) {
            uint64_t mk = 0ull;
            for (int s = lane; s < splits; s += 32) {
              const uint2 u = __ldcg(partial + (int64_t)row_j * splits + s);
              mk = spec::u64max(mk, ((uint64_t)u.y << 32) | u.x);
            }
#pragma unroll
            for (int o = 16; o; o >>= 1) mk = spec::u64max(mk, __shfl_xor_sync(0xffffffffu, mk, o));
            st.amax = spec::key_index(mk);
          } else {
            float m = spec::neg_inf(), s = 0.0f;
            for (int c = lane; c < splits; c += 32) {
              const uint2 u = __ldcg(partial + (int64_t)row_j * splits + c);
              spec::softmax_merge(m, s, __uint_as_float(u.x), __uint_as_float(u.y), s2);
            }
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
              const float m2 = __shfl_xor_sync(0xffffffffu, m, o), sv = __shfl_xor_sync(0xffffffffu, s, o);
              // Merge in lane order (lower lane first) so both partners get the same bits.
              if (lane & o) { float mm = m2, ss = sv; spec::softmax_merge(mm, ss, m, s, s2); m = mm; s = ss; }
              else spec::softmax_merge(m, s, m2, sv, s2);
            }
            st.m = m;
            st.inv_z = 1.0f / s;
          }
          const bool ok = x >= 0 && ux * qx < st.p(lx, x, spec::fkey<T>(lx));
          if (lane == 0) {
            s_ok[warp] = ok;
            s_stat[warp] = make_float4(st.m, st.inv_z, __uint_as_float(st.tau), 0.0f);
            s_amax[warp] = st.amax;
          }
        }
        __syncthreads();
        if (threadIdx.x == 0) {
          for (int w = 0; w < kWarps && j0 + w <= k; ++w) {
            const int jj = j0 + w;
            if (jj == k || !s_ok[w]) {
              s_acc = jj;
              s_emit = s_amax[w];
              const float4 f = s_stat[w];
              const int mode = greedy ? spec::kModeDone : (jj == k ? spec::kModeBonus : spec::kModeResidual);
              s_dec[0] = make_int4(__float_as_int(f.x), __float_as_int(f.y), __float_as_int(f.z), mode);
              s_dec[1] = make_int4(r0 + jj, d0 + jj, jj, 0);
              break;
            }
          }
        }
      }
      __syncthreads();
      if (sp == 0) SAMPLED_STAMP(tr_dec + req);
      const int acc = s_acc;
      const bool fits = k < out_cols;  // the caller's max_num_draft bounds k; flag a violation as -1
      const int4 da = s_dec[0], db = s_dec[1];
      const int mode = fits ? da.w : spec::kModeDone;
      spec::PStat st;
      st.m = __int_as_float(da.x);
      st.inv_z = __int_as_float(da.y);
      st.tau = (uint32_t)da.z;
      st.s2 = s2;
      st.greedy = false;
      st.amax = 0;
      const T* lrow = logits + (int64_t)db.x * ld;
      const float* qrow = mode == spec::kModeResidual ? q + (int64_t)db.y * qld : nullptr;
      // The tile's token key goes into the request's slot as its complement (atomicMax: the slot
      // is zero when unused), then the tile counts itself with an acq_rel add, which orders the
      // max before the count; the last tile reads and clears the slot. No partials, no re-read.
      const uint64_t key = mode != spec::kModeDone
                               ? spec::race_tile<T, kVec, kThreads>(lrow, qrow, c0, c1, st, seed, req, db.z, sm.red)
                               : ~0ull;
      SAMPLED_STAMP(tr_bdone + tb);
      if (threadIdx.x == 0) {
        if (key != ~0ull) atomicMax(race_slot + req, (unsigned long long)~key);
        s_flag = spec::atom_add_acq_rel(cnt_b + req, 1) == splits_b - 1;
        if (s_flag && mode != spec::kModeDone)  // ~0 (slot unused) -> -1: no weight
          s_emit = (int)(unsigned)~atomicExch(race_slot + req, 0ull);
      }
      __syncthreads();
      if (!s_flag) goto next_tile;
      // Last B tile of the request: the token, then the whole output row.
      if (mode != spec::kModeDone && s_emit < 0) {
        // Zero residual mass (p <= q everywhere up to rounding): draw from p instead.
        const uint64_t kp = spec::race_tile<T, kVec, kThreads>(lrow, nullptr, 0, V, st, seed, req, db.z, sm.red);
        if (threadIdx.x == 0) s_emit = kp == ~0ull ? 0 : (int)(uint32_t)kp;
        __syncthreads();
      }
      SAMPLED_STAMP(tr_tok + req);
      {
        const int emit = mode != spec::kModeDone || greedy ? s_emit : -1;
        for (int c = threadIdx.x; c < out_cols; c += kThreads) {
          int t = -1;
          if (fits) t = c < acc ? (int)draft[d0 + c] : (c == acc ? emit : -1);
          out[(int64_t)req * out_cols + c] = t;
        }
      }
      if (threadIdx.x == 0) {
        accepted[req] = fits ? acc : -1;
        // Every B tile of the request has passed its wait (they all arrived on cnt_b): reset both
        // counters for the next call (stream order makes the reset visible).
        cnt_a[req] = 0;
        cnt_b[req] = 0;
      }
    }
  next_tile:
    __syncthreads();
    tile = s_next;
  }
  SAMPLED_STAMP(gridDim.x + blockIdx.x);
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(exits, 1) == (int)gridDim.x - 1) {
      *work = 0;
      *exits = 0;
    }
  }
}

namespace spec {

// Emit step of the tree kernel (whole CTA): the two-level race over W = p of logits row `lrow`
// (wb null) or over the weight buffer wb [V] (a residual), with the same blocks, random numbers
// and, for a chain, the same weights as the chain kernel. Returns the token, or -1 if W has no
// mass. Out of line: the tree kernel's register budget is fixed at 128 by its 512 threads.
template <typename T, bool kVec, int kThreads>
__device__ __noinline__ int tree_emit(const T* __restrict__ lrow, const float* __restrict__ wb, int V, const PStat st,
                                      uint64_t seed, int req, int position, uint64_t* red, int* s_tok) {
  constexpr int N = RaceBlock<T>::N, BS = RaceBlock<T>::size;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // This lane's weights of race block blk from the buffer (0 past V and where not > 0).
  auto load_w = [&](int blk, float (&w)[N]) {
#pragma unroll
    for (int e = 0; e < N; ++e) {
      const int i = blk * BS + lane * N + e;
      const float x = i < V ? __ldcg(wb + i) : 0.0f;
      w[e] = x > 0.0f ? x : 0.0f;
    }
  };
  if (!wb) {
    const uint64_t key = race_tile_inl<T, kVec, kThreads>(lrow, nullptr, 0, V, st, seed, req, position, red);
    return key == ~0ull ? -1 : (int)(uint32_t)key;  // CTA-uniform
  }
  BlockRace br;
  for (int blk = warp; blk * BS < V; blk += kThreads / 32) {
    float w[N];
    load_w(blk, w);
    br.add(warp_total(lane_sum(w)), blk, seed, req, position);
  }
  br.flush(seed, req, position);
  const uint64_t best = block_min_u64<kThreads>(br.best, red);
  if (best == ~0ull) return -1;  // CTA-uniform
  if (warp == 0) {
    const int blk = (int)(uint32_t)best;
    float w[N];
    load_w(blk, w);
    const int tok = race_pick_warp<N>(w, blk, uniform01(race_block_random(seed, req, position, blk).y));
    if (lane == 0) *s_tok = tok;
  }
  __syncthreads();
  return *s_tok;
}

}  // namespace spec

// Tree verification (Eagle-style token trees, multi-candidate recursive rejection sampling), one
// CTA per request. Request i owns nodes [cu[i], cu[i+1]) (node 0 of a request = root, token
// ignored), parents relative to the request (-1 for the root), one logits row and one draft-prob
// row per node (q row of node c: the distribution c's token was drawn from; the root's is unused).
// From the root: try the current node's children in index order; child c (token x, ordinal o
// among the tried children) is accepted iff u(seed, req, node, o) * q_c(x) < W(x) / R, where W is
// the current weight vector (p of the node, then max(0, W / R - q_c) after each rejection whose
// residual has positive mass R); accepted: move to c with W = p_c; none accepted (or a leaf):
// emit a race sample from W at position `node`. scratch [b][2][res_ld] fp32 (residual buffers).
// out/path [b, out_cols]; requests with more than kMaxNodes nodes or a longer path: -1 rows.
template <typename T, typename TokT, typename CuT, bool kVec, int kThreads, int kMaxNodes>
__global__ void __maxnreg__(128) verify_tree_sampled(
    const T* __restrict__ logits, int64_t ld, const float* __restrict__ q, int64_t qld, int V,
    const TokT* __restrict__ tokens, const int* __restrict__ parents, const CuT* __restrict__ cu, int b,
    spec::Knobs knobs, uint64_t seed, float* __restrict__ scratch, int64_t res_ld, int* __restrict__ accepted,
    int* __restrict__ out, int* __restrict__ path, int out_cols) {
  __shared__ spec::RowSmem sm;
  __shared__ int first_child[kMaxNodes], next_sib[kMaxNodes], s_path[kMaxNodes + 1];
  __shared__ int s_ok;
  __shared__ float s_red[kThreads / 32];
  const int req = blockIdx.x;
  const int n0 = (int)cu[req], nn = (int)cu[req + 1] - n0;
  const bool fits_nodes = nn >= 1 && nn <= kMaxNodes;
  if (!fits_nodes) {
    for (int c = threadIdx.x; c < out_cols; c += kThreads) {
      out[(int64_t)req * out_cols + c] = -1;
      path[(int64_t)req * out_cols + c] = -1;
    }
    if (threadIdx.x == 0) accepted[req] = -1;
    return;
  }
  for (int c = threadIdx.x; c < nn; c += kThreads) { first_child[c] = -1; next_sib[c] = -1; }
  __syncthreads();
  if (threadIdx.x == 0) {
    // Children lists in increasing index order (insert at the head, highest index first).
    for (int c = nn - 1; c >= 1; --c) {
      const int pa = parents[n0 + c];
      if (pa >= 0 && pa < nn && pa != c) { next_sib[c] = first_child[pa]; first_child[pa] = c; }
    }
    s_path[0] = 0;
  }
  float temp, topp;
  int topk;
  bool greedy, filtered;
  knobs.get(req, V, temp, topk, topp, greedy, filtered);
  const float s2 = greedy ? 0.0f : 1.4426950408889634f / temp;
  float* const buf0 = scratch + (int64_t)req * 2 * res_ld;
  float* const buf1 = buf0 + res_ld;
  int cur = 0, len = 1, emit = -1;
  while (true) {
    const T* lrow = logits + (int64_t)(n0 + cur) * ld;
    const spec::PStat st = spec::row_stats<T, kVec, kThreads, false>(lrow, V, greedy, s2, filtered ? topk : 0,
                                                               filtered ? topp : 1.0f, sm);
    int res = -1;  // -1: W = p; else W = buf0 / buf1
    float R = 1.0f;
    int ordinal = 0, next = -1;
    for (int c = first_child[cur]; c >= 0; c = next_sib[c], ++ordinal) {
      __syncthreads();
      if (threadIdx.x == 0) {
        const int x = (int)tokens[n0 + c];
        bool ok = false;
        if (x >= 0 && x < V) {
          const float lx = (float)lrow[x];
          const float px = res < 0 ? st.p(lx, x, spec::fkey<T>(lx)) : __fdiv_rn(__ldcg((res ? buf1 : buf0) + x), R);
          const float qx = q[(int64_t)(n0 + c) * qld + x];
          ok = spec::accept_uniform(seed, req, cur, ordinal) * qx < px;
        }
        s_ok = ok;
      }
      __syncthreads();
      if (s_ok) { next = c; break; }
      // Rejected: W' = max(0, W / R - q_c) into the other buffer; keep W if W' has no mass.
      const int dst = res < 0 ? 0 : 1 - res;
      const float* qrow = q + (int64_t)(n0 + c) * qld;
      const float* src = res ? buf1 : buf0;  // read only when res >= 0
      float* const dbuf = dst ? buf1 : buf0;
      float part = 0.0f;
      for (int i = threadIdx.x; i < V; i += kThreads) {
        float wv;
        if (res < 0) { const float l = (float)lrow[i]; wv = st.p(l, i, spec::fkey<T>(l)); }
        else wv = __fdiv_rn(__ldcg(src + i), R);
        const float nw = fmaxf(__fsub_rn(wv, qrow[i]), 0.0f);
        dbuf[i] = nw;
        part = __fadd_rn(part, nw);
      }
      const float Rn = spec::block_sum<kThreads>(part, s_red);
      if (Rn > 0.0f) { res = dst; R = Rn; }
    }
    if (next >= 0) {
      if (threadIdx.x == 0 && len <= kMaxNodes) s_path[len] = next;
      ++len;
      cur = next;
      if (len > kMaxNodes) break;
      continue;
    }
    // Emit from W at position `cur` (a leaf: the bonus from p; else the final residual).
    const int tok = spec::tree_emit<T, kVec, kThreads>(lrow, res < 0 ? nullptr : (res ? buf1 : buf0), V, st, seed, req,
                                                       cur, sm.red, &s_ok);
    emit = tok < 0 ? st.amax : tok;
    break;
  }
  __syncthreads();
  const bool fits = len <= out_cols && len <= kMaxNodes && emit >= 0;
  const int acc = len - 1;
  for (int c = threadIdx.x; c < out_cols; c += kThreads) {
    int t = -1, pn = -1;
    if (fits && c < len) {
      pn = s_path[c];
      t = c < acc ? (int)tokens[n0 + s_path[c + 1]] : emit;
    }
    out[(int64_t)req * out_cols + c] = t;
    path[(int64_t)req * out_cols + c] = pn;
  }
  if (threadIdx.x == 0) accepted[req] = fits ? acc : -1;
}

}  // namespace jitkern
