// MLA decode over a paged latent KV cache (DeepSeek multi-head latent attention), sm_90a.
//
// Kernels, all CUDA-graph capturable (no host-side data dependence):
//  * mla_metadata_kernel: split-KV work partition from cache_seqlens, on the GPU (one CTA).
//  * mla_decode_kernel:   one CTA = one 64-row query block (h_q*s_q rows of one request,
//                         flattened as row = t*h_q + h) x one "part" (a contiguous range of
//                         64-token KV tiles over the whole batch). Warpgroup 0 is the TMA
//                         producer; warpgroups 1 and 2 compute S = Q K^T (each 32 of the 64
//                         tokens), online softmax in fp32, and O += P V (each 256 of the 512
//                         value dims; V = first 512 dims of the same latent tile, loaded once).
//  * mla_combine_warp_kernel / mla_combine_kernel: merge the partial (out, lse) of requests
//                         split across parts (a warp per row for a few splits; a bulk-copy ring,
//                         one CTA per row, for many).
// Math contract and edge cases: jitkern/reference/mla.py.
#pragma once
#include <cuda_bf16.h>
#include "common/hopper.cuh"
#include "common/wgmma.cuh"

namespace jitkern {
namespace mla {

#define kInf __int_as_float(0x7f800000)  // +inf (NVRTC has no <cmath> INFINITY)
constexpr int kBlockM = 64;                       // query rows per CTA
constexpr int kBlockN = 64;                       // KV tokens per tile
constexpr int kDimQK = 576;
constexpr int kDimV = 512;
constexpr int kChunks = kDimQK / 64;              // 128-byte (64 x bf16) swizzle chunks per row
constexpr int kChunkBytes = 64 * 128;             // one chunk of a 64-row tile
constexpr int kTileBytes = kChunks * kChunkBytes; // 73728: one Q block or one KV tile
constexpr int kStages = 2;
constexpr int kPBytes = kBlockM * kBlockN * 2;
// Diagnostics only (wrong results on purpose; scripts/mla_diag.py): the k16 steps of S issued
// (of kChunks * 4), and JITKERN_MLA_DIAG_NO_PV=1 issues no PV wgmma. They tell which of S, PV or the
// rest bounds a tile; the defaults build the real kernel.
#ifndef JITKERN_MLA_DIAG_S_STEPS
#define JITKERN_MLA_DIAG_S_STEPS (kChunks * 4)
#endif
#ifndef JITKERN_MLA_DIAG_NO_PV
#define JITKERN_MLA_DIAG_NO_PV 0
#endif
// Shared memory: Q | KV stage 0 | KV stage 1 | P | row max [2][64] | row sum [2][64] | barriers
constexpr int kSmemP = (1 + kStages) * kTileBytes;
constexpr int kSmemRed = kSmemP + kPBytes;
constexpr int kSmemBars = kSmemRed + 2 * 2 * kBlockM * 4;
// full (per chunk), empty, q_full, q_empty, the seesaw's two max-exchange barriers (kMode 64: P
// ready, by tile parity), and kMode 64's two "P free" and its "row sums ready" / "consumed" barriers
constexpr int kNumBars = kStages * kChunks + kStages + 2 + 2 + 2 + 2;
constexpr int kSmemBytes = kSmemBars + 8 * kNumBars;

// Must match jitkern/ops/mla.py (_DecodeParams). 8-byte fields first: no padding surprises.
struct DecodeParams {
  __nv_bfloat16* out;          // [b, s_q, h_q, 512]
  float* lse;                  // [b, h_q, s_q]
  float* out_acc;              // [slots, rows, 512] partial outputs of split requests
  float* lse_acc;              // [slots, rows]
  const int* block_table;      // [b, bt_stride] (first max_pages columns used)
  const int* seqlens;          // [b]
  const int* md_g;             // [num_parts + 1] first global tile of each part
  const int* md_begin;         // [num_parts] request holding the part's first tile
  const int* md_bpre;          // [b + 1] exclusive prefix of tiles per request
  const int* md_nsplits;       // [b]
  const int* md_first;         // [b] first part touching each request
  const int* md_soff;          // [b] first partial slot of each split request
  int* err;                    // bit 0: a request needs more pages than block_table holds
  long long bt_stride;
  int batch, s_q, h_q, rows, max_pages, page_size, causal, num_parts;
  float scale_log2;            // softmax_scale * log2(e)
  int pad_;
};

struct CombineParams {
  __nv_bfloat16* out;
  float* lse;
  const float* out_acc;
  const float* lse_acc;
  const int* md_nsplits;
  const int* md_soff;
  int batch, s_q, h_q, rows;
};

struct MetadataParams {
  const int* seqlens;  // [b]
  int* md_g;           // [num_parts + 1]
  int* md_begin;       // [num_parts]
  int* md_bpre;        // [b + 1]
  int* md_cpre;        // [b + 1] scratch: prefix of (tiles + overhead)
  int* md_nsplits;     // [b]
  int* md_first;       // [b]
  int* md_soff;        // [b]
  int* md_total;       // [1] partial slots used
  int batch, num_parts, overhead;
  int pad_;
};

// The host packs these structs with ctypes (jitkern/ops/mla.py): sizes must agree.
static_assert(sizeof(DecodeParams) == 152, "DecodeParams layout changed: update _DecodeParams");
static_assert(sizeof(CombineParams) == 64, "CombineParams layout changed: update _CombineParams");
static_assert(sizeof(MetadataParams) == 88, "MetadataParams layout changed: update _MetadataParams");

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// One S accumulator of NG 8-column groups (m64nNk16 layout: acc[4j + e] row r0, acc[4j + 2 + e] row
// r0 + 8, column 8j + cq + e): keys at or past each row's limit masked to -inf by selection (NaN
// garbage past the end cannot survive) into sv (may be acc), and the rows' maxima over the quad.
template <int NG>
__device__ __forceinline__ void mask_rowmax(const float* acc, float* sv, int key0, int lim0, int lim1, float& mx0,
                                            float& mx1) {
  mx0 = -kInf;
  mx1 = -kInf;
#pragma unroll
  for (int j = 0; j < NG; ++j) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int key = key0 + 8 * j + e;
      sv[4 * j + e] = key < lim0 ? acc[4 * j + e] : -kInf;
      sv[4 * j + 2 + e] = key < lim1 ? acc[4 * j + 2 + e] : -kInf;
      mx0 = fmaxf(mx0, sv[4 * j + e]);
      mx1 = fmaxf(mx1, sv[4 * j + 2 + e]);
    }
  }
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
}

// P = exp2(sv * sl2 - b) of the same layout as bf16 into pb (P [64 x 64] K-major with the 128-byte
// swizzle TMA would produce; this thread's groups are 16-byte units unit0 .. unit0 + NG), and the
// rows' sums over this thread's columns.
template <int NG>
__device__ __forceinline__ void exp_to_smem(const float* sv, float sl2, float b0, float b1, uint8_t* pb, int unit0,
                                            int r0, int r1, int cq, float& rs0, float& rs1) {
  rs0 = 0.f;
  rs1 = 0.f;
#pragma unroll
  for (int j = 0; j < NG; ++j) {
    const float p00 = ex2(fmaf(sv[4 * j + 0], sl2, -b0)), p01 = ex2(fmaf(sv[4 * j + 1], sl2, -b0));
    const float p10 = ex2(fmaf(sv[4 * j + 2], sl2, -b1)), p11 = ex2(fmaf(sv[4 * j + 3], sl2, -b1));
    rs0 += p00 + p01;
    rs1 += p10 + p11;
    const int u = unit0 + j;
    *reinterpret_cast<uint32_t*>(pb + r0 * 128 + ((u ^ (r0 & 7)) << 4) + cq * 2) = sm90::pack_bf16x2(p00, p01);
    *reinterpret_cast<uint32_t*>(pb + r1 * 128 + ((u ^ (r1 & 7)) << 4) + cq * 2) = sm90::pack_bf16x2(p10, p11);
  }
}

// ------------------------------------------------------------------------------------------
// Metadata: parts cut the batch's tiles into equal-cost contiguous ranges, where a request
// costs its tiles plus `overhead` (its Q load, output write and combine). One CTA of 1024.
// ------------------------------------------------------------------------------------------
__device__ __forceinline__ int block_inclusive_scan(int v, int* warp_sums, int& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    int n = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += n;
  }
  if (lane == 31) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int w = lane < (blockDim.x >> 5) ? warp_sums[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      int n = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += n;
    }
    warp_sums[lane] = w;
  }
  __syncthreads();
  if (warp > 0) v += warp_sums[warp - 1];
  total = warp_sums[31];
  __syncthreads();
  return v;
}

// Largest i in [0, n] with a[i] <= x (a non-decreasing, a[0] <= x).
__device__ __forceinline__ int upper_index(const int* a, int n, int x) {
  int lo = 0, hi = n;
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (a[mid] <= x) lo = mid; else hi = mid - 1;
  }
  return lo;
}

template <int kThreads>
__global__ void __launch_bounds__(kThreads, 1) mla_metadata_kernel(const __grid_constant__ MetadataParams p) {
  __shared__ int warp_sums[32];
  const int b = p.batch, P = p.num_parts;
  int carry_b = 0, carry_c = 0;
  if (threadIdx.x == 0) { p.md_bpre[0] = 0; p.md_cpre[0] = 0; }
  for (int base = 0; base < b; base += kThreads) {
    const int i = base + threadIdx.x;
    const int len = i < b ? max(p.seqlens[i], 0) : 0;
    const int nb = (len + kBlockN - 1) / kBlockN;
    int tb, tc;
    const int sb = block_inclusive_scan(nb, warp_sums, tb);
    const int sc = block_inclusive_scan(i < b ? nb + p.overhead : 0, warp_sums, tc);
    if (i < b) { p.md_bpre[i + 1] = carry_b + sb; p.md_cpre[i + 1] = carry_c + sc; }
    carry_b += tb;
    carry_c += tc;
  }
  __syncthreads();
  const int total = carry_c;
  const int width = max((total + P - 1) / P, 1);
  for (int q = threadIdx.x; q <= P; q += kThreads) {
    const int x = min(q * width, total);
    int g, i;
    if (x >= total) {
      g = p.md_bpre[b];
      i = b - 1;
    } else {
      i = upper_index(p.md_cpre, b, x);  // x < cpre[b] so i < b
      const int nb = p.md_bpre[i + 1] - p.md_bpre[i];
      g = p.md_bpre[i] + min(max(x - p.md_cpre[i] - p.overhead, 0), nb);
    }
    p.md_g[q] = g;
    if (q < P) p.md_begin[q] = max(i, 0);
  }
  __syncthreads();
  int carry_s = 0;
  for (int base = 0; base < b; base += kThreads) {
    const int i = base + threadIdx.x;
    int ns = 0, first = 0;
    if (i < b) {
      const int s = p.md_bpre[i], e = p.md_bpre[i + 1];
      if (e > s) {
        first = upper_index(p.md_g, P - 1, s);
        const int last = upper_index(p.md_g, P - 1, e - 1);
        ns = last - first + 1;
      }
      p.md_nsplits[i] = ns;
      p.md_first[i] = first;
    }
    int ts;
    const int v = ns > 1 ? ns : 0;
    const int incl = block_inclusive_scan(v, warp_sums, ts);
    if (i < b) p.md_soff[i] = carry_s + incl - v;
    carry_s += ts;
  }
  if (threadIdx.x == 0) p.md_total[0] = carry_s;
}

// ------------------------------------------------------------------------------------------
// Decode
// ------------------------------------------------------------------------------------------

// Token rows past the sequence end may hold anything (NaN): zero the value dims of chunks
// [chunk0, chunk0 + 4) of tile kt (tile index blk) so that P = 0 times garbage cannot poison O.
// Called by the 128 threads of one warpgroup (tid); no wgmma may be reading those rows meanwhile,
// and the caller fences (fence_proxy_async_shared) before the wgmma that reads them.
__device__ __forceinline__ void zero_v_tail(uint8_t* kt, int valid, int chunk0, int tid) {
  if (valid < kBlockN) {
    const int first = max(valid, 0);
    const int n16 = (kBlockN - first) * 8;  // 16-byte units per chunk
    for (int idx = tid; idx < 4 * n16; idx += 128) {
      const int c = chunk0 + idx / n16, u = idx % n16;
      *reinterpret_cast<uint4*>(kt + c * kChunkBytes + first * 128 + u * 16) = make_uint4(0, 0, 0, 0);
    }
  }
}

// acc (m64nN) = A B^T over all 576 dims: JITKERN_MLA_DIAG_S_STEPS k16 steps, A rows at a, B rows at
// b, both K-major in 128-byte-swizzled 64-dim chunks kChunkBytes apart; committed, not waited for.
template <int N>
__device__ __forceinline__ void issue_dot576(const uint8_t* a, const uint8_t* b, float* acc) {
#pragma unroll
  for (int k = 0; k < N / 2; ++k) sm90::fence_operand(acc[k]);
  sm90::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < JITKERN_MLA_DIAG_S_STEPS; ++kk) {
    const uint64_t da = sm90::make_smem_desc_k_sw128(a + (kk >> 2) * kChunkBytes) + (kk & 3) * 2;
    const uint64_t db = sm90::make_smem_desc_k_sw128(b + (kk >> 2) * kChunkBytes) + (kk & 3) * 2;
    sm90::WgmmaBf16<N>::mma(da, db, acc, kk > 0 ? 1u : 0u);
  }
  sm90::wgmma_commit();
}

// Next (request, tile range) of this part; advances past requests with no tiles.
__device__ __forceinline__ bool next_segment(const DecodeParams& p, int& g, int g_end, int& req, int& lo,
                                             int& hi) {
  if (g >= g_end) return false;
  while (p.md_bpre[req + 1] <= g) ++req;
  const int base = p.md_bpre[req];
  lo = g - base;
  hi = min(g_end, p.md_bpre[req + 1]) - base;
  g = base + hi;
  return true;
}

// kMode bits (0 = the verified baseline: per tile S -> softmax -> PV, each waited for):
//  1 ("pipe"):  S of the next tile is issued before this tile's softmax (overlap).
//  2 ("split"): S split over the head dim instead of the tokens: warpgroup w computes the
//               partial S over dims [288w, 288w+288) for all 64 tokens with m64n64k16, so Q and
//               K are each streamed from smem once per tile (n32 over all 576 dims streamed Q
//               twice, and n32 is smem-bound: 3 KiB per 16 clk of math). The partials of the
//               other warpgroup's 32 token columns go through smem (8 KiB each way). P then
//               lives in the tile's RoPE chunk (dims 512..575: only S reads it).
//  4 ("lazy"):  skip the O rescale when no row of the warp changed its max (alpha == 1 exactly).
//  8 ("chunk"): one full barrier per 64-dim chunk of a KV tile: S starts on chunk 0 while the
//               rest of the tile still streams in (mode 0 waits for all 72 KiB). Not with 1, 2.
// 16 ("ov"):    S of tile j+1 is issued right behind PV of tile j (no tensor-core gap for the
//               PV drain, stage release and S setup); the stage is released once PV retires
//               (wgmma_wait<1>). Unlike mode 1 it needs tile j+1 no earlier than mode 0. Not with 1, 2.
// 32 ("seesaw", FlashMLA's schedule): tiles in pairs (K0, K1). Warpgroup 0
//               computes the full S0 = Q K0^T (m64n64k16: Q and K streamed from smem once), its
//               softmax and P0 (into K0's RoPE chunk, which only S reads), warpgroup 1 likewise S1
//               for K1, concurrently. Only the running row max crosses between them (mbarriers
//               xchg[0]: after K0, [1]: after K1); each derives both rescale factors from its own
//               copy of m, so one's softmax runs under the other's GEMM. O halves as in mode 0;
//               row sums: warpgroup 0 over P0 rows, 1 over P1 rows, added at the end. Alone only.
// 64 ("t"):     transposed tiles for query blocks of <= 32 rows (see the kT branch). Alone only.
template <int kMode>
__global__ void __launch_bounds__(384, 1)
mla_decode_kernel(const __grid_constant__ sm90::TmaDescriptor tma_q, const __grid_constant__ sm90::TmaDescriptor tma_kv,
                  const __grid_constant__ DecodeParams p) {
  using namespace sm90;
  extern __shared__ __align__(1024) uint8_t smem[];
  uint8_t* sQ = smem;
  uint8_t* sK = smem + kTileBytes;
  uint8_t* sP = smem + kSmemP;
  float* red_max = reinterpret_cast<float*>(smem + kSmemRed);
  float* red_sum = red_max + 2 * kBlockM;
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + kSmemBars);
  // full: [stage * kChunks + chunk] TMA -> consumers; without mode bit 8 only [stage] is used.
  uint64_t* full = bars;
  uint64_t* empty = bars + kStages * kChunks;  // [2] consumers (8 warps) -> producer
  uint64_t* q_full = empty + kStages;
  uint64_t* q_empty = q_full + 1;
  uint64_t* xchg = q_empty + 1;  // seesaw only: [0] warpgroup 0's max -> 1, [1] warpgroup 1's -> 0
  constexpr bool kChunkBars = (kMode & 8) != 0;
  static_assert(!(kChunkBars && (kMode & 3)), "chunk barriers: only the in-order, unpipelined S path");
  constexpr bool kOverlap = (kMode & 16) != 0;
  static_assert(!(kOverlap && (kMode & 3)), "overlap: only the in-order, unpipelined S path");
  constexpr bool kSeesaw = (kMode & 32) != 0;
  static_assert(!kSeesaw || kMode == 32, "seesaw: no other mode bit");
  constexpr bool kT = (kMode & 64) != 0;
  static_assert(!kT || kMode == 64, "transposed tiles: no other mode bit");

  const int mb = blockIdx.x, part = blockIdx.y;
  const int g_begin = p.md_g[part], g_end = p.md_g[part + 1];
  if (g_begin >= g_end) return;  // uniform across the CTA

  if (threadIdx.x == 0) {
    tma_prefetch_desc(&tma_q);
    tma_prefetch_desc(&tma_kv);
    for (int s = 0; s < kStages * kChunks; ++s) mbar_init(&full[s], 1);
    for (int s = 0; s < kStages; ++s) mbar_init(&empty[s], 8);
    mbar_init(q_full, 1);
    mbar_init(q_empty, 8);
    mbar_init(&xchg[0], 128);
    mbar_init(&xchg[1], 128);
    if constexpr ((kMode & 64) != 0) {
      for (int i = 2; i < 6; ++i) mbar_init(&xchg[i], 128);
    }
    fence_barrier_init();
  }
  __syncthreads();

  const int wg = threadIdx.x / 128;
  const int lane = threadIdx.x & 31;
  // setmaxnreg moves registers inside the CTA's launch allocation (384 x 168): consumers can only
  // grow by what the producer gave back, else setmaxnreg.inc blocks forever (measured: a
  // 48-register producer hung every CTA).
  constexpr int kProducerRegs = 40, kConsumerRegs = 232;
  static_assert(128 * kProducerRegs + 256 * kConsumerRegs <= 384 * 168, "setmaxnreg over the CTA's registers");
  if (wg == 0) {
    setmaxnreg_dec<kProducerRegs>();
    if (threadIdx.x >= 32) return;
    // Producer warp: lanes fetch 32 block-table entries at a time; lane 0 issues the TMA.
    const int tiles_per_page = p.page_size / kBlockN;
    int g = g_begin, req = p.md_begin[part], lo, hi, tile = 0, seg = 0;
    while (next_segment(p, g, g_end, req, lo, hi)) {
      if (lane == 0) {
        mbar_wait(q_empty, (seg & 1) ^ 1);
        // the Q box holds kQRows rows (host: ops/mla.py _tma): 32 for the transposed tiles
        constexpr int kQRows = kT ? 32 : kBlockM;
        mbar_arrive_expect_tx(q_full, kTileBytes / kBlockM * kQRows);
        const int row0 = req * p.rows + mb * kBlockM;
#pragma unroll
        for (int c = 0; c < kChunks; ++c) tma_load_2d(&tma_q, q_full, sQ + c * kChunkBytes, c * 64, row0);
      }
      ++seg;
      for (int base = lo; base < hi; base += 32) {
        int page = 0;
        if (base + lane < hi) {
          int col = (base + lane) / tiles_per_page;
          if (col >= p.max_pages) {  // block_table too short for cache_seqlens: flag it, stay in bounds
            atomicOr(p.err, 1);
            col = p.max_pages - 1;
          }
          page = p.block_table[static_cast<long long>(req) * p.bt_stride + col];
        }
        const int n = min(32, hi - base);
        for (int t = 0; t < n; ++t) {
          const int pg = __shfl_sync(0xffffffffu, page, t);
          if (lane == 0) {
            const int s = tile & 1;
            mbar_wait(&empty[s], ((tile >> 1) & 1) ^ 1);
            // Page ids outside [0, num_pages) land out of the tensor map's bounds: TMA reads zeros.
            const int row = pg * p.page_size + ((base + t) % tiles_per_page) * kBlockN;
            uint8_t* dst = sK + s * kTileBytes;
            if constexpr (kChunkBars) {
#pragma unroll 1
              for (int c = 0; c < kChunks; ++c) {
                uint64_t* fb = &full[s * kChunks + c];
                mbar_arrive_expect_tx(fb, kChunkBytes);
                tma_load_2d(&tma_kv, fb, dst + c * kChunkBytes, c * 64, row);
              }
            } else {
              mbar_arrive_expect_tx(&full[s], kTileBytes);
#pragma unroll
              for (int c = 0; c < kChunks; ++c) tma_load_2d(&tma_kv, &full[s], dst + c * kChunkBytes, c * 64, row);
            }
          }
          ++tile;
        }
      }
    }
    return;
  }

  // ---------------------------------------------------------------- consumers
  setmaxnreg_inc<kConsumerRegs>();
  const int w = wg - 1;                    // 0/1: tokens [32w, 32w+32) of S, dims [256w, 256w+256) of O
  const int tid = threadIdx.x - 128 * wg;  // 0..127 within the warpgroup
  const int r0 = (tid >> 5) * 16 + (lane >> 2);  // this thread's two rows: r0, r0 + 8
  const int r1 = r0 + 8;
  const int cq = (lane & 3) * 2;           // column pair inside an 8-column group
  const float sl2 = p.scale_log2;

  if constexpr (kT) {
    // ---- kMode 64: transposed tiles for query blocks of at most 32 rows (h_q * s_q <= 32) ----
    // S^T [64 tokens x 32 rows] = K Q^T and O^T [512 dims x 32 rows] = V^T P^T, so the wgmma M
    // (64) runs over tokens / value dims and N = 32 over the query rows: a 64-row block would
    // spend half of every wgmma on rows that do not exist. Warpgroup 0 computes S^T (36 k-steps,
    // A = the KV tile, B = Q rows 0..31), the softmax and P (bf16, [32 rows x 64 tokens] K-major,
    // 128-byte swizzle, one of two buffers by tile parity) with the per-row rescale factors; both
    // warpgroups then rescale and extend their O^T over 256 value dims (A = V^T: the tile itself
    // read MN-major). P and alpha have two buffers by tile parity, handed over with mbarriers
    // (arrive = release, wait = acquire): xchg[st] "P ready" (warpgroup 0 -> 1), xchg[2 + st]
    // "P free" (warpgroup 1 -> 0, once its PV on that buffer retired).
    // Rows of the block past h_q * s_q (the next request's Q, or TMA zeros) are computed, never stored.
    float* red_w = red_max;      // [4][32] warpgroup 0's cross-warp row partials (max, then sums)
    float* alpha_s = red_sum;    // [2][32] per-row rescale of the tile, by tile parity
    float* fin_s = red_sum + 64; // [32] final row sums, [32] final row maxima
    const int wr = tid >> 5;                      // warp of the warpgroup
    const int tA = wr * 16 + (lane >> 2);         // this thread's S^T rows (tokens): tA, tA + 8
    int g = g_begin, req = p.md_begin[part], lo, hi, tile = 0, seg = 0;
    while (next_segment(p, g, g_end, req, lo, hi)) {
      const int len = p.seqlens[req];
      // this thread's 8 query rows n = 8j + cq + e, index i = 2j + e: keys [0, lim[i]) visible
      int lim[8];
      float m[8], l[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int n = 8 * (i >> 1) + cq + (i & 1);
        lim[i] = p.causal ? min(len, len - p.s_q + 1 + n / p.h_q) : len;
        m[i] = -kInf;
        l[i] = 0.f;
      }
      float ot[4][16];
#pragma unroll
      for (int c = 0; c < 4; ++c)
#pragma unroll
        for (int k = 0; k < 16; ++k) ot[c][k] = 0.f;
      mbar_wait(q_full, seg & 1);
      for (int blk = lo; blk < hi; ++blk, ++tile) {
        const int st = tile & 1;
        uint8_t* kt = sK + st * kTileBytes;
        uint8_t* pb = sP + st * (kPBytes / 2);
        const uint32_t ph = (tile >> 1) & 1;  // this tile's phase of the stage and of the P buffer
        mbar_wait(&full[st], ph);
        float alpha[8];
        if (w == 0) {
          float sacc[16];
          issue_dot576<32>(kt, sQ, sacc);  // S^T: A = the KV tile, B = Q rows 0..31
          wgmma_wait<0>();
#pragma unroll
          for (int k = 0; k < 16; ++k) fence_operand(sacc[k]);
          // mask by selection (NaN garbage past the end never survives), row maxima of the tile
          const int key = blk * kBlockN + tA;
          float mx[8];
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const int a = 4 * (i >> 1) + (i & 1);
            sacc[a] = key < lim[i] ? sacc[a] : -kInf;
            sacc[a + 2] = key + 8 < lim[i] ? sacc[a + 2] : -kInf;
            mx[i] = fmaxf(sacc[a], sacc[a + 2]);
#pragma unroll
            for (int o = 4; o < 32; o <<= 1) mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], o));
          }
          if (lane < 4) {
#pragma unroll
            for (int i = 0; i < 8; ++i) red_w[wr * 32 + 8 * (i >> 1) + cq + (i & 1)] = mx[i];
          }
          named_barrier_sync(3, 128);
          float bse[8];
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const int n = 8 * (i >> 1) + cq + (i & 1);
            const float t = fmaxf(fmaxf(red_w[n], red_w[32 + n]), fmaxf(red_w[64 + n], red_w[96 + n]));
            const float mn = fmaxf(m[i], t);
            bse[i] = mn == -kInf ? 0.f : mn * sl2;
            alpha[i] = ex2(m[i] * sl2 - bse[i]);
            m[i] = mn;
          }
          // P^T -> P [32 rows x 64 tokens] bf16, row n at n * 128, 16-byte unit u at u ^ (n & 7),
          // once warpgroup 1's PV of two tiles ago has released the buffer
          mbar_wait(&xchg[2 + st], ph ^ 1);
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const int n = 8 * (i >> 1) + cq + (i & 1), a = 4 * (i >> 1) + (i & 1);
            const float pa = ex2(fmaf(sacc[a], sl2, -bse[i])), pc = ex2(fmaf(sacc[a + 2], sl2, -bse[i]));
            l[i] = l[i] * alpha[i] + (pa + pc);
            uint8_t* prow = pb + n * 128;
            *reinterpret_cast<__nv_bfloat16*>(prow + ((((tA * 2) >> 4) ^ (n & 7)) << 4) + ((tA * 2) & 15)) =
                __float2bfloat16_rn(pa);
            *reinterpret_cast<__nv_bfloat16*>(prow + (((((tA + 8) * 2) >> 4) ^ (n & 7)) << 4) + (((tA + 8) * 2) & 15)) =
                __float2bfloat16_rn(pc);
          }
          if (wr == 0 && lane < 4) {
#pragma unroll
            for (int i = 0; i < 8; ++i) alpha_s[st * 32 + 8 * (i >> 1) + cq + (i & 1)] = alpha[i];
          }
          zero_v_tail(kt, len - blk * kBlockN, 0, tid);  // this warpgroup's S is done with the tile
          fence_proxy_async_shared();
          mbar_arrive(&xchg[st]);       // P, alpha of this tile ready (and warpgroup 0's S retired)
          named_barrier_sync(3, 128);   // ... for this warpgroup's own PV too
        } else {
          mbar_wait(&xchg[st], ph);
#pragma unroll
          for (int i = 0; i < 8; ++i) alpha[i] = alpha_s[st * 32 + 8 * (i >> 1) + cq + (i & 1)];
          zero_v_tail(kt, len - blk * kBlockN, 4, tid);
          fence_proxy_async_shared();
          if (len - blk * kBlockN < kBlockN) named_barrier_sync(2, 128);  // zeros in before the PV reads them
        }
        // O^T *= alpha per column (query row), then O^T += V^T P^T over this warpgroup's 4 chunks
#pragma unroll
        for (int c = 0; c < 4; ++c)
#pragma unroll
          for (int k = 0; k < 16; ++k) ot[c][k] *= alpha[2 * (k >> 2) + (k & 1)];
#pragma unroll
        for (int c = 0; c < 4; ++c)
#pragma unroll
          for (int k = 0; k < 16; ++k) fence_operand(ot[c][k]);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < (JITKERN_MLA_DIAG_NO_PV ? 0 : 4); ++kk) {
          const uint64_t db = make_smem_desc_k_sw128(pb) + kk * 2;
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            // V^T: 64 dims x 16 tokens, MN-major: 8-token groups SBO = 1 KiB apart
            const uint64_t da = make_smem_desc(kt + (w * 4 + c) * kChunkBytes + kk * 16 * 128, SmemSwizzle::k128B,
                                               kChunkBytes, 1024);
            WgmmaBf16<32, false, true>::mma(da, db, ot[c], 1u);
          }
        }
        wgmma_commit();
        wgmma_wait<0>();
#pragma unroll
        for (int c = 0; c < 4; ++c)
#pragma unroll
          for (int k = 0; k < 16; ++k) fence_operand(ot[c][k]);
        if (w == 1) mbar_arrive(&xchg[2 + st]);  // done with this P buffer and its alpha
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty[st]);
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(q_empty);
      ++seg;

      // Row sums (warpgroup 0's partials over its two tokens) -> final L, m for both warpgroups
      // through fin_s: xchg[4] "ready" (0 -> 1), xchg[5] "consumed" (1 -> 0), one phase per segment.
      const uint32_t fph = (seg - 1) & 1;
      if (w == 0) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
#pragma unroll
          for (int o = 4; o < 32; o <<= 1) l[i] += __shfl_xor_sync(0xffffffffu, l[i], o);
        }
        if (lane < 4) {
#pragma unroll
          for (int i = 0; i < 8; ++i) red_w[wr * 32 + 8 * (i >> 1) + cq + (i & 1)] = l[i];
        }
        named_barrier_sync(3, 128);
        if (wr == 0 && lane < 4) {
          mbar_wait(&xchg[5], fph ^ 1);  // warpgroup 1 has read the previous segment's values
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const int n = 8 * (i >> 1) + cq + (i & 1);
            fin_s[n] = (red_w[n] + red_w[32 + n]) + (red_w[64 + n] + red_w[96 + n]);
            fin_s[32 + n] = m[i];
          }
        }
        mbar_arrive(&xchg[4]);
        named_barrier_sync(3, 128);
      } else {
        mbar_wait(&xchg[4], fph);
      }
      const bool split = p.md_nsplits[req] > 1;
      const int slot = split ? p.md_soff[req] + part - p.md_first[req] : 0;
      const float ln2 = 0.6931471805599453f;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int n = 8 * (i >> 1) + cq + (i & 1);
        if (n >= p.rows) continue;
        const float L = fin_s[n], M = fin_s[32 + n];
        // No visible key: out = 0, lse = -inf (the documented empty-row result).
        const float inv = L > 0.f ? 1.f / L : 0.f;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int d = w * 256 + c * 64 + tA + 8 * h;
            const float v = ot[c][4 * (i >> 1) + 2 * h + (i & 1)] * inv;
            if (!split)
              p.out[(static_cast<long long>(req) * p.rows + n) * kDimV + d] = __float2bfloat16_rn(v);
            else
              p.out_acc[(static_cast<long long>(slot) * p.rows + n) * kDimV + d] = v;
          }
        }
        if (w == 0 && wr == 0 && lane < 4) {
          const float lse = L > 0.f ? (M * sl2 + __log2f(L)) * ln2 : -kInf;
          if (!split) p.lse[static_cast<long long>(req) * p.rows + (n % p.h_q) * p.s_q + n / p.h_q] = lse;
          else p.lse_acc[static_cast<long long>(slot) * p.rows + n] = lse;
        }
      }
      if (w == 1) mbar_arrive(&xchg[5]);  // fin_s read: warpgroup 0 may overwrite it
    }
    return;
  }

  constexpr bool kPipelined = (kMode & 1) != 0;
  constexpr bool kSplit = (kMode & 2) != 0;
  constexpr bool kLazy = (kMode & 4) != 0;
  constexpr int kSRegs = kSplit || kSeesaw ? 32 : 16;
  float o[128];
  float sacc[kSRegs];
  float sacc2[kPipelined ? kSRegs : 1];
  int g = g_begin, req = p.md_begin[part], lo, hi, tile = 0, seg = 0;
  uint32_t xph = 0;  // seesaw: parity of the pair being exchanged (xchg barriers)
  while (next_segment(p, g, g_end, req, lo, hi)) {
    const int len = p.seqlens[req];
    const int m_row0 = mb * kBlockM + r0, m_row1 = mb * kBlockM + r1;
    // Keys visible to a row: [0, lim). Query token t sits at position len - s_q + t.
    int lim0 = len, lim1 = len;
    if (p.causal) {
      lim0 = min(len, len - p.s_q + 1 + m_row0 / p.h_q);
      lim1 = min(len, len - p.s_q + 1 + m_row1 / p.h_q);
    }
    float m0 = -kInf, m1 = -kInf, l0 = 0.f, l1 = 0.f;
#pragma unroll
    for (int k = 0; k < 128; ++k) o[k] = 0.f;
    mbar_wait(q_full, seg & 1);

    // S[64 x 32] = Q[64 x 576] K[32w..32w+32, 576]^T, issued (and committed), not waited for.
    // chunk_bars: with mode bit 8, this tile's per-chunk full barriers (waited before each chunk's
    // k-steps; wgmma already issued keep running); `ph` their phase.
    auto issue_qk = [&](float (&acc)[kSRegs], const uint8_t* kt, uint64_t* chunk_bars = nullptr, int ph = 0) {
#pragma unroll
      for (int k = 0; k < kSRegs; ++k) fence_operand(acc[k]);
      wgmma_fence();
      if constexpr (kSplit) {
        // Partial S[64 x 64] over k-steps [18w, 18w+18) (w = 1 alone reads the RoPE chunk).
#pragma unroll
        for (int kk = 0; kk < kChunks * 2; ++kk) {
          const int k = w * kChunks * 2 + kk;
          const uint64_t da = make_smem_desc_k_sw128(sQ + (k >> 2) * kChunkBytes) + (k & 3) * 2;
          const uint64_t db = make_smem_desc_k_sw128(kt + (k >> 2) * kChunkBytes) + (k & 3) * 2;
          WgmmaBf16<64>::mma(da, db, acc, kk > 0 ? 1u : 0u);
        }
      } else {
#pragma unroll
        for (int kk = 0; kk < JITKERN_MLA_DIAG_S_STEPS; ++kk) {
          if constexpr (kChunkBars) {
            if ((kk & 3) == 0) mbar_wait(&chunk_bars[kk >> 2], ph);
          }
          const uint64_t da = make_smem_desc_k_sw128(sQ + (kk >> 2) * kChunkBytes) + (kk & 3) * 2;
          const uint64_t db = make_smem_desc_k_sw128(kt + (kk >> 2) * kChunkBytes + w * 32 * 128) + (kk & 3) * 2;
          WgmmaBf16<32>::mma(da, db, acc, kk > 0 ? 1u : 0u);
        }
      }
      wgmma_commit();
    };
    // Split mode: full S of this warpgroup's 32 token columns = own partial + the other's.
    // w = 0 sends through sP (free: P lives in the RoPE chunk), w = 1 through the RoPE chunk of
    // this tile (its S, the chunk's only reader, has retired). sP is rewritten at tile j+1 only
    // after barrier 1 of tile j, which w = 1 passes after reading it. Index by tid: conflict-free
    // float4s, and both warpgroups hold the same (row, column) pairs per tid.
    auto gather_s = [&](const float (&acc)[kSRegs], float (&s16)[16], uint8_t* kt) {
      float4* xo = reinterpret_cast<float4*>(w == 0 ? sP : kt + 8 * kChunkBytes);
      const float4* xi = reinterpret_cast<const float4*>(w == 0 ? kt + 8 * kChunkBytes : sP);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        // Compile-time register indices (a runtime w index would spill acc to local memory).
        const int a = 4 * j, b = 16 + 4 * j;
        xo[j * 128 + tid] = w == 0 ? make_float4(acc[b], acc[b + 1], acc[b + 2], acc[b + 3])
                                   : make_float4(acc[a], acc[a + 1], acc[a + 2], acc[a + 3]);
      }
      named_barrier_sync(3, 256);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int a = 4 * j, b = 16 + 4 * j;
        const float4 v = xi[j * 128 + tid];
        s16[a + 0] = (w == 0 ? acc[a + 0] : acc[b + 0]) + v.x;
        s16[a + 1] = (w == 0 ? acc[a + 1] : acc[b + 1]) + v.y;
        s16[a + 2] = (w == 0 ? acc[a + 2] : acc[b + 2]) + v.z;
        s16[a + 3] = (w == 0 ? acc[a + 3] : acc[b + 3]) + v.w;
      }
    };
    // Token rows past the sequence end may hold anything (NaN): zero this warpgroup's V part of
    // tile kt (tile index blk) so that P = 0 times garbage cannot poison O. (No S may be reading
    // the tile's rows meanwhile; the caller fences before the PV that reads them.)
    auto zero_tail = [&](int blk, uint8_t* kt) { zero_v_tail(kt, len - blk * kBlockN, w * 4, tid); };
    // Exponent base of a row max: a row with nothing visible yet keeps max -inf, use 0 (no inf - inf).
    auto base_of = [&](float m) { return m == -kInf ? 0.f : m * sl2; };
    // Given a finished S tile in `acc`: mask, online softmax, P to smem. Returns the rescale
    // factors of this thread's two rows. Both warpgroups meet twice (row max exchange, P complete).
    auto softmax_p = [&](float (&acc)[16], int blk, uint8_t* kt) -> float2 {
      uint8_t* pb = kSplit ? kt + 8 * kChunkBytes : sP;
      // Mask (sequence end, causal) by selection, so NaN garbage past the end never survives.
      // The pipelined variant must not write S registers while the next S is in flight (ptxas
      // would serialise all wgmma): it masks into a copy.
      float masked[kPipelined && !kSplit ? 16 : 1];
      float* sv = acc;
      if constexpr (kPipelined && !kSplit) sv = masked;
      float mx0, mx1;
      mask_rowmax<4>(acc, sv, blk * kBlockN + w * 32 + cq, lim0, lim1, mx0, mx1);
      if ((lane & 3) == 0) { red_max[w * kBlockM + r0] = mx0; red_max[w * kBlockM + r1] = mx1; }
      named_barrier_sync(1, 256);
      const float mn0 = fmaxf(m0, fmaxf(red_max[r0], red_max[kBlockM + r0]));
      const float mn1 = fmaxf(m1, fmaxf(red_max[r1], red_max[kBlockM + r1]));
      const float b0 = base_of(mn0), b1 = base_of(mn1);
      const float a0 = ex2(m0 * sl2 - b0), a1 = ex2(m1 * sl2 - b1);
      m0 = mn0;
      m1 = mn1;
      float rs0, rs1;
      exp_to_smem<4>(sv, sl2, b0, b1, pb, w * 4, r0, r1, cq, rs0, rs1);
      l0 = l0 * a0 + rs0;
      l1 = l1 * a1 + rs1;
      zero_tail(blk, kt);
      fence_proxy_async_shared();
      named_barrier_sync(2, 256);
      return make_float2(a0, a1);
    };
    // O *= (a0, a1) per row (only while no wgmma is in flight).
    auto scale_o = [&](float a0, float a1) {
      // alpha is exactly 1 when the row max did not move (ex2(0)); then O *= 1 is a no-op.
      if (!kLazy || __any_sync(0xffffffffu, a0 != 1.f || a1 != 1.f)) {
#pragma unroll
        for (int j = 0; j < 32; ++j) {
          o[4 * j + 0] *= a0;
          o[4 * j + 1] *= a0;
          o[4 * j + 2] *= a1;
          o[4 * j + 3] *= a1;
        }
      }
    };
    // Issue (and commit) O += P V: P [64 x 64] bf16 at pb (K-major, 128-byte swizzle), V = this
    // warpgroup's 256 dims of tile kt.
    auto issue_pv = [&](const uint8_t* pb, const uint8_t* kt) {
#pragma unroll
      for (int k = 0; k < 128; ++k) fence_operand(o[k]);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < (JITKERN_MLA_DIAG_NO_PV ? 0 : 4); ++kk) {
        const uint64_t da = make_smem_desc_k_sw128(pb) + kk * 2;
        // V: 16 tokens x 256 dims, MN-major: 64-dim chunks LBO = 8 KiB apart, 8-token groups SBO = 1 KiB.
        const uint64_t db = make_smem_desc(kt + (w * 4) * kChunkBytes + kk * 16 * 128, SmemSwizzle::k128B,
                                           kChunkBytes, 1024);
        WgmmaBf16<256, true>::mma(da, db, o, 1u);
      }
      wgmma_commit();
    };
    // O *= alpha, then issue (and commit) O += P V.
    auto rescale_pv = [&](float2 alpha, const uint8_t* kt) {
      scale_o(alpha.x, alpha.y);
      issue_pv(kSplit ? kt + 8 * kChunkBytes : sP, kt);
    };
    // PV done (all wgmma of this warpgroup retired): hand the KV stage back to the producer.
    auto finish_tile = [&](int s) {
      wgmma_wait<0>();
#pragma unroll
      for (int k = 0; k < 128; ++k) fence_operand(o[k]);
      __syncwarp();
      if (lane == 0) mbar_arrive(&empty[s]);
    };

    if constexpr (kSeesaw) {
      // Seesaw (see kMode 32 above). mbarriers per pair: xchg[0] = warpgroup 0's max after K0 and P0
      // are in smem (0 arrives, 1 waits), xchg[1] = warpgroup 1's max after K1 and P1 (1 arrives,
      // 0 waits); each completes once per pair, so a warpgroup is never a phase ahead of the other
      // one's wait (parity xph). red_max[0..64) / [64..128) carry the two maxima. mbarriers, not
      // bar.arrive/bar.sync: racecheck reported the named-barrier handoff (4 hazards, H200 run 1 of
      // the fourth 2026-12-01 session); the mbarrier's release/acquire states the same ordering.
      // S [64 x 64] = Q K^T over all 576 dims of tile kt into sacc (committed, not waited for).
      auto issue_s64 = [&](const uint8_t* kt) { issue_dot576<64>(sQ, kt, sacc); };
      // Finished S of tile blk in sacc: mask (by selection), the new row maxima mn (from the
      // running ones mp), P = exp(S - mn) as bf16 into pb, P's row sums (this thread's 16 columns).
      auto soft64 = [&](int blk, float mp0, float mp1, float& mn0, float& mn1, float& rs0, float& rs1, uint8_t* pb) {
        float mx0, mx1;
        mask_rowmax<8>(sacc, sacc, blk * kBlockN + cq, lim0, lim1, mx0, mx1);
        mn0 = fmaxf(mp0, mx0);
        mn1 = fmaxf(mp1, mx1);
        exp_to_smem<8>(sacc, sl2, base_of(mn0), base_of(mn1), pb, 0, r0, r1, cq, rs0, rs1);
      };
      // rescale factors from the running maxima (m0, m1) to (n0, n1); then they become the running ones
      auto advance = [&](float n0, float n1, float& a0, float& a1) {
        a0 = ex2(m0 * sl2 - base_of(n0));
        a1 = ex2(m1 * sl2 - base_of(n1));
        m0 = n0;
        m1 = n1;
      };
      auto done_pv = [&](int st) {  // this warpgroup's PV retired: its use of stage st is over
        wgmma_wait<0>();
#pragma unroll
        for (int k = 0; k < 128; ++k) fence_operand(o[k]);
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty[st]);
      };
      // O += P V for tile blk (in kt, P at pb) whose row maxima (n0, n1) the other warpgroup
      // published: this warpgroup's V part past the end zeroed, O and l rescaled to them first.
      auto pv_at_their_max = [&](int blk, uint8_t* kt, const uint8_t* pb, float n0, float n1) {
        float a0, a1;
        zero_tail(blk, kt);
        fence_proxy_async_shared();
        advance(n0, n1, a0, a1);
        l0 *= a0;
        l1 *= a1;
        scale_o(a0, a1);
        issue_pv(pb, kt);
      };
      for (int blk = lo; blk < hi; blk += 2) {
        const bool two = blk + 1 < hi;
        const int t0 = tile, t1 = tile + 1;
        uint8_t* k0 = sK + (t0 & 1) * kTileBytes;
        uint8_t* k1 = sK + (t1 & 1) * kTileBytes;
        uint8_t* p0 = k0 + 8 * kChunkBytes;  // P of a tile lives in its RoPE chunk once S has read it
        uint8_t* p1 = k1 + 8 * kChunkBytes;
        if (w == 0) {
          mbar_wait(&full[t0 & 1], (t0 >> 1) & 1);
          issue_s64(k0);
          wgmma_wait<0>();
#pragma unroll
          for (int k = 0; k < kSRegs; ++k) fence_operand(sacc[k]);
          float mn0, mn1, rs0, rs1;
          soft64(blk, m0, m1, mn0, mn1, rs0, rs1, p0);
          zero_tail(blk, k0);
          if ((lane & 3) == 0) { red_max[r0] = mn0; red_max[r1] = mn1; }
          fence_proxy_async_shared();
          mbar_arrive(&xchg[0]);
          float a0, a1;
          advance(mn0, mn1, a0, a1);
          l0 = l0 * a0 + rs0;
          l1 = l1 * a1 + rs1;
          scale_o(a0, a1);
          issue_pv(p0, k0);
          mbar_wait(&xchg[1], xph);
          if (two) {
            const float n0 = red_max[kBlockM + r0], n1 = red_max[kBlockM + r1];
            done_pv(t0 & 1);
            mbar_wait(&full[t1 & 1], (t1 >> 1) & 1);
            pv_at_their_max(blk + 1, k1, p1, n0, n1);
            done_pv(t1 & 1);
          } else {
            done_pv(t0 & 1);
          }
        } else if (two) {
          // (one branch per case: a wgmma issued under `two` and waited under a second `two` test
          // looks to ptxas like an unwaited path, and it serialises every wgmma, C7514)
          mbar_wait(&full[t1 & 1], (t1 >> 1) & 1);
          issue_s64(k1);  // runs beside warpgroup 0's S0
          mbar_wait(&xchg[0], xph);
          const float n0 = red_max[r0], n1 = red_max[r1];
          mbar_wait(&full[t0 & 1], (t0 >> 1) & 1);
          wgmma_wait<0>();  // S1 done: O may be touched
#pragma unroll
          for (int k = 0; k < kSRegs; ++k) fence_operand(sacc[k]);
          pv_at_their_max(blk, k0, p0, n0, n1);  // the softmax of S1 runs under it
          float mn0, mn1, rs0, rs1;
          soft64(blk + 1, m0, m1, mn0, mn1, rs0, rs1, p1);
          zero_tail(blk + 1, k1);
          if ((lane & 3) == 0) { red_max[kBlockM + r0] = mn0; red_max[kBlockM + r1] = mn1; }
          fence_proxy_async_shared();
          mbar_arrive(&xchg[1]);
          done_pv(t0 & 1);
          float a0, a1;
          advance(mn0, mn1, a0, a1);
          l0 = l0 * a0 + rs0;
          l1 = l1 * a1 + rs1;
          scale_o(a0, a1);
          issue_pv(p1, k1);
          done_pv(t1 & 1);
        } else {
          mbar_wait(&xchg[0], xph);
          const float n0 = red_max[r0], n1 = red_max[r1];
          mbar_wait(&full[t0 & 1], (t0 >> 1) & 1);
          pv_at_their_max(blk, k0, p0, n0, n1);
          mbar_arrive(&xchg[1]);
          done_pv(t0 & 1);
        }
        tile += two ? 2 : 1;
        xph ^= 1;
      }
    } else if constexpr (kOverlap) {
      // S(tile t) into sacc: waits for the tile's data (per chunk with mode bit 8), then issues.
      auto issue_s = [&](int t) {
        const int st = t & 1;
        uint8_t* ktn = sK + st * kTileBytes;
        if constexpr (kChunkBars) {
          issue_qk(sacc, ktn, &full[st * kChunks], (t >> 1) & 1);
        } else {
          mbar_wait(&full[st], (t >> 1) & 1);
          issue_qk(sacc, ktn);
        }
      };
      issue_s(tile);
      for (int blk = lo; blk < hi; ++blk, ++tile) {
        const int s = tile & 1;
        uint8_t* kt = sK + s * kTileBytes;
        wgmma_wait<0>();  // S(blk); PV(blk - 1) retired before
#pragma unroll
        for (int k = 0; k < kSRegs; ++k) fence_operand(sacc[k]);
        const float2 alpha = softmax_p(sacc, blk, kt);
        rescale_pv(alpha, kt);  // PV(blk) in flight; sacc is free again
        if (blk + 1 < hi) {
          issue_s(tile + 1);
          wgmma_wait<1>();  // groups retire in order: PV(blk) is done, S(blk + 1) may run on
        } else {
          wgmma_wait<0>();
        }
#pragma unroll
        for (int k = 0; k < 128; ++k) fence_operand(o[k]);
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty[s]);
      }
    } else if constexpr (kPipelined == 0) {
      for (int blk = lo; blk < hi; ++blk, ++tile) {
        const int s = tile & 1;
        uint8_t* kt = sK + s * kTileBytes;
        if constexpr (kChunkBars) {
          issue_qk(sacc, kt, &full[s * kChunks], (tile >> 1) & 1);
        } else {
          mbar_wait(&full[s], (tile >> 1) & 1);
          issue_qk(sacc, kt);
        }
        wgmma_wait<0>();
#pragma unroll
        for (int k = 0; k < kSRegs; ++k) fence_operand(sacc[k]);
        float2 alpha;
        if constexpr (kSplit) {
          float s16[16];
          gather_s(sacc, s16, kt);
          alpha = softmax_p(s16, blk, kt);
        } else {
          alpha = softmax_p(sacc, blk, kt);
        }
        rescale_pv(alpha, kt);
        finish_tile(s);
      }
    } else {
      // S of tile blk+1 runs on the tensor cores while tile blk's softmax runs on the CUDA cores.
      // NOT yet measured on a GPU (opt-in: impl="wgmma_pipe").
      // Two S accumulators alternate (the loop is unrolled by two so both stay in registers).
      auto step = [&](float (&cur)[kSRegs], float (&nxt)[kSRegs], int blk) {
        const int s = tile & 1;
        wgmma_wait<0>();
#pragma unroll
        for (int k = 0; k < kSRegs; ++k) fence_operand(cur[k]);
        if (blk + 1 < hi) {
          const int s1 = (tile + 1) & 1;
          mbar_wait(&full[s1], ((tile + 1) >> 1) & 1);
          issue_qk(nxt, sK + s1 * kTileBytes);
        }
        float2 alpha;
        if constexpr (kSplit) {
          float s16[16];
          gather_s(cur, s16, sK + s * kTileBytes);
          alpha = softmax_p(s16, blk, sK + s * kTileBytes);
        } else {
          alpha = softmax_p(cur, blk, sK + s * kTileBytes);
        }
        // O is an accumulator too: touch it only once no wgmma is in flight (else ptxas
        // serialises every wgmma of the kernel).
        wgmma_wait<0>();
#pragma unroll
        for (int k = 0; k < kSRegs; ++k) fence_operand(nxt[k]);
        rescale_pv(alpha, sK + s * kTileBytes);
        finish_tile(s);
        ++tile;
      };
      mbar_wait(&full[tile & 1], (tile >> 1) & 1);
      issue_qk(sacc, sK + (tile & 1) * kTileBytes);
      for (int blk = lo; blk < hi; blk += 2) {
        step(sacc, sacc2, blk);
        if (blk + 1 < hi) step(sacc2, sacc, blk + 1);
      }
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(q_empty);
    ++seg;

    // Row sums: this thread's 8 columns -> quad -> both warpgroups.
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    if ((lane & 3) == 0) { red_sum[w * kBlockM + r0] = l0; red_sum[w * kBlockM + r1] = l1; }
    named_barrier_sync(1, 256);
    const float L0 = red_sum[r0] + red_sum[kBlockM + r0];
    const float L1 = red_sum[r1] + red_sum[kBlockM + r1];
    // No visible key: out = 0, lse = -inf (the documented empty-row result).
    const float inv0 = L0 > 0.f ? 1.f / L0 : 0.f, inv1 = L1 > 0.f ? 1.f / L1 : 0.f;
    const float ln2 = 0.6931471805599453f;
    const float lse0 = L0 > 0.f ? (m0 * sl2 + __log2f(L0)) * ln2 : -kInf;
    const float lse1 = L1 > 0.f ? (m1 * sl2 + __log2f(L1)) * ln2 : -kInf;
    const bool ok0 = m_row0 < p.rows, ok1 = m_row1 < p.rows;
    const bool split = p.md_nsplits[req] > 1;
    const int col0 = w * 256 + cq;
    if (!split) {
      __nv_bfloat16* out0 = p.out + (static_cast<long long>(req) * p.rows + m_row0) * kDimV + col0;
      __nv_bfloat16* out1 = p.out + (static_cast<long long>(req) * p.rows + m_row1) * kDimV + col0;
#pragma unroll
      for (int j = 0; j < 32; ++j) {
        if (ok0) *reinterpret_cast<uint32_t*>(out0 + 8 * j) = pack_bf16x2(o[4 * j] * inv0, o[4 * j + 1] * inv0);
        if (ok1) *reinterpret_cast<uint32_t*>(out1 + 8 * j) = pack_bf16x2(o[4 * j + 2] * inv1, o[4 * j + 3] * inv1);
      }
      if (w == 0 && (lane & 3) == 0) {
        if (ok0) p.lse[static_cast<long long>(req) * p.rows + (m_row0 % p.h_q) * p.s_q + m_row0 / p.h_q] = lse0;
        if (ok1) p.lse[static_cast<long long>(req) * p.rows + (m_row1 % p.h_q) * p.s_q + m_row1 / p.h_q] = lse1;
      }
    } else {
      const int slot = p.md_soff[req] + part - p.md_first[req];
      float* acc0 = p.out_acc + (static_cast<long long>(slot) * p.rows + m_row0) * kDimV + col0;
      float* acc1 = p.out_acc + (static_cast<long long>(slot) * p.rows + m_row1) * kDimV + col0;
#pragma unroll
      for (int j = 0; j < 32; ++j) {
        if (ok0) *reinterpret_cast<float2*>(acc0 + 8 * j) = make_float2(o[4 * j] * inv0, o[4 * j + 1] * inv0);
        if (ok1) *reinterpret_cast<float2*>(acc1 + 8 * j) = make_float2(o[4 * j + 2] * inv1, o[4 * j + 3] * inv1);
      }
      if (w == 0 && (lane & 3) == 0) {
        if (ok0) p.lse_acc[static_cast<long long>(slot) * p.rows + m_row0] = lse0;
        if (ok1) p.lse_acc[static_cast<long long>(slot) * p.rows + m_row1] = lse1;
      }
    }
  }
}


// ------------------------------------------------------------------------------------------
// Reference-grade SIMT decode (no tensor cores): same work split, partial format and edge
// cases as mla_decode_kernel. Slow; kept as a cross-check of the fast path and a fallback.
// 256 threads: warp w owns rows [8w, 8w+8) of the 64-row block; lane owns 16 value dims.
// ------------------------------------------------------------------------------------------
constexpr int kSimtStride = kDimQK + 8;  // padded smem row (elements): no 32-way bank conflicts

template <int kDummy>
__global__ void __launch_bounds__(256, 1) mla_decode_simt_kernel(const __nv_bfloat16* __restrict__ q,
                                                                 const __nv_bfloat16* __restrict__ kv,
                                                                 const __grid_constant__ DecodeParams p) {
  extern __shared__ __align__(16) uint8_t smem_simt[];
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_simt);
  __nv_bfloat16* sK = sQ + kBlockM * kSimtStride;
  const int mb = blockIdx.x, part = blockIdx.y;
  const int g_begin = p.md_g[part], g_end = p.md_g[part + 1];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int tiles_per_page = p.page_size / kBlockN;
  const long long total_rows = static_cast<long long>(p.batch) * p.rows;
  int g = g_begin, req = p.md_begin[part], lo, hi;
  while (next_segment(p, g, g_end, req, lo, hi)) {
    const int len = p.seqlens[req];
    __syncthreads();
    for (int idx = threadIdx.x; idx < kBlockM * (kDimQK / 8); idx += 256) {
      const int r = idx / (kDimQK / 8), c = idx % (kDimQK / 8);
      const long long row = static_cast<long long>(req) * p.rows + mb * kBlockM + r;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (row < total_rows) v = *reinterpret_cast<const uint4*>(q + row * kDimQK + c * 8);
      *reinterpret_cast<uint4*>(sQ + r * kSimtStride + c * 8) = v;
    }
    float m[8], l[8], o[8][16];
    int lim[8];
#pragma unroll
    for (int rr = 0; rr < 8; ++rr) {
      m[rr] = -kInf;
      l[rr] = 0.f;
      const int mrow = mb * kBlockM + warp * 8 + rr;
      lim[rr] = p.causal ? min(len, len - p.s_q + 1 + mrow / p.h_q) : len;
#pragma unroll
      for (int d = 0; d < 16; ++d) o[rr][d] = 0.f;
    }
    for (int blk = lo; blk < hi; ++blk) {
      int col = blk / tiles_per_page;
      if (col >= p.max_pages) { if (threadIdx.x == 0) atomicOr(p.err, 1); col = p.max_pages - 1; }
      const long long page = p.block_table[static_cast<long long>(req) * p.bt_stride + col];
      const long long tok0 = page * p.page_size + (blk % tiles_per_page) * kBlockN;
      const int valid = min(len - blk * kBlockN, kBlockN);
      __syncthreads();
      for (int idx = threadIdx.x; idx < kBlockN * (kDimQK / 8); idx += 256) {
        const int r = idx / (kDimQK / 8), c = idx % (kDimQK / 8);
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < valid) v = *reinterpret_cast<const uint4*>(kv + (tok0 + r) * kDimQK + c * 8);
        *reinterpret_cast<uint4*>(sK + r * kSimtStride + c * 8) = v;
      }
      __syncthreads();
#pragma unroll 1
      for (int rr = 0; rr < 8; ++rr) {
        const __nv_bfloat16* qr = sQ + (warp * 8 + rr) * kSimtStride;
        float s[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int t = lane + 32 * h;
          const __nv_bfloat16* kr = sK + t * kSimtStride;
          float acc = 0.f;
          for (int d = 0; d < kDimQK; d += 2) {
            const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(qr + d));
            const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(kr + d));
            acc = fmaf(a.x, b.x, fmaf(a.y, b.y, acc));
          }
          const int key = blk * kBlockN + t;
          s[h] = key < lim[rr] ? acc : -kInf;
        }
        float mx = fmaxf(s[0], s[1]);
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
        const float mn = fmaxf(m[rr], mx);
        const float base = mn == -kInf ? 0.f : mn * p.scale_log2;
        const float alpha = ex2(m[rr] * p.scale_log2 - base);
        m[rr] = mn;
        const float p0 = ex2(fmaf(s[0], p.scale_log2, -base)), p1 = ex2(fmaf(s[1], p.scale_log2, -base));
        float ps = p0 + p1;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
        l[rr] = l[rr] * alpha + ps;
#pragma unroll
        for (int d = 0; d < 16; ++d) o[rr][d] *= alpha;
        for (int t = 0; t < kBlockN; ++t) {
          const float pt = __shfl_sync(0xffffffffu, t < 32 ? p0 : p1, t & 31);
          const __nv_bfloat16* vr = sK + t * kSimtStride + lane * 16;
#pragma unroll
          for (int d = 0; d < 16; d += 2) {
            const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(vr + d));
            o[rr][d] = fmaf(pt, v.x, o[rr][d]);
            o[rr][d + 1] = fmaf(pt, v.y, o[rr][d + 1]);
          }
        }
      }
    }
    const bool split = p.md_nsplits[req] > 1;
#pragma unroll
    for (int rr = 0; rr < 8; ++rr) {
      const int mrow = mb * kBlockM + warp * 8 + rr;
      if (mrow >= p.rows) continue;
      const float inv = l[rr] > 0.f ? 1.f / l[rr] : 0.f;
      const float lse = l[rr] > 0.f ? (m[rr] * p.scale_log2 + __log2f(l[rr])) * 0.6931471805599453f : -kInf;
      if (!split) {
        __nv_bfloat16* dst = p.out + (static_cast<long long>(req) * p.rows + mrow) * kDimV + lane * 16;
#pragma unroll
        for (int d = 0; d < 16; d += 2)
          *reinterpret_cast<uint32_t*>(dst + d) = sm90::pack_bf16x2(o[rr][d] * inv, o[rr][d + 1] * inv);
        if (lane == 0) p.lse[static_cast<long long>(req) * p.rows + (mrow % p.h_q) * p.s_q + mrow / p.h_q] = lse;
      } else {
        const int slot = p.md_soff[req] + part - p.md_first[req];
        float* dst = p.out_acc + (static_cast<long long>(slot) * p.rows + mrow) * kDimV + lane * 16;
#pragma unroll
        for (int d = 0; d < 16; ++d) dst[d] = o[rr][d] * inv;
        if (lane == 0) p.lse_acc[static_cast<long long>(slot) * p.rows + mrow] = lse;
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// Warp combine: one warp per query row of a request, 16 value dims per lane, plain loads. For
// many requests with a few splits each, where its short dependent chain beats the ring kernel
// below (ops/mla.py COMBINE_CONFIGS has the figures). Requests with one split were written by the
// decode kernel; requests with none (no cached tokens) get out = 0, lse = -inf here.
// ------------------------------------------------------------------------------------------
template <int kDummy>
__global__ void __launch_bounds__(256) mla_combine_warp_kernel(const __grid_constant__ CombineParams p) {
  const int req = blockIdx.y;
  const int row = blockIdx.x * 8 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= p.rows) return;
  const int n = p.md_nsplits[req];
  if (n == 1) return;
  __nv_bfloat16* out = p.out + (static_cast<long long>(req) * p.rows + row) * kDimV;
  float* lse = p.lse + static_cast<long long>(req) * p.rows + (row % p.h_q) * p.s_q + row / p.h_q;
  float acc[16];
#pragma unroll
  for (int k = 0; k < 16; ++k) acc[k] = 0.f;
  float total = -kInf;
  if (n > 1) {
    const int slot0 = p.md_soff[req];
    float mx = -kInf;
    for (int s = lane; s < n; s += 32) mx = fmaxf(mx, p.lse_acc[static_cast<long long>(slot0 + s) * p.rows + row]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if (mx != -kInf) {
      float sum = 0.f;
      for (int s = lane; s < n; s += 32) sum += __expf(p.lse_acc[static_cast<long long>(slot0 + s) * p.rows + row] - mx);
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      total = mx + __logf(sum);
      for (int s = 0; s < n; ++s) {
        const long long base = static_cast<long long>(slot0 + s) * p.rows + row;
        const float ls = p.lse_acc[base];
        if (ls == -kInf) continue;  // this split saw no key of this row: its partial is 0
        const float wgt = __expf(ls - total);
        const float4* src = reinterpret_cast<const float4*>(p.out_acc + base * kDimV);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const float4 v = src[k * 32 + lane];
          acc[4 * k + 0] += wgt * v.x;
          acc[4 * k + 1] += wgt * v.y;
          acc[4 * k + 2] += wgt * v.z;
          acc[4 * k + 3] += wgt * v.w;
        }
      }
    }
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    uint2 v;
    v.x = sm90::pack_bf16x2(acc[4 * k + 0], acc[4 * k + 1]);
    v.y = sm90::pack_bf16x2(acc[4 * k + 2], acc[4 * k + 3]);
    *reinterpret_cast<uint2*>(out + (k * 32 + lane) * 4) = v;
  }
  if (lane == 0) *lse = total;
}

// ------------------------------------------------------------------------------------------
// Combine: merges the partials of requests split across parts. One CTA per kRows consecutive
// query rows of a request, a team of kGroups x 128 threads per row (4 value dims per thread).
// The rows' partials (kRows x 2 KiB per split, contiguous in out_acc) stream through a ring of
// kStages shared-memory stages of 16 KiB, filled by 1D bulk copies that warp 0 issues (the
// first kStages together with the lse loads, so the CTA's critical path is two dependent global
// round trips: metadata, then lse + partials); group g of a team sums the stage's splits g,
// g + kGroups, ..., with the split weights staged in shared memory, and the groups' sums meet in
// shared memory at the end. No thread waits on a global load inside the loop (ptxas keeps only
// ~2 register loads of a batch in flight). Config (ops/mla.py COMBINE_CONFIGS): few rows with
// many splits (b = 1: 66) one row per CTA, four groups and 12 stages (every split in flight).
// Requests with one split were written by the decode kernel; requests with none (no cached
// tokens) get out = 0, lse = -inf here; a split with lse -inf contributes nothing.
// Dynamic shared memory: kStages x kCombineStageBytes.
// ------------------------------------------------------------------------------------------
constexpr int kCombineStageBytes = 16384;
constexpr int kCombineWeights = 256;  // split weights staged per pass, per row
constexpr int kRowBytes = kDimV * 4;

// Reduction over the kTeamWarps warps of the calling thread's team (teams: consecutive warps).
template <int kWarps, int kTeamWarps>
__device__ __forceinline__ float team_reduce(float v, float* red, bool is_max) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, u) : v + u;
  }
  __syncthreads();  // red may still be read by the previous reduction
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  const float* r = red + (threadIdx.x >> 5) / kTeamWarps * kTeamWarps;
  v = r[0];
#pragma unroll
  for (int w = 1; w < kTeamWarps; ++w) v = is_max ? fmaxf(v, r[w]) : v + r[w];
  return v;
}

template <int kRows, int kGroups, int kStages>
__global__ void __launch_bounds__(128 * kGroups * kRows) mla_combine_kernel(const __grid_constant__ CombineParams p) {
  constexpr int kTeam = 128 * kGroups, kThreads = kTeam * kRows;
  constexpr int kStageSplits = kCombineStageBytes / (kRows * kRowBytes);
  static_assert(kStageSplits >= 1 && kCombineWeights % kStageSplits == 0, "combine: kRows x 2 KiB per stage split");
  extern __shared__ __align__(128) uint8_t combine_smem[];
  __shared__ uint64_t full[kStages];
  __shared__ float red[kThreads / 32];
  __shared__ float wsh[kRows][kCombineWeights];
  __shared__ float4 part[kGroups > 1 ? kRows * (kGroups - 1) : 1][128];
  const int req = blockIdx.y, r0 = blockIdx.x * kRows, tid = threadIdx.x;
  const int rr = tid / kTeam, grp = (tid / 128) % kGroups, t = tid % 128, team_tid = tid % kTeam;
  const int nrows = min(kRows, p.rows - r0), row = r0 + rr;
  const int n = p.md_nsplits[req];
  if (n == 1) return;  // written by the decode kernel
  const long long slot0 = n > 1 ? p.md_soff[req] : 0;
  const float* lse_acc = p.lse_acc + slot0 * p.rows + row;  // split s at lse_acc[s * rows] (rr < nrows)
  const float* src = p.out_acc + (slot0 * p.rows + r0) * kDimV;  // split s's rows at src[s * rows * kDimV]
  const long long split_stride = static_cast<long long>(p.rows) * kDimV;
  const int chunks = (n + kStageSplits - 1) / kStageSplits;
  auto stage = [&](int c) {
    return reinterpret_cast<float4*>(combine_smem + (c % kStages) * kCombineStageBytes);
  };
  const int lane = tid & 31;
  auto issue = [&](int c) {  // warp 0: chunk c into its stage, one split per lane
    const int cnt = min(kStageSplits, n - c * kStageSplits);
    uint64_t* bar = &full[c % kStages];
    if (lane == 0) sm90::mbar_arrive_expect_tx(bar, cnt * nrows * kRowBytes);
    __syncwarp();  // the bytes are expected before any copy can complete them
    for (int j = lane; j < cnt; j += 32)
      sm90::bulk_load_1d(stage(c) + j * kRows * (kRowBytes / 16), src + (c * kStageSplits + j) * split_stride,
                         nrows * kRowBytes, bar);
  };
  if (tid < 32) {
    if (tid == 0) {
      for (int i = 0; i < kStages; ++i) sm90::mbar_init(&full[i], 1);
      sm90::fence_barrier_init();
    }
    __syncwarp();
    for (int c = 0; c < min(chunks, kStages); ++c) issue(c);
  }
  const bool live = rr < nrows;
  // split team_tid's lse is loaded once and kept: with n <= kTeam no other lse load is needed
  const float my_ls = live && team_tid < n ? lse_acc[static_cast<long long>(team_tid) * p.rows] : -kInf;
  float mx = my_ls;
  if (live)
    for (int s = team_tid + kTeam; s < n; s += kTeam) mx = fmaxf(mx, lse_acc[static_cast<long long>(s) * p.rows]);
  mx = team_reduce<kThreads / 32, kTeam / 32>(mx, red, true);  // its __syncthreads publish the barrier init
  float sum = 0.f;
  if (mx != -kInf) {
    sum = __expf(my_ls - mx);  // 0 for -inf
    for (int s = team_tid + kTeam; s < n; s += kTeam) sum += __expf(lse_acc[static_cast<long long>(s) * p.rows] - mx);
  }
  sum = team_reduce<kThreads / 32, kTeam / 32>(sum, red, false);
  const float total = mx != -kInf ? mx + __logf(sum) : -kInf;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int c = 0; c < chunks; ++c) {
    const int first = c * kStageSplits;
    if (first % kCombineWeights == 0) {  // next pass of split weights
      __syncthreads();  // the previous pass's weights are read
      for (int s = team_tid; s < min(kCombineWeights, n - first); s += kTeam) {
        const float ls = total == -kInf ? -kInf
                         : first + s == team_tid ? my_ls : lse_acc[static_cast<long long>(first + s) * p.rows];
        wsh[rr][s] = ls == -kInf ? 0.f : __expf(ls - total);
      }
      __syncthreads();
    }
    const int cnt = min(kStageSplits, n - first);
    // every issued stage is waited for, also when total is -inf (its weights are then all 0), so
    // no bulk copy is still writing shared memory when the CTA exits
    sm90::mbar_wait(&full[c % kStages], (c / kStages) & 1);
    const float4* buf = stage(c);
    if (live) {
      for (int j = grp; j < cnt; j += kGroups) {
        // a split that saw no key of this row holds 0 (weight 0): select, not multiply, so
        // nothing but finite partials is summed
        const float wgt = wsh[rr][(first + j) % kCombineWeights];
        const float4 v = buf[(j * kRows + rr) * 128 + t];
        acc.x += wgt != 0.f ? wgt * v.x : 0.f;
        acc.y += wgt != 0.f ? wgt * v.y : 0.f;
        acc.z += wgt != 0.f ? wgt * v.z : 0.f;
        acc.w += wgt != 0.f ? wgt * v.w : 0.f;
      }
    }
    if (c + kStages < chunks) {
      __syncthreads();  // every team is done with this stage before it is refilled
      if (tid < 32) issue(c + kStages);
    }
  }
  if (kGroups > 1) {
    if (grp > 0) part[rr * (kGroups - 1) + grp - 1][t] = acc;
    __syncthreads();
    if (grp > 0) return;
#pragma unroll
    for (int g = 0; g < kGroups - 1; ++g) {
      const float4 o = part[rr * (kGroups - 1) + g][t];
      acc.x += o.x;
      acc.y += o.y;
      acc.z += o.z;
      acc.w += o.w;
    }
  }
  if (!live) return;
  __nv_bfloat16* out = p.out + (static_cast<long long>(req) * p.rows + row) * kDimV + t * 4;
  uint2 v;
  v.x = sm90::pack_bf16x2(acc.x, acc.y);
  v.y = sm90::pack_bf16x2(acc.z, acc.w);
  *reinterpret_cast<uint2*>(out) = v;
  if (t == 0) p.lse[static_cast<long long>(req) * p.rows + (row % p.h_q) * p.s_q + row / p.h_q] = total;
}

}  // namespace mla
}  // namespace jitkern
