// Compile-only smoke kernel touching every helper of common/hopper.cuh (CPU test: it must build
// for sm_90a and show the expected instructions).
#pragma once
#include "common/hopper.cuh"

namespace jitkern {
__global__ void __launch_bounds__(256, 1) hopper_smoke(const __grid_constant__ sm90::TmaDescriptor desc, float* out) {
  using namespace sm90;
  __shared__ __align__(1024) uint8_t buf[4096];
  __shared__ uint64_t bar;
  tma_prefetch_desc(&desc);
  if (threadIdx.x == 0) { mbar_init(&bar, 1); fence_barrier_init(); }
  __syncthreads();
  if (threadIdx.x == 0) {
    mbar_arrive_expect_tx(&bar, 4096);
    tma_load_2d(&desc, &bar, buf, 0, 0);
    tma_load_1d(&desc, &bar, buf, 0);
    tma_load_3d(&desc, &bar, buf, 0, 0, 0);
    tma_load_2d_hint(&desc, &bar, buf, 0, 0, l2_policy_evict_last());
    tma_load_2d_hint(&desc, &bar, buf, 0, 0, l2_policy_evict_first());
    tma_load_2d_multicast(&desc, &bar, buf, 0, 0, 3);
    tma_load_3d_multicast(&desc, &bar, buf, 0, 0, 0, 3);
    mbar_expect_tx(&bar, 16);
    mbar_arrive(&bar);
    mbar_arrive_cluster(&bar, 1);
    cluster_arrive_relaxed(); cluster_wait(); cluster_sync();
  }
  mbar_wait(&bar, 0);
  if (warp_idx_sync() < 4) setmaxnreg_dec<40>(); else setmaxnreg_inc<232>();
  uint64_t d = make_smem_desc_k_sw128(buf);
  float x = buf[threadIdx.x] + (float)(d & 1) + (float)cluster_ctarank() + (float)cluster_nctarank();
  fence_operand(x);
  wgmma_fence(); wgmma_commit(); wgmma_wait<0>();
  named_barrier_sync(1, 256);
  fence_proxy_async_shared();
  if (elect_one_sync() && threadIdx.x < 32) {
    tma_store_2d(&desc, buf, 0, 0); tma_store_3d(&desc, buf, 0, 0, 0); tma_reduce_add_2d(&desc, buf, 0, 0); fence_proxy_async_global(); named_barrier_arrive(2, 64); tma_store_commit(); tma_store_wait_read<0>(); tma_store_wait<0>();
  }
  stmatrix_x4(buf + (threadIdx.x % 32) * 16, 1, 2, 3, pack_bf16x2(x, x));
  uint32_t r0, r1, r2, r3; ldmatrix_x4(buf, r0, r1, r2, r3); stmatrix_x2(buf, r0, r1 + r2 + r3 + (uint32_t)mbar_try_wait(&bar, 1));
  out[threadIdx.x] = x;
}
}  // namespace jitkern
