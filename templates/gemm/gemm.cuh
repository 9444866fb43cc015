// Dense "NT" GEMM for Hopper: D[M, N] = A[M, K] @ B[N, K]^T.
//   kFp8 = true : A, B e4m3; A scaled per 1x128 group (fp32, MN-major [ceil(K/128), align(M,4)]),
//                 B per 128x128 block (fp32 [ceil(N/128), ceil(K/128)] row-major); DeepSeek-V3 recipe.
//   kFp8 = false: A, B bf16, no scales.
// Output: bf16 D, or (kAccum) fp32 D = A @ B^T + C.
//
// Structure (DeepGEMM-like): persistent CTAs walk output tiles in an N-grouped raster; warpgroup 0
// is the TMA producer (one thread, registers lowered with setmaxnreg), warpgroups 1..BLOCK_M/64
// are math warpgroups, each owning 64 rows of the tile. A kStages-deep shared-memory ring of
// (A tile, B tile, A scales) is guarded by full/empty mbarriers. FP8: each 128-wide K block is
// computed into a fresh wgmma accumulator and then promoted into fp32 registers multiplied by
// scale_a(row) * scale_b(block) (the tensor cores' fp8 accumulation keeps only ~14 mantissa bits,
// so accumulating a whole K there would lose accuracy). BF16: one accumulator over all of K.
#pragma once
#include <cuda_bf16.h>
#include "common/hopper.cuh"
#include "gemm/wgmma.cuh"

namespace jitkern {
namespace gemm {

using sm90::TmaDescriptor;

// Output-tile raster: groups of kGroupN consecutive N blocks, M fastest inside a group, so the
// CTAs resident at one time share a few B (weight) panels and a band of A rows in L2.
template <uint32_t kNumNBlocks, uint32_t kGroupN>
struct TileScheduler {
  uint32_t num_m_blocks;
  uint32_t num_tiles;
  __device__ __forceinline__ explicit TileScheduler(uint32_t m_blocks)
      : num_m_blocks(m_blocks), num_tiles(m_blocks * kNumNBlocks) {}
  __device__ __forceinline__ void tile(uint32_t t, uint32_t& m_blk, uint32_t& n_blk) const {
    const uint32_t per_group = num_m_blocks * kGroupN;
    const uint32_t g = t / per_group;
    const uint32_t first_n = g * kGroupN;
    const uint32_t n_in = (kNumNBlocks - first_n) < kGroupN ? (kNumNBlocks - first_n) : kGroupN;
    const uint32_t r = t - g * per_group;
    m_blk = r / n_in;
    n_blk = first_n + (r - m_blk * n_in);
  }
};

template <bool kFp8, uint32_t kN, uint32_t kK, uint32_t BLOCK_M, uint32_t BLOCK_N, uint32_t kStages,
          uint32_t kGroupN, bool kAccum>
struct GemmConfig {
  static constexpr uint32_t BLOCK_K = kFp8 ? 128 : 64;  // one 128-byte swizzle row of K
  static constexpr uint32_t kInstrK = kFp8 ? 32 : 16;
  static constexpr uint32_t kNumMathWG = BLOCK_M / 64;
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
  static constexpr uint32_t kSmemBytes = 1024 + kStages * kStageBytes + 2 * kStages * 8;
  static_assert(BLOCK_M == 64 || BLOCK_M == 128, "BLOCK_M: 64 (1 math warpgroup) or 128 (2)");
  static_assert(BLOCK_N % 16 == 0 && BLOCK_N >= 16 && BLOCK_N <= 256, "BLOCK_N: multiple of 16 in [16, 256]");
  static_assert(kN % 8 == 0, "N must be a multiple of 8");
  static_assert(kK % (kFp8 ? 16 : 8) == 0, "K rows must be 16-byte multiples");
};

template <bool kFp8, uint32_t kN, uint32_t kK, uint32_t BLOCK_M, uint32_t BLOCK_N, uint32_t kStages,
          uint32_t kGroupN, bool kAccum>
__global__ void __launch_bounds__(GemmConfig<kFp8, kN, kK, BLOCK_M, BLOCK_N, kStages, kGroupN, kAccum>::kThreads, 1)
gemm_nt_kernel(const __grid_constant__ TmaDescriptor tma_a, const __grid_constant__ TmaDescriptor tma_b,
               const __grid_constant__ TmaDescriptor tma_sfa, const float* __restrict__ sfb, void* __restrict__ d,
               const float* c, uint32_t M, uint32_t ldd, uint32_t ldc) {
  using Cfg = GemmConfig<kFp8, kN, kK, BLOCK_M, BLOCK_N, kStages, kGroupN, kAccum>;
  using namespace sm90;
  constexpr uint32_t BLOCK_K = Cfg::BLOCK_K;
  constexpr uint32_t kNumKBlocks = Cfg::kNumKBlocks;
  constexpr uint32_t kAcc = BLOCK_N / 2;  // accumulator floats per thread (m64nN wgmma)

  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  uint8_t* smem_a = smem;
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
      mbar_init(&empty_bar[s], Cfg::kNumMathWG * 4);  // one arrival per math warp
    }
    fence_barrier_init();
  }
  __syncthreads();

  const uint32_t num_m_blocks = (M + BLOCK_M - 1) / BLOCK_M;
  TileScheduler<Cfg::kNumNBlocks, kGroupN> sched(num_m_blocks);

  if (warp < 4) {
    // ---------------- TMA producer warpgroup ----------------
    setmaxnreg_dec<40>();
    if (warp == 0 && elect_one_sync()) {
      uint32_t it = 0;
      for (uint32_t t = blockIdx.x; t < sched.num_tiles; t += gridDim.x) {
        uint32_t m_blk, n_blk;
        sched.tile(t, m_blk, n_blk);
        for (uint32_t kb = 0; kb < kNumKBlocks; ++kb, ++it) {
          const uint32_t s = it % kStages;
          mbar_wait(&empty_bar[s], ((it / kStages) & 1) ^ 1);
          mbar_arrive_expect_tx(&full_bar[s], Cfg::kStageBytes);
          tma_load_2d(&tma_a, &full_bar[s], smem_a + s * Cfg::kABytes, kb * BLOCK_K, m_blk * BLOCK_M);
          tma_load_2d(&tma_b, &full_bar[s], smem_b + s * Cfg::kBBytes, kb * BLOCK_K, n_blk * BLOCK_N);
          if constexpr (kFp8)
            tma_load_2d(&tma_sfa, &full_bar[s], smem_sfa + s * BLOCK_M, m_blk * BLOCK_M, kb);
        }
      }
    }
  } else {
    // ---------------- math warpgroups ----------------
    setmaxnreg_inc<232>();
    const uint32_t wg = warp / 4 - 1;          // math warpgroup: rows [wg*64, wg*64+64) of the tile
    const uint32_t wwarp = warp % 4;           // warp inside the warpgroup: 16 rows each
    const uint32_t row_in_tile = wg * 64 + wwarp * 16 + lane / 4;
    uint32_t it = 0;

    for (uint32_t t = blockIdx.x; t < sched.num_tiles; t += gridDim.x) {
      uint32_t m_blk, n_blk;
      sched.tile(t, m_blk, n_blk);
      const uint32_t n0 = n_blk * BLOCK_N;

      float acc[kAcc];
      float fin[kFp8 ? kAcc : 1];
      if constexpr (kFp8) {
#pragma unroll
        for (uint32_t i = 0; i < kAcc; ++i) fin[i] = 0.f;
      }
      // B-scale blocks this tile touches: 128-col block of column n0 + c is nb0 + (r0 + c) / 128.
      const uint32_t nb0 = n0 / 128;
      const uint32_t r0 = n0 % 128;
      constexpr uint32_t kSpan = (127 + BLOCK_N) / 128 + 1;  // upper bound on blocks touched

      uint32_t prev_s = 0;
      for (uint32_t kb = 0; kb < kNumKBlocks; ++kb, ++it) {
        const uint32_t s = it % kStages;
        float sb[kSpan];
        if constexpr (kFp8) {
#pragma unroll
          for (uint32_t j = 0; j < kSpan; ++j) {
            const uint32_t row = nb0 + j < Cfg::kScaleBRows ? nb0 + j : Cfg::kScaleBRows - 1;
            sb[j] = __ldg(sfb + row * Cfg::kScaleKBlocks + kb);
          }
        }
        mbar_wait(&full_bar[s], (it / kStages) & 1);
        float sa0 = 0.f, sa1 = 0.f;
        if constexpr (kFp8) {
          sa0 = smem_sfa[s * BLOCK_M + row_in_tile];
          sa1 = smem_sfa[s * BLOCK_M + row_in_tile + 8];
        }
        const uint64_t da = make_smem_desc_k_sw128(smem_a + s * Cfg::kABytes + wg * 64 * 128);
        const uint64_t db = make_smem_desc_k_sw128(smem_b + s * Cfg::kBBytes);
#pragma unroll
        for (uint32_t i = 0; i < kAcc; ++i) fence_operand(acc[i]);
        wgmma_fence();
#pragma unroll
        for (uint32_t k = 0; k < BLOCK_K / Cfg::kInstrK; ++k) {
          // 32 bytes of K per instruction: advance the descriptor's start address (16-byte units).
          const uint32_t scale_d = kFp8 ? (k > 0) : (kb > 0 || k > 0);
          if constexpr (kFp8)
            WgmmaFp8<BLOCK_N>::mma(da + 2 * k, db + 2 * k, acc, scale_d);
          else
            WgmmaBf16<BLOCK_N>::mma(da + 2 * k, db + 2 * k, acc, scale_d);
        }
        wgmma_commit();
        if constexpr (kFp8) {
          wgmma_wait<0>();
#pragma unroll
          for (uint32_t i = 0; i < kAcc; ++i) fence_operand(acc[i]);
          // smem of stage s (tiles and A scales) is no longer read: hand it back to the producer.
          __syncwarp();
          if (lane == 0) mbar_arrive(&empty_bar[s]);
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
            fin[g * 4 + 0] = fmaf(acc[g * 4 + 0], s0, fin[g * 4 + 0]);
            fin[g * 4 + 1] = fmaf(acc[g * 4 + 1], s0, fin[g * 4 + 1]);
            fin[g * 4 + 2] = fmaf(acc[g * 4 + 2], s1, fin[g * 4 + 2]);
            fin[g * 4 + 3] = fmaf(acc[g * 4 + 3], s1, fin[g * 4 + 3]);
          }
        } else {
          // Keep one wgmma group in flight; the previous stage's group is done after this wait.
          wgmma_wait<1>();
          __syncwarp();
          if (kb > 0 && lane == 0) mbar_arrive(&empty_bar[prev_s]);
          prev_s = s;
        }
      }
      if constexpr (!kFp8) {
        wgmma_wait<0>();
#pragma unroll
        for (uint32_t i = 0; i < kAcc; ++i) fence_operand(acc[i]);
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty_bar[prev_s]);
      }
      const float* res = kFp8 ? fin : acc;

      // ---------------- epilogue: registers -> global ----------------
      const uint32_t row0 = m_blk * BLOCK_M + row_in_tile;
      const uint32_t col_l = (lane % 4) * 2;
#pragma unroll
      for (uint32_t g = 0; g < BLOCK_N / 8; ++g) {
        const uint32_t col = n0 + g * 8 + col_l;
        if (n0 + g * 8 >= kN) break;  // N % 8 == 0: a group is all in or all out
#pragma unroll
        for (uint32_t h = 0; h < 2; ++h) {
          const uint32_t row = row0 + h * 8;
          if (row < M) {
            const float x = res[g * 4 + 2 * h], y = res[g * 4 + 2 * h + 1];
            if constexpr (kAccum) {
              const float2 cv = *reinterpret_cast<const float2*>(c + size_t(row) * ldc + col);
              *reinterpret_cast<float2*>(reinterpret_cast<float*>(d) + size_t(row) * ldd + col) =
                  make_float2(x + cv.x, y + cv.y);
            } else {
              *reinterpret_cast<uint32_t*>(reinterpret_cast<__nv_bfloat16*>(d) + size_t(row) * ldd + col) =
                  pack_bf16x2(x, y);
            }
          }
        }
      }
    }
  }
}

}  // namespace gemm
}  // namespace jitkern
