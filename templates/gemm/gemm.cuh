// Dense "NT" GEMM for Hopper: D[M, N] = A[M, K] @ B[N, K]^T.
//   kFp8 = true : A, B e4m3; A scaled per 1x128 group (fp32, MN-major [ceil(K/128), align(M,4)]),
//                 B per 128x128 block (fp32 [ceil(N/128), ceil(K/128)] row-major); DeepSeek-V3 recipe.
//   kFp8 = false: A, B bf16, no scales.
// Output: bf16 D, or (kAccum) fp32 D = A @ B^T + C.
//
// Structure (DeepGEMM-like): persistent CTAs walk output tiles in an N-grouped raster; warpgroup 0
// is the TMA producer (one thread, registers lowered with setmaxnreg), warpgroups 1..2 are math
// warpgroups. BLOCK_M 64: one math warpgroup; 128: two, 64 rows each; 256 (fp8 only): two, each
// computing two 64-row "waves" (rows wave*128 + wg*64 ..) from one B tile, so a 256-row tile reads
// B once for twice the rows (fewer L2 bytes per FLOP, DeepGEMM's BLOCK_M = 256). A kStages-deep shared-memory ring of
// (A tile, B tile, A scales) is guarded by full/empty mbarriers. FP8: each 128-wide K block is
// computed into a fresh wgmma accumulator and then promoted into fp32 registers multiplied by
// scale_a(row) * scale_b(block) (the tensor cores' fp8 accumulation keeps only ~14 mantissa bits,
// so accumulating a whole K there would lose accuracy). BF16: one accumulator over all of K.
#pragma once
#include <cuda_bf16.h>
#include "common/hopper.cuh"
#include "common/wgmma.cuh"

namespace jitkern {
namespace gemm {

using sm90::TmaDescriptor;

template <int N>
struct InFlight {  // wgmma groups left in flight by a wait, as a type (wgmma_wait<N> takes a constant)
  static constexpr int value = N;
};

// Output-tile raster: groups of kGroupN consecutive N blocks, M fastest inside a group, so the
// CTAs resident at one time share a few B (weight) panels and a band of A rows in L2.
// With a cluster, the raster walks cluster tiles (kClusterM x kClusterN blocks); CTA `rank` of
// the cluster takes block (cm * kClusterM + rank, cn) or (cm, cn * kClusterN + rank). A block past
// the matrix edge still joins its cluster's loads (TMA zero-fills) and stores nothing.
template <uint32_t kNumNBlocks, uint32_t kGroupN, uint32_t kClusterM, uint32_t kClusterN>
struct TileScheduler {
  static constexpr uint32_t kNumCN = (kNumNBlocks + kClusterN - 1) / kClusterN;
  uint32_t num_cm;
  uint32_t num_tiles;  // cluster tiles
  __device__ __forceinline__ explicit TileScheduler(uint32_t m_blocks)
      : num_cm((m_blocks + kClusterM - 1) / kClusterM), num_tiles(num_cm * kNumCN) {}
  __device__ __forceinline__ void tile(uint32_t t, uint32_t rank, uint32_t& m_blk, uint32_t& n_blk) const {
    const uint32_t per_group = num_cm * kGroupN;
    const uint32_t g = t / per_group;
    const uint32_t first_n = g * kGroupN;
    const uint32_t n_in = (kNumCN - first_n) < kGroupN ? (kNumCN - first_n) : kGroupN;
    const uint32_t r = t - g * per_group;
    const uint32_t cm = r / n_in;
    const uint32_t cn = first_n + (r - cm * n_in);
    m_blk = cm * kClusterM + (kClusterM == 2 ? rank : 0);
    n_blk = cn * kClusterN + (kClusterN == 2 ? rank : 0);
  }
};

// Grouped layouts (mixture-of-experts), kGroupMode:
//   0 dense.
//   1 contiguous: A/D rows of all groups stacked ([M_total, K] / [M_total, N]), each group padded to
//     a multiple of 128 rows (BLOCK_M 64: of 64); layout[row] = group of the row (-1: padding). B is
//     [G * N, K] (B scales [G * ceil(N/128), ceil(K/128)]). The group of a tile is that of its first
//     row; a tile whose first row is padding is skipped (its D rows untouched); padding rows inside
//     a computed tile are written as zero. BLOCK_M 256 (fp8): see ContigSlot below.
//   2 masked: A [G * max_m, K], D [G * max_m, N]; layout[g] = valid rows of group g (clamped to
//     [0, max_m]); tiles cover only valid rows, and D rows past layout[g] are never written.
// Masked tiles are walked (group, m block, n block) in order; each CTA's tile index only grows,
// so a cursor over the groups advances monotonically (no prefix sums, no host sync).
template <uint32_t BLOCK_M, uint32_t kNumNBlocks>
struct MaskedCursor {
  uint32_t g = 0, base = 0;
  __device__ __forceinline__ bool find(uint32_t t, const int32_t* masked_m, uint32_t num_groups, uint32_t max_m,
                                       uint32_t& group, uint32_t& m_blk, uint32_t& n_blk, uint32_t& rows) {
    while (g < num_groups) {
      const int32_t mm = __ldg(masked_m + g);
      const uint32_t r = mm < 0 ? 0u : (static_cast<uint32_t>(mm) < max_m ? static_cast<uint32_t>(mm) : max_m);
      const uint32_t nt = (r + BLOCK_M - 1) / BLOCK_M * kNumNBlocks;
      if (t < base + nt) {
        const uint32_t local = t - base;
        m_blk = local / kNumNBlocks;
        n_blk = local - m_blk * kNumNBlocks;
        group = g;
        rows = r;
        return true;
      }
      base += nt;
      ++g;
    }
    return false;
  }
};

// Contiguous layout with 256-row tiles. Groups are only 128-aligned, so a 256-row "slot" (rows
// [256p, 256p + 256), the raster's m block p) holds 128-row blocks 2p and 2p + 1 that may belong to
// different groups (or be padding, layout -1). Per slot, by the groups g0, g1 of its blocks' first
// rows (g1 = -1 past M):
//   g0 >= 0:                  tile at row 256p; its second 128 rows (wave 1) only if g1 == g0;
//   g1 >= 0 and g1 != g0:     (then) a 128-row tile at row 256p + 128 for group g1 (wave 1 idle).
// A padding block gets no tile (untouched, as with 128-row tiles). The decision needs only the two
// layout entries of the slot: no host sync, no pre-pass, and the producer and the math warpgroups
// reach it independently from the same reads. Both tiles of a slot go to the same CTA, one after
// the other, so the persistent round-robin walks exactly the raster of 256-row m blocks (L2 order
// as dense) with no placeholder tiles to skip. (A raster of 128-row blocks whose odd blocks mostly
// skip would unbalance the CTAs: a CTA takes tiles t, t + 132, ..., the raster puts n_in tiles of
// one m block in a row, and where 132 is a multiple of 2 * n_in, e.g. a 2-wide last N group, all
// of a CTA's tiles there have m blocks of one parity: half the CTAs would only skip.) A split slot
// (two half tiles) costs its CTA about one full tile; the second reuses the slot's L2-hot A rows
// and the next group's B panel, which the next slot's tiles read at about the same time.
// Cost: a group of an even number of blocks starting at an odd block takes two half tiles more
// than pairing from its own start would; that pairing needs the group's first block (a search or
// a pre-pass), and odd-length groups lose nothing either way.
struct ContigSlot {
  bool second = false;  // the slot of the current raster index still owes its g1 tile
};

template <bool kFp8, uint32_t kN, uint32_t kK, uint32_t BLOCK_M, uint32_t BLOCK_N, uint32_t kStages,
          uint32_t kGroupN, bool kAccum, uint32_t kClusterM, uint32_t kClusterN, uint32_t kGroupMode = 0,
          uint32_t kSplitK = 1>
struct GemmConfig {
  static constexpr uint32_t BLOCK_K = kFp8 ? 128 : 64;  // one 128-byte swizzle row of K
  static constexpr uint32_t kInstrK = kFp8 ? 32 : 16;
  static constexpr uint32_t kNumMathWG = BLOCK_M == 64 ? 1 : 2;
  static constexpr uint32_t kWaves = BLOCK_M / (64 * kNumMathWG);  // 64-row waves per math warpgroup
  static constexpr uint32_t kThreads = 128 * (1 + kNumMathWG);
  static constexpr uint32_t kNumKBlocks = (kK + BLOCK_K - 1) / BLOCK_K;
  static constexpr uint32_t kNumNBlocks = (kN + BLOCK_N - 1) / BLOCK_N;
  static constexpr uint32_t kScaleBRows = (kN + 127) / 128;
  static constexpr uint32_t kScaleKBlocks = (kK + 127) / 128;
  static constexpr uint32_t kABytes = BLOCK_M * 128;
  static constexpr uint32_t kBBytes = BLOCK_N * 128;
  static constexpr uint32_t kSFABytes = kFp8 ? BLOCK_M * 4 : 0;
  static constexpr uint32_t kStageBytes = kABytes + kBBytes + kSFABytes;
  // 1 KiB slack to align the dynamic smem base to the 128B-swizzle atom (1024 bytes).
  // bf16 output goes registers -> smem (stmatrix) -> global (TMA store), in chunks of 64 rows x
  // kStoreCols columns (128/64/32-byte rows, swizzled to match: conflict-free stmatrix and the
  // widest TMA boxes BLOCK_N allows), one set per math warpgroup. Placed first in smem.
  // masked: bounded direct stores; split-K: fp32 partials, reduced by the last CTA of a tile
  static constexpr bool kTmaStore = !kAccum && kGroupMode != 2 && kSplitK == 1;
  static constexpr uint32_t kStoreCols = BLOCK_N % 64 == 0 ? 64 : (BLOCK_N % 32 == 0 ? 32 : 16);
  static constexpr uint32_t kDBytes = kTmaStore ? BLOCK_M * BLOCK_N * 2 : 0;
  static constexpr uint32_t kSmemBytes = 1024 + kStages * kStageBytes + kDBytes + 2 * kStages * 8;
  static_assert(BLOCK_M == 64 || BLOCK_M == 128 || BLOCK_M == 256, "BLOCK_M: 64, 128 or 256");
  // 256 rows: one wgmma accumulator reused by both waves plus two promoted fp32 copies; bf16 would
  // need an accumulator per wave. Masked groups start at multiples of max_m: any BLOCK_M works;
  // contiguous groups are 128-aligned: a slot's two 128-row blocks are scheduled apart (ContigSlot).
  static_assert(BLOCK_M != 256 || (kFp8 && BLOCK_N <= 128), "BLOCK_M 256: fp8 with BLOCK_N <= 128 only");
  // contiguous, 256-row tiles: wave 1 (the tile's second 128 rows) may be idle
  static constexpr bool kContig256 = kGroupMode == 1 && BLOCK_M == 256;
  static_assert(BLOCK_N % 16 == 0 && BLOCK_N >= 16 && BLOCK_N <= 256, "BLOCK_N: multiple of 16 in [16, 256]");
  static_assert(kN % 8 == 0, "N must be a multiple of 8");
  static_assert(kK % (kFp8 ? 16 : 8) == 0, "K rows must be 16-byte multiples");
  // Cluster of 2 CTAs: along M (kClusterM = 2, same N block: B is multicast, each CTA loads half of
  // it) or along N (kClusterN = 2, same M block: A is multicast). Halves that operand's L2 reads.
  static constexpr uint32_t kCluster = kClusterM * kClusterN;
  static_assert(kCluster == 1 || (kCluster == 2 && (kClusterM == 1 || kClusterN == 1)), "cluster: 1x1, 2x1 or 1x2");
  static_assert(kGroupMode <= 2 && (kGroupMode == 0 || kCluster == 1), "grouped layouts run without clusters");
  // Split-K (small M, few output tiles): kSplitK CTAs share a tile, each over a contiguous range of
  // k-blocks; every CTA writes its fp32 partial to a workspace, and the last to arrive (a per-tile
  // counter) sums the partials in split order (deterministic) and writes D.
  static_assert(kSplitK >= 1 && kSplitK <= kNumKBlocks, "split-K: 1 .. number of K blocks");
  static_assert(kSplitK == 1 || (kGroupMode == 0 && kCluster == 1), "split-K: dense, no cluster");
  static constexpr uint32_t kMcastRowsA = kClusterN == 2 ? BLOCK_M / 2 : BLOCK_M;
  static constexpr uint32_t kMcastRowsB = kClusterM == 2 ? BLOCK_N / 2 : BLOCK_N;
};

template <bool kFp8, uint32_t kN, uint32_t kK, uint32_t BLOCK_M, uint32_t BLOCK_N, uint32_t kStages,
          uint32_t kGroupN, bool kAccum, uint32_t kClusterM = 1, uint32_t kClusterN = 1, uint32_t kGroupMode = 0,
          uint32_t kSplitK = 1>
__global__ void __launch_bounds__(
    GemmConfig<kFp8, kN, kK, BLOCK_M, BLOCK_N, kStages, kGroupN, kAccum, kClusterM, kClusterN, kGroupMode,
               kSplitK>::kThreads, 1)
gemm_nt_kernel(const __grid_constant__ TmaDescriptor tma_a, const __grid_constant__ TmaDescriptor tma_b,
               const __grid_constant__ TmaDescriptor tma_sfa, const __grid_constant__ TmaDescriptor tma_d,
               const float* __restrict__ sfb, void* __restrict__ d,
               const float* c, uint32_t M, uint32_t ldd, uint32_t ldc,
               const int32_t* __restrict__ layout = nullptr, uint32_t num_groups = 1, uint32_t max_m = 0,
               float* __restrict__ ws = nullptr, int32_t* __restrict__ ws_count = nullptr) {
  // ws: split-K partials [kSplitK, M, kN] fp32; ws_count: one zeroed int per output tile, left zeroed.
  using Cfg = GemmConfig<kFp8, kN, kK, BLOCK_M, BLOCK_N, kStages, kGroupN, kAccum, kClusterM, kClusterN, kGroupMode,
                         kSplitK>;
  constexpr uint32_t kCluster = Cfg::kCluster;
  using namespace sm90;
  constexpr uint32_t BLOCK_K = Cfg::BLOCK_K;
  constexpr uint32_t kNumKBlocks = Cfg::kNumKBlocks;
  constexpr uint32_t kAcc = BLOCK_N / 2;  // accumulator floats per thread (m64nN wgmma)
  constexpr uint32_t kWaves = Cfg::kWaves;
  // FP8 promotion pipelined behind the tensor cores (two wgmma accumulators) where the registers
  // allow (two accumulators + kWaves promoted copies of kAcc floats within 192 per thread) and the
  // tile needs one B scale per k-block. Measured on H200 against JITKERN_GEMM_PIPELINE=0 (the A/B
  // switch), same run: 128x128 4096x4096x7168 196.5 vs 206.3 us, 128x7168x16384 58.4 vs 64.3 us;
  // 64x128 4096x24576x1536 350 vs 435 us; but 128x112 and 256x96 (per-8-column scale select on top
  // of twice the scale registers) 4-6% slower, so those stay unpipelined.
// JITKERN_GEMM_RUNTIME_J=1: the pipelined loop's trip count hidden from the compiler and the
// peeled loop below. jitkern/ops/gemm.py recompiles with it when ptxas serialises the constant-J
// loop's wgmma (C7514: K = 384, 512, 640, 896 with NVRTC 13.0), through KernelSpec.serialized_fallback.
#ifndef JITKERN_GEMM_RUNTIME_J
#define JITKERN_GEMM_RUNTIME_J 0
#endif
#ifndef JITKERN_GEMM_PIPELINE
#define JITKERN_GEMM_PIPELINE 1
#endif
// Diagnostic of the 2-CTA configs (scripts/gemm_tile_ab.py `:JITKERN_GEMM_MCAST=0|2` labels;
// templates/gemm/NOTES.md): 1 (default) multicast; 0 each CTA loads its whole tiles itself (two
// half-tile boxes, the descriptors are the multicast ones) and releases its stages locally: the
// cluster launch alone; 2 the same loads with the stage release still waiting for both CTAs'
// consumers: the pair's lockstep without the multicast.
#ifndef JITKERN_GEMM_MCAST
#define JITKERN_GEMM_MCAST 1
#endif
  constexpr bool kMcast = kCluster > 1 && JITKERN_GEMM_MCAST == 1;    // the shared operand multicast
  constexpr bool kPairRelease = kCluster > 1 && JITKERN_GEMM_MCAST != 0;  // stages released to both CTAs
  constexpr uint32_t kReleasers = kPairRelease ? kCluster : 1;
  constexpr bool kPipelined = kFp8 && JITKERN_GEMM_PIPELINE && (2 + kWaves) * kAcc <= 192 && 128 % BLOCK_N == 0;
  // Register split: 128 * producer + 128 * kNumMathWG * math <= 64K. The producer's cluster
  // index math needs more than the customary 40 registers to stay spill-free.
  // The masked scheduler's group cursor costs the producer more registers.
  constexpr uint32_t kProducerRegs = Cfg::kNumMathWG == 1 ? (kGroupMode == 2 ? 96 : 56) : (kGroupMode == 2 ? 64 : 56);
  constexpr uint32_t kMathRegs = Cfg::kNumMathWG == 1 ? 240 : (kGroupMode == 2 ? 216 : 224);

  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  uint8_t* smem_d = smem;                      // kDBytes: a multiple of 2048, so A stays 1024-aligned
  uint8_t* smem_a = smem_d + Cfg::kDBytes;
  uint8_t* smem_b = smem_a + kStages * Cfg::kABytes;
  float* smem_sfa = reinterpret_cast<float*>(smem_b + kStages * Cfg::kBBytes);
  uint64_t* full_bar = reinterpret_cast<uint64_t*>(reinterpret_cast<uint8_t*>(smem_sfa) + kStages * Cfg::kSFABytes);
  uint64_t* empty_bar = full_bar + kStages;

  const uint32_t warp = warp_idx_sync();
  const uint32_t lane = threadIdx.x % 32;

  if (threadIdx.x == 0) {
    tma_prefetch_desc(&tma_a);
    tma_prefetch_desc(&tma_b);
    if constexpr (kFp8) tma_prefetch_desc(&tma_sfa);
#pragma unroll
    for (uint32_t s = 0; s < kStages; ++s) {
      mbar_init(&full_bar[s], 1);
      // one arrival per math warp of every CTA whose multicast writes into this stage
      mbar_init(&empty_bar[s], Cfg::kNumMathWG * 4 * kReleasers);
    }
    fence_barrier_init();
  }
  // The peer CTA multicasts into our smem and arrives on our barriers: it must see them initialised.
  if constexpr (kCluster > 1) cluster_sync(); else __syncthreads();

  // Scheduler values are re-derived from special registers and kernel parameters where they are
  // used: a value computed before setmaxnreg and live across it is kept in local memory by ptxas
  // (seen: one spilled register, reloaded every tile, on 2-CTA cluster configs).
  auto rank = [] { return kCluster > 1 ? cluster_ctarank() : 0u; };
  auto cta_step = [] { return gridDim.x / kCluster; };
  auto cta_first = [] { return blockIdx.x / kCluster; };
  // Next tile of this CTA: false when done. row0: first A/D row of the tile; group: its group;
  // rows_end: rows of D that may be written are < rows_end (relative to the group's first row;
  // contiguous 256-row tiles: relative to row0, 128 or 256).
  MaskedCursor<BLOCK_M, Cfg::kNumNBlocks> cursor;
  ContigSlot slot;
  // split: which k-block range of the tile (split-K), kb_begin/kb_end: that range.
  uint32_t split = 0, kb_begin = 0, kb_end = kNumKBlocks;
  auto next_tile = [&](uint32_t& t, uint32_t& m_blk, uint32_t& n_blk, uint32_t& group, uint32_t& row0,
                       uint32_t& rows_end) -> bool {
    if constexpr (kGroupMode == 2) {
      if (!cursor.find(t, layout, num_groups, max_m, group, m_blk, n_blk, rows_end)) return false;
      row0 = group * max_m + m_blk * BLOCK_M;
      return true;
    } else {
      const TileScheduler<Cfg::kNumNBlocks, kGroupN, kClusterM, kClusterN> sched((M + BLOCK_M - 1) / BLOCK_M);
      // split-K: the kSplitK units of a tile are adjacent, so they run in one wave
      for (; t < sched.num_tiles * kSplitK; t += cta_step()) {
        sched.tile(t / kSplitK, rank(), m_blk, n_blk);
        if constexpr (kSplitK > 1) {
          split = t % kSplitK;
          kb_begin = split * kNumKBlocks / kSplitK;
          kb_end = (split + 1) * kNumKBlocks / kSplitK;
        }
        row0 = m_blk * BLOCK_M;
        rows_end = M;
        group = 0;
        if constexpr (Cfg::kContig256) {
          // M_total is a multiple of 128: row0 is in range, row0 + 128 is when < M (ContigSlot)
          const int32_t g0 = __ldg(layout + row0);
          const int32_t g1 = row0 + 128 < M ? __ldg(layout + row0 + 128) : -1;
          if (!slot.second && g0 >= 0) {
            group = static_cast<uint32_t>(g0);
            rows_end = g1 == g0 ? 256 : 128;
            if (g1 >= 0 && g1 != g0) {
              slot.second = true;
              t -= cta_step();  // the caller's t += cta_step() comes back to this slot (unsigned wrap)
            }
            return true;
          }
          slot.second = false;
          if (g1 < 0 || g1 == g0) continue;
          group = static_cast<uint32_t>(g1);
          row0 += 128;
          rows_end = 128;
        } else if constexpr (kGroupMode == 1) {
          const int32_t gi = __ldg(layout + row0);  // M_total is a multiple of BLOCK_M: in range
          if (gi < 0) continue;
          group = static_cast<uint32_t>(gi);
        }
        return true;
      }
      return false;
    }
  };

  if (warp < 4) {
    // ---------------- TMA producer warpgroup ----------------
    setmaxnreg_dec<kProducerRegs>();
    if (warp == 0 && elect_one_sync()) {
      uint32_t it = 0;
      uint32_t m_blk, n_blk, group, row0, rows_end;
      for (uint32_t t = cta_first(); next_tile(t, m_blk, n_blk, group, row0, rows_end); t += cta_step()) {
        const uint32_t b_row0 = group * kN + n_blk * BLOCK_N;
        for (uint32_t kb = kb_begin; kb < kb_end; ++kb, ++it) {
          const uint32_t s = it % kStages;
          mbar_wait(&empty_bar[s], ((it / kStages) & 1) ^ 1);
          // Full tile bytes: with multicast, the peer's half lands here and completes our barrier too.
          mbar_arrive_expect_tx(&full_bar[s], Cfg::kStageBytes);
          if constexpr (kClusterN == 2 && kMcast) {
            tma_load_2d_multicast(&tma_a, &full_bar[s], smem_a + s * Cfg::kABytes + rank() * Cfg::kMcastRowsA * 128,
                                  kb * BLOCK_K, row0 + rank() * Cfg::kMcastRowsA, 0x3);
          } else if constexpr (kClusterN == 2) {  // diagnostic: both halves, locally
            for (uint32_t h = 0; h < 2; ++h)
              tma_load_2d(&tma_a, &full_bar[s], smem_a + s * Cfg::kABytes + h * Cfg::kMcastRowsA * 128, kb * BLOCK_K,
                          row0 + h * Cfg::kMcastRowsA);
          } else {
            tma_load_2d(&tma_a, &full_bar[s], smem_a + s * Cfg::kABytes, kb * BLOCK_K, row0);
          }
          if constexpr (kClusterM == 2 && kMcast) {
            tma_load_2d_multicast(&tma_b, &full_bar[s], smem_b + s * Cfg::kBBytes + rank() * Cfg::kMcastRowsB * 128,
                                  kb * BLOCK_K, b_row0 + rank() * Cfg::kMcastRowsB, 0x3);
          } else if constexpr (kClusterM == 2) {
            for (uint32_t h = 0; h < 2; ++h)
              tma_load_2d(&tma_b, &full_bar[s], smem_b + s * Cfg::kBBytes + h * Cfg::kMcastRowsB * 128, kb * BLOCK_K,
                          b_row0 + h * Cfg::kMcastRowsB);
          } else {
            tma_load_2d(&tma_b, &full_bar[s], smem_b + s * Cfg::kBBytes, kb * BLOCK_K, b_row0);
          }
          if constexpr (kFp8)
            tma_load_2d(&tma_sfa, &full_bar[s], smem_sfa + s * BLOCK_M, row0, kb);
        }
      }
    }
  } else {
    // ---------------- math warpgroups ----------------
    setmaxnreg_inc<kMathRegs>();
    const uint32_t wg = warp / 4 - 1;          // math warpgroup: rows [wg*64, wg*64+64) of the tile
    const uint32_t wwarp = warp % 4;           // warp inside the warpgroup: 16 rows each
    // this thread's first accumulator row in wave 0; wave w adds w * 128
    const uint32_t row_in_tile = wg * 64 + wwarp * 16 + lane / 4;
    uint32_t it = 0;
    // Stage s is no longer read by this warp: tell every producer that writes into it.
    auto release = [&](uint32_t s) {
      __syncwarp();
      if constexpr (kPairRelease) {
        if (lane < kCluster) mbar_arrive_cluster(&empty_bar[s], lane);
      } else {
        if (lane == 0) mbar_arrive(&empty_bar[s]);
      }
    };

    uint32_t m_blk, n_blk, group, row0, rows_end;
    for (uint32_t t = cta_first(); next_tile(t, m_blk, n_blk, group, row0, rows_end); t += cta_step()) {
      const uint32_t n0 = n_blk * BLOCK_N;
      const float* sfb_g = sfb + group * (Cfg::kScaleBRows * Cfg::kScaleKBlocks);

      float acc[kAcc];
      float fin[kFp8 ? kAcc * kWaves : 1];
      if constexpr (kFp8) {
#pragma unroll
        for (uint32_t i = 0; i < kAcc * kWaves; ++i) fin[i] = 0.f;
      }
      // B-scale blocks this tile touches: 128-col block of column n0 + c is nb0 + (r0 + c) / 128.
      const uint32_t nb0 = n0 / 128;
      const uint32_t r0 = n0 % 128;
      constexpr uint32_t kSpan = (127 + BLOCK_N) / 128 + 1;  // upper bound on blocks touched

      // B scales of k-block kb for the blocks this tile touches
      auto load_sb = [&](uint32_t kb, float (&sb)[kSpan]) {
#pragma unroll
        for (uint32_t j = 0; j < kSpan; ++j) {
          const uint32_t row = nb0 + j < Cfg::kScaleBRows ? nb0 + j : Cfg::kScaleBRows - 1;
          sb[j] = __ldg(sfb_g + row * Cfg::kScaleKBlocks + kb);
        }
      };
      // One 64-row block of one k-block: the 4 wgmma over BLOCK_K from stage s (A rows from tile row
      // `rb`, B descriptor db) into `ac`, committed as one group.
      auto mma_batch = [&](uint32_t s, uint32_t rb, uint64_t db, bool accumulate, float (&ac)[kAcc]) {
        const uint64_t da = make_smem_desc_k_sw128(smem_a + s * Cfg::kABytes + rb * 128);
#pragma unroll
        for (uint32_t i = 0; i < kAcc; ++i) fence_operand(ac[i]);
        wgmma_fence();
#pragma unroll
        for (uint32_t k = 0; k < BLOCK_K / Cfg::kInstrK; ++k) {
          // 32 bytes of K per instruction: advance the descriptor's start address (16-byte units).
          const uint32_t scale_d = (accumulate || k > 0) ? 1u : 0u;
          if constexpr (kFp8)
            WgmmaFp8<BLOCK_N>::mma(da + 2 * k, db + 2 * k, ac, scale_d);
          else
            WgmmaBf16<BLOCK_N>::mma(da + 2 * k, db + 2 * k, ac, scale_d);
        }
        wgmma_commit();
      };
      // fw += ac * scale_a(row) * scale_b(block of the column), one 128-K block's promotion
      auto promote = [&](float* fw, const float (&ac)[kAcc], float sa0, float sa1, const float (&sb)[kSpan]) {
#pragma unroll
        for (uint32_t g = 0; g < BLOCK_N / 8; ++g) {
          float b;
          if constexpr (128 % BLOCK_N == 0) {
            b = sb[0];
          } else if constexpr (BLOCK_N % 128 == 0) {
            b = sb[g * 8 / 128];
          } else {
            const uint32_t idx = (r0 + g * 8) / 128;
            b = sb[0];
#pragma unroll
            for (uint32_t j = 1; j < kSpan; ++j) b = idx == j ? sb[j] : b;
          }
          const float s0 = sa0 * b, s1 = sa1 * b;
          fw[g * 4 + 0] = fmaf(ac[g * 4 + 0], s0, fw[g * 4 + 0]);
          fw[g * 4 + 1] = fmaf(ac[g * 4 + 1], s0, fw[g * 4 + 1]);
          fw[g * 4 + 2] = fmaf(ac[g * 4 + 2], s1, fw[g * 4 + 2]);
          fw[g * 4 + 3] = fmaf(ac[g * 4 + 3], s1, fw[g * 4 + 3]);
        }
      };

      // A 64-row wave whose first row is past the valid rows (masked groups, the tail tile of M)
      // computes nothing: its D rows are never stored (bounded stores; TMA stores clip at M). It
      // still waits for and releases every stage, so the ring's phases stay in step. Per wave in
      // the unpipelined fp8 loop, per warpgroup (all its waves) in the others; masked layout only,
      // where partial tiles are the common case (dense kernels compile as they were tuned), and
      // wave 1 of a contiguous 256-row tile of 128 rows (ContigSlot; its rows belong to another
      // tile or to padding: neither stored nor zeroed; a pipelined config, BLOCK_N <= 64, computes
      // it anyway and drops it). Contiguous tiles always have rows in wave 0: no idle warpgroup.
      // (Measured and dropped, scripts/masked_ab.py: splitting an odd last 64-row block of a 256-row
      // tile by columns between the warpgroups (ptxas serialised the wgmma, C7511: ~30% slower), and
      // loading A per 64-row block to skip the blocks past the rows (64-row TMA boxes: 0-10% slower).)
      const uint32_t tile_row0 = m_blk * BLOCK_M + wg * 64;  // relative to the group (dense: D)
      // (contiguous 256: wave 0 always has rows of the group, wave 1 when the tile has 256)
      auto wave_active = [&](uint32_t w) {
        if constexpr (Cfg::kContig256) return w == 0 || rows_end > 128;
        return tile_row0 + w * 128 < rows_end;
      };
      if (kGroupMode == 2 && !wave_active(0)) {
#pragma unroll 1
        for (uint32_t kb = kb_begin; kb < kb_end; ++kb, ++it) {
          const uint32_t s = it % kStages;
          mbar_wait(&full_bar[s], (it / kStages) & 1);
          release(s);
        }
        if constexpr (!kFp8) {
#pragma unroll
          for (uint32_t i = 0; i < kAcc; ++i) acc[i] = 0.f;
        }
      } else if constexpr (kPipelined) {
        // Batches j = (kb - kb_begin) * kWaves + w in order, two in flight: batch j + 1 is issued
        // into the other accumulator before batch j is promoted, so the tensor cores need not wait
        // on the promotion. (Skipping the promotion altogether made 4096x4096x7168 ~20% faster on
        // H200; this recovers ~5% of it: templates/gemm/NOTES.md.)
        // Buffer 0 always holds even batches (wave 0), buffer 1 odd ones (wave kWaves - 1).
        struct Batch {
          float ac[kAcc];
          float sa0, sa1;
          float sb[kSpan];
        };
        Batch b0, b1;
        uint32_t J = (kb_end - kb_begin) * kWaves;
        constexpr bool kPeeled = kSplitK > 1 || JITKERN_GEMM_RUNTIME_J;
        if constexpr (kPeeled) asm volatile("mov.u32 %0, %0;" : "+r"(J));  // opaque: a run-time trip count
        const uint32_t it0 = it;
        auto issue = [&](uint32_t j, Batch& b) {
          const uint32_t kr = j / kWaves, w = j % kWaves;  // k-block kb_begin + kr, ring slot it0 + kr
          const uint32_t s = (it0 + kr) % kStages;
          load_sb(kb_begin + kr, b.sb);
          if (w == 0) mbar_wait(&full_bar[s], ((it0 + kr) / kStages) & 1);
          b.sa0 = smem_sfa[s * BLOCK_M + w * 128 + row_in_tile];
          b.sa1 = smem_sfa[s * BLOCK_M + w * 128 + row_in_tile + 8];
          mma_batch(s, w * 128 + wg * 64, make_smem_desc_k_sw128(smem_b + s * Cfg::kBBytes), false, b.ac);
        };
        // batch j is done once at most `in_flight` groups remain; then its stage may be released
        auto finish = [&](uint32_t j, Batch& b, auto in_flight, uint32_t w) {
          wgmma_wait<decltype(in_flight)::value>();
#pragma unroll
          for (uint32_t i = 0; i < kAcc; ++i) fence_operand(b.ac[i]);
          if (w == kWaves - 1) release((it0 + j / kWaves) % kStages);
          promote(fin + w * kAcc, b.ac, b.sa0, b.sa1, b.sb);
        };
        using One = InFlight<1>;
        using Zero = InFlight<0>;
        issue(0, b0);
        if constexpr (kPeeled) {
          // Run-time J (split-K's k-blocks, or hidden): steady state two batches per trip, then a
          // tail of one or two that drains, so every path issues before it waits. Pipelined for
          // every J tried (1..16, 56). The loop below, with J a constant, compiles pipelined for
          // most J and keeps the SASS that was measured; with a run-time J its inner `break` left
          // ptxas an unwaited path and it serialised every wgmma (C7514), and this one with a
          // constant J serialises at J = 7, 8, 12, 16.
          uint32_t j = 0;
#pragma unroll 1
          for (; j + 2 < J; j += 2) {
            issue(j + 1, b1);
            finish(j, b0, One{}, 0);
            issue(j + 2, b0);
            finish(j + 1, b1, One{}, kWaves - 1);
          }
          if (j + 1 < J) {
            issue(j + 1, b1);
            finish(j, b0, One{}, 0);
            finish(j + 1, b1, Zero{}, kWaves - 1);
          } else {
            finish(j, b0, Zero{}, 0);
          }
        } else {
#pragma unroll 1
          for (uint32_t j = 0; j < J; j += 2) {
            if (j + 1 < J) {
              issue(j + 1, b1);
              finish(j, b0, One{}, 0);
            } else {
              finish(j, b0, Zero{}, 0);
              break;
            }
            if (j + 2 < J) {
              issue(j + 2, b0);
              finish(j + 1, b1, One{}, kWaves - 1);
            } else {
              finish(j + 1, b1, Zero{}, kWaves - 1);
            }
          }
        }
        it += kb_end - kb_begin;
      } else {
        uint32_t prev_s = 0;
        // (Measured and dropped, scripts/gemm_define_ab.py: staggering the two math warpgroups once
        // per tile, so that one's promotion overlaps the other's wgmma: -8% .. +9% by shape, within
        // the run-to-run spread; no net gain.)
        for (uint32_t kb = kb_begin; kb < kb_end; ++kb, ++it) {
          const uint32_t s = it % kStages;
          float sb[kSpan];
          if constexpr (kFp8) load_sb(kb, sb);
          mbar_wait(&full_bar[s], (it / kStages) & 1);
          const uint64_t db = make_smem_desc_k_sw128(smem_b + s * Cfg::kBBytes);
#pragma unroll
          for (uint32_t w = 0; w < kWaves; ++w) {
            // (masked layout and contiguous 256-row tiles only; wave 0 is active here)
            const uint32_t mode = (kGroupMode == 2 || Cfg::kContig256) && w > 0 ? (wave_active(w) ? 1u : 0u) : 1u;
            const uint32_t rb = w * 128 + wg * 64;
            float sa0 = 0.f, sa1 = 0.f;
            if constexpr (kFp8) {
              sa0 = smem_sfa[s * BLOCK_M + w * 128 + row_in_tile];
              sa1 = smem_sfa[s * BLOCK_M + w * 128 + row_in_tile + 8];
            }
            if (mode == 1) mma_batch(s, rb, db, !kFp8 && kb > kb_begin, acc);
            if constexpr (kFp8) {
              if (mode != 0) {
                wgmma_wait<0>();
#pragma unroll
                for (uint32_t i = 0; i < kAcc; ++i) fence_operand(acc[i]);
              }
              // smem of stage s (tiles and A scales) is no longer read: hand it back to the producer.
              if (w == kWaves - 1) release(s);
              if (mode == 1) promote(fin + w * kAcc, acc, sa0, sa1, sb);
            }
          }
          if constexpr (!kFp8) {
            // Keep one wgmma group in flight; the previous stage's group is done after this wait.
            wgmma_wait<1>();
            if (kb > kb_begin) release(prev_s);
            prev_s = s;
          }
        }
        if constexpr (!kFp8) {
          wgmma_wait<0>();
#pragma unroll
          for (uint32_t i = 0; i < kAcc; ++i) fence_operand(acc[i]);
          release(prev_s);
        }
      }
      float* resw = kFp8 ? fin : acc;
      if constexpr (kGroupMode == 1) {
        // padding rows (layout -1) inside a group's last tile are written as zero
#pragma unroll
        for (uint32_t w = 0; w < kWaves; ++w) {
          if (Cfg::kContig256 && !wave_active(w)) continue;  // not stored
#pragma unroll
          for (uint32_t h = 0; h < 2; ++h) {
            const uint32_t row = row0 + w * 128 + row_in_tile + h * 8;
            if (row < M && __ldg(layout + row) < 0) {
#pragma unroll
              for (uint32_t g = 0; g < BLOCK_N / 8; ++g)
                resw[w * kAcc + g * 4 + 2 * h] = resw[w * kAcc + g * 4 + 2 * h + 1] = 0.f;
            }
          }
        }
      }
      const float* res = resw;

      // ---------------- epilogue ----------------
      if constexpr (Cfg::kTmaStore) {
        constexpr uint32_t W = Cfg::kStoreCols;         // columns per chunk
        constexpr uint32_t S = W * 2;                   // bytes per chunk row = swizzle span
        constexpr uint32_t kChunkBytes = 64 * S;
        constexpr uint32_t kChunks = BLOCK_N / W;
        // one 64-row buffer per (wave, warpgroup): rows w * 128 + wg * 64 of the tile
        auto sub_d = [&](uint32_t w) { return smem_d + (w * Cfg::kNumMathWG + wg) * 64 * BLOCK_N * 2; };
        const bool leader = threadIdx.x % 128 == 0;
        // The previous tile's TMA stores must have finished reading this warpgroup's buffer.
        if (leader) tma_store_wait_read<0>();
        named_barrier_sync(1 + wg, 128);
        const uint32_t i = lane / 8;                       // stmatrix: matrix fed by this lane's address
        const uint32_t row_l = wwarp * 16 + (i % 2) * 8 + lane % 8;
        const uint32_t half = i / 2;                       // which 8 columns of the 16-column piece
        // TMA swizzle: 16-byte unit index XOR address bits [7, 7 + log2(S/16)) (the row, scaled).
        const uint32_t swz = (row_l * S / 128) % (S / 16);
#pragma unroll
        for (uint32_t w = 0; w < kWaves; ++w) {
          if (Cfg::kContig256 && !wave_active(w)) continue;  // an idle wave's rows belong to another tile
          const float* rw = res + w * kAcc;
#pragma unroll
          for (uint32_t p = 0; p < BLOCK_N / 16; ++p) {
            const uint32_t j = p / (W / 16);
            const uint32_t unit = (p % (W / 16)) * 2 + half;
            stmatrix_x4(sub_d(w) + j * kChunkBytes + row_l * S + ((unit ^ swz) * 16),
                        pack_bf16x2(rw[8 * p + 0], rw[8 * p + 1]), pack_bf16x2(rw[8 * p + 2], rw[8 * p + 3]),
                        pack_bf16x2(rw[8 * p + 4], rw[8 * p + 5]), pack_bf16x2(rw[8 * p + 6], rw[8 * p + 7]));
          }
        }
        fence_proxy_async_shared();
        named_barrier_sync(1 + wg, 128);
        if (leader) {
#pragma unroll
          for (uint32_t w = 0; w < kWaves; ++w) {
            if (Cfg::kContig256 && !wave_active(w)) continue;
#pragma unroll
            for (uint32_t j = 0; j < kChunks; ++j)
              if (n0 + j * W < kN)
                tma_store_2d(&tma_d, sub_d(w) + j * kChunkBytes, n0 + j * W, row0 + w * 128 + wg * 64);
          }
          tma_store_commit();
        }
      } else {
        // Direct stores: fn(row of D, column, two values) for each of this thread's output pairs in range.
        auto for_each_pair = [&](auto&& fn) {
          const uint32_t col_l = (lane % 4) * 2;
#pragma unroll
          for (uint32_t w = 0; w < kWaves; ++w) {
            const uint32_t local0 = m_blk * BLOCK_M + w * 128 + row_in_tile;  // row inside the group (dense: in D)
            const uint32_t grow0 = row0 + w * 128 + row_in_tile;               // row of D
            const float* rw = res + w * kAcc;
#pragma unroll
            for (uint32_t g = 0; g < BLOCK_N / 8; ++g) {
              if (n0 + g * 8 >= kN) break;  // N % 8 == 0: a group is all in or all out
#pragma unroll
              for (uint32_t h = 0; h < 2; ++h)
                if (local0 + h * 8 < rows_end) fn(grow0 + h * 8, n0 + g * 8 + col_l, rw[g * 4 + 2 * h], rw[g * 4 + 2 * h + 1]);
            }
          }
        };
        auto store_pair = [&](uint32_t row, uint32_t col, float x, float y) {
          if constexpr (kAccum) {
            const float2 cv = *reinterpret_cast<const float2*>(c + size_t(row) * ldc + col);
            *reinterpret_cast<float2*>(reinterpret_cast<float*>(d) + size_t(row) * ldd + col) =
                make_float2(x + cv.x, y + cv.y);
          } else {
            *reinterpret_cast<uint32_t*>(reinterpret_cast<__nv_bfloat16*>(d) + size_t(row) * ldd + col) =
                pack_bf16x2(x, y);
          }
        };
        if constexpr (kSplitK > 1) {
          __shared__ uint32_t split_last;
          const size_t part_elems = size_t(M) * kN;
          for_each_pair([&](uint32_t row, uint32_t col, float x, float y) {
            __stcg(reinterpret_cast<float2*>(ws + split * part_elems + size_t(row) * kN + col), make_float2(x, y));
          });
          // threadFenceReduction pattern: partials visible device-wide before the tile's count moves
          __threadfence();
          named_barrier_sync(3, 128 * Cfg::kNumMathWG);
          int32_t* count = ws_count + m_blk * Cfg::kNumNBlocks + n_blk;
          if (threadIdx.x == 128) split_last = atomicAdd(count, 1) == int32_t(kSplitK - 1);
          named_barrier_sync(3, 128 * Cfg::kNumMathWG);
          if (split_last) {
            __threadfence();
            for_each_pair([&](uint32_t row, uint32_t col, float x, float y) {
              float sx = 0.f, sy = 0.f;  // partials summed in split order: the same bits every run
#pragma unroll
              for (uint32_t sp = 0; sp < kSplitK; ++sp) {
                const float2 v = sp == split ? make_float2(x, y)
                                             : __ldcg(reinterpret_cast<const float2*>(ws + sp * part_elems + size_t(row) * kN + col));
                sx += v.x;
                sy += v.y;
              }
              store_pair(row, col, sx, sy);
            });
            if (threadIdx.x == 128) *count = 0;  // every split has arrived: ready for the next launch
          }
        } else {
          for_each_pair(store_pair);
        }
      }
    }
    if constexpr (Cfg::kTmaStore) {
      if (threadIdx.x % 128 == 0) tma_store_wait<0>();  // smem must outlive the stores reading it
    }
  }
  // No CTA may exit while its peer can still multicast into it or arrive on its barriers.
  if constexpr (kCluster > 1) {
    __syncwarp();  // the producer's elected lane rejoins its warp for the aligned cluster barrier
    cluster_sync();
  }
}

}  // namespace gemm
}  // namespace jitkern
