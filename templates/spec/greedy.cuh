// Greedy speculative verification, one launch: every (row, vocab chunk) CTA computes a partial
// argmax; the last CTA of each request (per-request arrival counter, reset after use) combines the
// partials, walks the drafts and writes the outputs. Reads each logit once; no host sync.
// Semantics and packed layout: jitkern/ops/speculative.py (verify_greedy); oracle:
// jitkern/reference/speculative.py.
#pragma once
#include "spec/common.cuh"

namespace jitkern {
namespace spec {

// bf16 -> fp32 is the bf16 bits in the high half: one shift or mask per element (the intrinsic
// pair __bfloat1622float2 costs a PRMT and a shift for the high element).
__device__ __forceinline__ void unpack(const uint4& u, const __nv_bfloat16*, float (&v)[8]) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) { v[2 * i] = __uint_as_float(w[i] << 16); v[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u); }
}
__device__ __forceinline__ void unpack(const uint4& u, const float*, float (&v)[4]) {
  v[0] = __uint_as_float(u.x); v[1] = __uint_as_float(u.y); v[2] = __uint_as_float(u.z); v[3] = __uint_as_float(u.w);
}

template <typename T> struct Vec { static constexpr int n = 16 / sizeof(T); };


// Per-thread running argmax over one chunk of a row. Elements a thread sees come in increasing
// index order, so "strictly better" keeps the lowest index among equal values.
template <typename T, bool kVec, int kThreads, int kUnroll>
__device__ __forceinline__ void chunk_argmax(const T* __restrict__ row, int c0, int c1, float& best, int& bidx) {
  if (kVec) {
    constexpr int N = Vec<T>::n;
    const int nvec = (c1 - c0) / N;
    const uint4* p = reinterpret_cast<const uint4*>(row + c0);
    for (int base = threadIdx.x; base < nvec; base += kThreads * kUnroll) {
      uint4 u[kUnroll];
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) {
        int vi = base + r * kThreads;
        u[r] = vi < nvec ? __ldcs(p + vi) : make_uint4(0xFF80FF80u, 0xFF80FF80u, 0xFF80FF80u, 0xFF80FF80u);
        if (sizeof(T) == 4 && vi >= nvec) u[r] = make_uint4(0xFF800000u, 0xFF800000u, 0xFF800000u, 0xFF800000u);
      }
      float bm = -__int_as_float(0x7F800000);
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) {
        float v[N];
        unpack(u[r], (const T*)nullptr, v);
#pragma unroll
        for (int e = 0; e < N; ++e) bm = nanmax(bm, v[e]);
      }
      if (bidx < 0 || better(bm, best)) {
        // Rare (about log n times per thread on random data): find the first element equal to bm.
        bool found = false;
#pragma unroll
        for (int r = 0; r < kUnroll; ++r) {
          int vi = base + r * kThreads;
          if (vi >= nvec) break;
          float v[N];
          // Re-read (cache hit) rather than keep u[] alive: keeps the hot loop free of spills.
          unpack(__ldg(p + vi), (const T*)nullptr, v);
#pragma unroll
          for (int e = 0; e < N; ++e) {
            bool hit = (v[e] == bm) || (bm != bm && v[e] != v[e]);
            if (!found && hit) { found = true; best = v[e]; bidx = c0 + vi * N + e; }
          }
        }
      }
    }
    // Tail (only the last chunk of a row whose length is not a multiple of N).
    for (int i = c0 + nvec * N + threadIdx.x; i < c1; i += kThreads) {
      float v = (float)row[i];
      if (bidx < 0 || better(v, best)) { best = v; bidx = i; }
    }
  } else {
    for (int i = c0 + threadIdx.x; i < c1; i += kThreads) {
      float v = (float)row[i];
      if (bidx < 0 || better(v, best)) { best = v; bidx = i; }
    }
  }
}

// Arrival protocol: thread 0 publishes, fences, counts; returns true in every thread of the
// CTA that arrived last (which then sees all other CTAs' partials).
__device__ __forceinline__ bool arrive_last(int* counter, int total, int* flag) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    int old = atomicAdd(counter, 1);
    *flag = (old == total - 1);
    if (*flag) __threadfence();
  }
  __syncthreads();
  return *flag != 0;
}

}  // namespace spec

// Grid: 1-D, rows * splits CTAs (CTA -> row = bid / splits, chunk = bid % splits).
// logits [rows, V] row stride ld (elements); draft [sum k]; cu [b + 1] (cu[0] = 0);
// partial [rows * splits] u64 scratch; counters [b] int32, zero on entry, zero again on exit;
// accepted [b] int32; out [b, out_cols] int32.
template <typename T, typename TokT, typename CuT, bool kVec, int kThreads, int kUnroll>
__global__ void __launch_bounds__(kThreads) verify_greedy(
    const T* __restrict__ logits, int64_t ld, int V, int chunk, int splits, const TokT* __restrict__ draft,
    const CuT* __restrict__ cu, int b, uint64_t* __restrict__ partial, int* __restrict__ counters,
    int* __restrict__ accepted, int* __restrict__ out, int out_cols) {
  __shared__ uint64_t red[kThreads / 32];
  __shared__ int s_req, s_flag, s_acc, s_bonus;
  __shared__ int s_am[kThreads / 32];
  const int row = blockIdx.x / splits, split = blockIdx.x % splits;
  const int c0 = split * chunk, c1 = min(V, c0 + chunk);
  if (threadIdx.x < 32) {
    const int r = spec::find_request_warp(cu, b, row);
    if (threadIdx.x == 0) s_req = r;
  }  // overlaps with the loads below

  float best = 0.0f;
  int bidx = -1;
  spec::chunk_argmax<T, kVec, kThreads, kUnroll>(logits + (int64_t)row * ld, c0, c1, best, bidx);
  uint64_t key = spec::block_max_u64<kThreads>(spec::argmax_key(best, bidx), red);
  if (threadIdx.x == 0) partial[blockIdx.x] = key;

  __syncthreads();
  const int req = s_req;
  const int d0 = (int)cu[req], k = (int)cu[req + 1] - d0, r0 = d0 + req;
  if (!spec::arrive_last(counters + req, (k + 1) * splits, &s_flag)) return;

  // Last CTA of this request: rows r0 .. r0 + k, one warp per row per round.
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  constexpr int kWarps = kThreads / 32;
  if (threadIdx.x == 0) { s_acc = -1; s_bonus = -1; }
  for (int j0 = 0; j0 <= k; j0 += kWarps) {
    __syncthreads();
    if (s_acc >= 0) break;
    int j = j0 + warp;
    if (j <= k) {
      uint64_t m = 0;
      for (int s = lane; s < splits; s += 32) m = spec::u64max(m, __ldcg(partial + (int64_t)(r0 + j) * splits + s));
#pragma unroll
      for (int o = 16; o; o >>= 1) m = spec::u64max(m, __shfl_xor_sync(0xffffffffu, m, o));
      if (lane == 0) s_am[warp] = spec::key_index(m);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 0; w < kWarps && j0 + w <= k; ++w) {
        int jj = j0 + w;
        if (jj == k || (int)draft[d0 + jj] != s_am[w]) { s_acc = jj; s_bonus = s_am[w]; break; }
      }
    }
  }
  __syncthreads();
  const int acc = s_acc, bonus = s_bonus;
  const bool fits = k < out_cols;  // the caller's max_num_draft bounds k; flag a violation as -1
  for (int c = threadIdx.x; c < out_cols; c += kThreads) {
    int t = -1;
    if (fits) t = c < acc ? (int)draft[d0 + c] : (c == acc ? bonus : -1);
    out[(int64_t)req * out_cols + c] = t;
  }
  if (threadIdx.x == 0) {
    accepted[req] = fits ? acc : -1;
    counters[req] = 0;  // ready for the next call (stream order makes the reset visible)
  }
}

namespace spec {

// Max of one 16-byte vector, NaN-propagating. bf16: packed bf16x2 max (HMNMX2.NAN, one
// instruction per two elements) so the streaming loop stays far below the memory roofline.
__device__ __forceinline__ float vec_max(const uint4& u, const __nv_bfloat16*) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
  const __nv_bfloat162 m = __hmax2_nan(__hmax2_nan(h[0], h[1]), __hmax2_nan(h[2], h[3]));
  // The two halves' max, still packed (a swap and one HMNMX2), then its low half as fp32.
  const __nv_bfloat162 mm = __hmax2_nan(m, __lowhigh2highlow(m));
  return __uint_as_float(*reinterpret_cast<const uint32_t*>(&mm) << 16);
}
__device__ __forceinline__ float vec_max(const uint4& u, const float*) {
  return nanmax(nanmax(__uint_as_float(u.x), __uint_as_float(u.y)), nanmax(__uint_as_float(u.z), __uint_as_float(u.w)));
}

// Streaming per-thread argmax of one chunk (16-byte aligned start, chunk a multiple of the vector
// width except at the row end). All kUnroll loads of a pass are issued before any reduction; the
// thread keeps only (max, first vector holding it, that vector) so there is no re-read and no
// divergent branch in the loop; the element inside the winning vector is located once at the end.
// Vectors a thread sees come in increasing index order, so "strictly better" keeps the lowest.
// kAhead > 0: each thread also asks L2 for its vectors kAhead passes ahead (more bytes in flight
// than kUnroll registers hold; the greedy kernel has enough in registers and passes 0).
template <typename T, int kThreads, int kUnroll, int kAhead = 0>
__device__ __forceinline__ void chunk_argmax_stream(const T* __restrict__ row, int c0, int c1, float& best, int& bidx) {
  constexpr int N = Vec<T>::n;
  const int nvec = (c1 - c0) / N;
  const uint4* p = reinterpret_cast<const uint4*>(row + c0);
  float bm = 0.0f;
  int bvi = -1;
  uint4 bu = make_uint4(0u, 0u, 0u, 0u);
  int base = threadIdx.x;
  for (; base + (kUnroll - 1) * kThreads < nvec; base += kThreads * kUnroll) {
    if constexpr (kAhead > 0) {
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) {
        const int vi = base + (kAhead * kUnroll + r) * kThreads;
        if (vi < nvec) prefetch_l2_line(p + vi);
      }
    }
    uint4 u[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) u[r] = __ldcs(p + base + r * kThreads);
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const float m = vec_max(u[r], (const T*)nullptr);
      if (bvi < 0 || better(m, bm)) { bm = m; bvi = base + r * kThreads; bu = u[r]; }
    }
  }
  {  // last partial pass: fewer than kUnroll vectors left for this thread
    uint4 u[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r)
      if (base + r * kThreads < nvec) u[r] = __ldcs(p + base + r * kThreads);
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      if (base + r * kThreads < nvec) {
        const float m = vec_max(u[r], (const T*)nullptr);
        if (bvi < 0 || better(m, bm)) { bm = m; bvi = base + r * kThreads; bu = u[r]; }
      }
    }
  }
  if (bvi >= 0) {
    float v[N];
    unpack(bu, (const T*)nullptr, v);
    int e0 = N - 1;
#pragma unroll
    for (int e = N - 1; e >= 0; --e) {
      const bool hit = (v[e] == bm) || (bm != bm && v[e] != v[e]);
      if (hit) e0 = e;
    }
    best = v[e0];
    bidx = c0 + bvi * N + e0;
  }
  // Row-end tail (row length not a multiple of the vector width): indices above every vector's.
  for (int i = c0 + nvec * N + threadIdx.x; i < c1; i += kThreads) {
    const float v = (float)row[i];
    if (bidx < 0 || better(v, best)) { best = v; bidx = i; }
  }
}

}  // namespace spec

// Streaming greedy verification (default). Same arguments, outputs and arrival protocol as
// verify_greedy, plus `tiles` = rows * splits: the grid is sized to the resident CTA count and each
// CTA walks tiles (row, chunk) with a grid stride, so a launch is about one wave of long-lived CTAs
// each keeping kUnroll 16-byte loads per thread in flight. Requires 16-byte aligned rows and a
// chunk that is a multiple of the vector width (the host falls back to verify_greedy otherwise).
// No L2 prefetch: its 8 loads per thread already keep enough in flight. Measured on the H200 (bench
// spec, whole-row tiles): a bulk prefetch by one thread (cp.async.bulk.prefetch.L2) 0 / 1 / 4
// passes ahead: b=64 k=7 34.1 / 39.2 / 48.2 us, b=256 k=3 64.4 / 76.2 / 93.8 us; per-thread
// prefetch.global.L2 0 / 1 / 2 passes ahead: b=64 34.9 / 40.1 / 42.7 us, b=256 66.4 / 79.6 / 85.0 us.
template <typename T, typename TokT, typename CuT, int kThreads, int kUnroll, int kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks) verify_greedy_stream(
    const T* __restrict__ logits, int64_t ld, int V, int chunk, int splits, int tiles, const TokT* __restrict__ draft,
    const CuT* __restrict__ cu, int b, uint64_t* __restrict__ partial, int* __restrict__ counters,
    int* __restrict__ accepted, int* __restrict__ out, int out_cols) {
  __shared__ uint64_t red[kThreads / 32];
  __shared__ int s_req, s_flag, s_acc, s_bonus;
  __shared__ int s_am[kThreads / 32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  constexpr int kWarps = kThreads / 32;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int row = tile / splits, split = tile - row * splits;
    const int c0 = split * chunk, c1 = min(V, c0 + chunk);
    __syncthreads();  // every thread has read the previous tile's s_req / s_acc / s_bonus
    if (threadIdx.x < 32) {
      const int r = spec::find_request_warp(cu, b, row);
      if (threadIdx.x == 0) s_req = r;
    }
    float best = 0.0f;
    int bidx = -1;
    spec::chunk_argmax_stream<T, kThreads, kUnroll>(logits + (int64_t)row * ld, c0, c1, best, bidx);
    const uint64_t key = spec::block_max_u64<kThreads>(spec::argmax_key(best, bidx), red);
    if (threadIdx.x == 0) partial[tile] = key;
    const int req = s_req;  // visible: block_max_u64 synchronised after the write
    const int d0 = (int)cu[req], k = (int)cu[req + 1] - d0, r0 = d0 + req;
    if (!spec::arrive_last(counters + req, (k + 1) * splits, &s_flag)) continue;

    if (threadIdx.x == 0) { s_acc = -1; s_bonus = -1; }
    for (int j0 = 0; j0 <= k; j0 += kWarps) {
      __syncthreads();
      if (s_acc >= 0) break;
      const int j = j0 + warp;
      if (j <= k) {
        uint64_t m = 0;
        for (int s = lane; s < splits; s += 32) m = spec::u64max(m, __ldcg(partial + (int64_t)(r0 + j) * splits + s));
#pragma unroll
        for (int o = 16; o; o >>= 1) m = spec::u64max(m, __shfl_xor_sync(0xffffffffu, m, o));
        if (lane == 0) s_am[warp] = spec::key_index(m);
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        for (int w = 0; w < kWarps && j0 + w <= k; ++w) {
          const int jj = j0 + w;
          if (jj == k || (int)draft[d0 + jj] != s_am[w]) { s_acc = jj; s_bonus = s_am[w]; break; }
        }
      }
    }
    __syncthreads();
    const int acc = s_acc, bonus = s_bonus;
    const bool fits = k < out_cols;
    for (int c = threadIdx.x; c < out_cols; c += kThreads) {
      int t = -1;
      if (fits) t = c < acc ? (int)draft[d0 + c] : (c == acc ? bonus : -1);
      out[(int64_t)req * out_cols + c] = t;
    }
    if (threadIdx.x == 0) {
      accepted[req] = fits ? acc : -1;
      counters[req] = 0;
    }
  }
}

// Greedy verification of token trees (Eagle-style). Request i owns nodes [cu[i], cu[i+1]), one
// logits row each, node 0 of a request is the root (its token is ignored) and parents[node] is
// the parent's index relative to the request's first node (-1 for the root). From the root,
// repeatedly step to the lowest-index child whose token equals the current node's argmax; stop
// when none does and emit that argmax as the bonus token. Outputs: accepted [b] (path length
// minus the root), out [b, out_cols] accepted tokens then the bonus (-1 padded), path
// [b, out_cols] node indices relative to the request (root first, -1 padded). Requests with
// more than kMaxNodes nodes or a path longer than out_cols - 1 get accepted = -1 and -1 rows.
template <typename T, typename TokT, typename CuT, bool kVec, int kThreads, int kUnroll, int kMaxNodes>
__global__ void __launch_bounds__(kThreads) verify_tree_greedy(
    const T* __restrict__ logits, int64_t ld, int V, int chunk, int splits, const TokT* __restrict__ tokens,
    const int* __restrict__ parents, const CuT* __restrict__ cu, int b, uint64_t* __restrict__ partial,
    int* __restrict__ counters, int* __restrict__ accepted, int* __restrict__ out, int* __restrict__ path,
    int out_cols) {
  __shared__ uint64_t red[kThreads / 32];
  __shared__ int s_req, s_flag, s_len;
  __shared__ int s_am[kMaxNodes];
  __shared__ int s_path[kMaxNodes + 1];
  const int row = blockIdx.x / splits, split = blockIdx.x % splits;
  const int c0 = split * chunk, c1 = min(V, c0 + chunk);
  if (threadIdx.x < 32) {
    const int r = spec::find_request_warp<CuT, false>(cu, b, row);
    if (threadIdx.x == 0) s_req = r;
  }
  float best = 0.0f;
  int bidx = -1;
  spec::chunk_argmax<T, kVec, kThreads, kUnroll>(logits + (int64_t)row * ld, c0, c1, best, bidx);
  uint64_t key = spec::block_max_u64<kThreads>(spec::argmax_key(best, bidx), red);
  if (threadIdx.x == 0) partial[blockIdx.x] = key;
  __syncthreads();
  const int req = s_req;
  const int n0 = (int)cu[req], nn = (int)cu[req + 1] - n0;
  if (!spec::arrive_last(counters + req, nn * splits, &s_flag)) return;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const bool fits_nodes = nn <= kMaxNodes;
  if (fits_nodes) {
    for (int j = warp; j < nn; j += kThreads / 32) {
      uint64_t m = 0;
      for (int s = lane; s < splits; s += 32) m = spec::u64max(m, __ldcg(partial + (int64_t)(n0 + j) * splits + s));
#pragma unroll
      for (int o = 16; o; o >>= 1) m = spec::u64max(m, __shfl_xor_sync(0xffffffffu, m, o));
      if (lane == 0) s_am[j] = spec::key_index(m);
    }
  }
  __syncthreads();
  if (warp == 0 && fits_nodes) {
    // Walk: one warp scans the node list 32 at a time for the first matching child.
    int cur = 0, len = 1;
    if (lane == 0) s_path[0] = 0;
    while (true) {
      const int want = s_am[cur];
      int next = -1;
      for (int c0n = 0; c0n < nn && next < 0; c0n += 32) {
        const int c = c0n + lane;
        const bool hit = c < nn && c > 0 && parents[n0 + c] == cur && (int)tokens[n0 + c] == want;
        const unsigned m = __ballot_sync(0xffffffffu, hit);
        if (m) next = c0n + __ffs(m) - 1;
      }
      if (next < 0) break;
      cur = next;
      if (lane == 0) s_path[len] = cur;
      ++len;
      if (len > kMaxNodes) break;  // a parent cycle: malformed tree
    }
    if (lane == 0) s_len = len;
  }
  __syncthreads();
  const int len = fits_nodes ? s_len : 0;
  const bool fits = fits_nodes && len <= out_cols && len <= nn;
  const int acc = len - 1;
  for (int c = threadIdx.x; c < out_cols; c += kThreads) {
    int t = -1, pn = -1;
    if (fits && c < len) {
      pn = s_path[c];
      t = c < acc ? (int)tokens[n0 + s_path[c + 1]] : s_am[s_path[acc]];
    }
    out[(int64_t)req * out_cols + c] = t;
    path[(int64_t)req * out_cols + c] = pn;
  }
  if (threadIdx.x == 0) {
    accepted[req] = fits ? acc : -1;
    counters[req] = 0;
  }
}

// Draft length per request: longest prefix of sigmoid(conf[i, :]) >= threshold. conf [b, k]
// row stride ld; one warp per request.
template <typename T>
__global__ void __launch_bounds__(128) select_draft_length(const T* __restrict__ conf, int64_t ld, int b, int k,
                                                           float threshold, int* __restrict__ lengths) {
  const int req = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (req >= b) return;
  int first_bad = k;
  for (int j0 = 0; j0 < k; j0 += 32) {
    int j = j0 + lane;
    bool bad = false;
    if (j < k) {
      float x = (float)conf[(int64_t)req * ld + j];
      float s = 1.0f / (1.0f + expf(-x));
      bad = !(s >= threshold);
    }
    unsigned m = __ballot_sync(0xffffffffu, bad);
    if (m) { first_bad = j0 + __ffs(m) - 1; break; }
  }
  if (lane == 0) lengths[req] = first_bad;
}

}  // namespace jitkern
