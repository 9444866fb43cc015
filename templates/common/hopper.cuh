// Hopper (sm_90a) device helpers shared by the GEMM and attention templates: TMA bulk tensor
// copies, mbarriers, async-proxy fences, wgmma fences and shared-memory matrix descriptors,
// setmaxnreg, cluster and named-barrier helpers, stmatrix.
//
// Contract: these signatures are stable (other templates depend on them). Add new functions;
// never change an existing one. Everything is inline PTX so the header costs ~nothing to compile.
//
// Conventions:
//  * Shared-memory addresses are taken as generic pointers and converted with smem_u32().
//  * mbarriers are `uint64_t` objects in shared memory, 8-byte aligned.
//  * TMA coordinates are element indices, innermost dimension first (c0 = column along the
//    contiguous dim), exactly as in the tensor map built by jitkern.runtime.tma.make_tma_desc.
//  * A TmaDescriptor kernel parameter must be declared `const __grid_constant__ TmaDescriptor`
//    and passed from the host as the 128-byte CUtensorMap object; helpers take its address.
#pragma once
#include "common/types.cuh"

namespace jitkern {
namespace sm90 {

// Layout-compatible stand-in for the driver's CUtensorMap (128 bytes, 64-byte aligned), so
// templates need not include <cuda.h> (which pulls host headers NVRTC lacks).
struct alignas(64) TmaDescriptor {
  unsigned long long opaque[16];
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ uint32_t warp_idx_sync() {
  // Broadcast from lane 0 so the compiler treats the value as warp-uniform.
  return __shfl_sync(0xffffffffu, threadIdx.x / 32, 0);
}

__device__ __forceinline__ bool elect_one_sync() {
  uint32_t pred = 0;
  asm volatile(
      "{\n .reg .b32 rx;\n .reg .pred px;\n"
      " elect.sync rx|px, %1;\n"
      " @px mov.s32 %0, 1;\n}\n"
      : "+r"(pred) : "r"(0xffffffffu));
  return pred != 0;
}

// ------------------------------------------------------------------------------------------
// mbarrier
// ------------------------------------------------------------------------------------------

// Initialise with the number of arrivals that complete a phase. Follow all inits of a CTA
// with fence_barrier_init() and a CTA (or cluster) barrier before any other thread uses them.
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(smem_u32(bar)), "r"(count) : "memory");
}

// Makes mbarrier initialisation visible to the async proxy (TMA) and to other CTAs of the cluster.
__device__ __forceinline__ void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("{\n .reg .b64 st;\n mbarrier.arrive.shared::cta.b64 st, [%0];\n}" :: "r"(smem_u32(bar)) : "memory");
}

// Arrive on the barrier at the same smem offset in CTA `cta_id` of this cluster (a consumer
// releasing a stage that a multicast producer in another CTA fills). Default (.release.cta)
// semantics, as CUTLASS's ClusterBarrier::arrive: the consumer's reads of the stage are complete
// (wgmma wait) before it arrives, so no cluster-scope fence is needed; `.release.cluster`
// compiles to MEMBAR.ALL.GPU before every arrival, which halved the clustered GEMM's speed.
__device__ __forceinline__ void mbar_arrive_cluster(uint64_t* bar, uint32_t cta_id) {
  asm volatile(
      "{\n .reg .b32 remAddr32;\n"
      " mapa.shared::cluster.u32 remAddr32, %0, %1;\n"
      " mbarrier.arrive.shared::cluster.b64 _, [remAddr32];\n}"
      :: "r"(smem_u32(bar)), "r"(cta_id) : "memory");
}

// One arrival plus `bytes` of expected transaction count (the TMA loads that complete it).
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("{\n .reg .b64 st;\n mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}"
               :: "r"(smem_u32(bar)), "r"(bytes) : "memory");
}

// Raise the expected transaction count without arriving.
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;" :: "r"(smem_u32(bar)), "r"(bytes) : "memory");
}

// True once the phase with parity `phase` (0/1) has completed.
__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, uint32_t phase) {
  uint32_t ok;
  asm volatile(
      "{\n .reg .pred p;\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      " selp.u32 %0, 1, 0, p;\n}"
      : "=r"(ok) : "r"(smem_u32(bar)), "r"(phase) : "memory");
  return ok != 0;
}

// Block until the phase with parity `phase` completes. A freshly initialised barrier counts as
// having completed parity 1, so producers start with phase 1 ("slot empty") and consumers with 0.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t phase) {
  asm volatile(
      "{\n .reg .pred p;\n"
      "WAIT_%=:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      " @!p bra WAIT_%=;\n}"
      :: "r"(smem_u32(bar)), "r"(phase) : "memory");
}

// ------------------------------------------------------------------------------------------
// Fences
// ------------------------------------------------------------------------------------------

// Generic-proxy writes to shared memory (st.shared, stmatrix) -> visible to the async proxy
// (TMA store, wgmma operand reads). Each writing thread fences, then a barrier.
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// Same, for global memory written by ordinary stores and then read through TMA.
__device__ __forceinline__ void fence_proxy_async_global() {
  asm volatile("fence.proxy.async.global;" ::: "memory");
}

// ------------------------------------------------------------------------------------------
// TMA (cp.async.bulk.tensor). Loads complete on `bar` (complete_tx with the box's bytes).
// ------------------------------------------------------------------------------------------

__device__ __forceinline__ void tma_prefetch_desc(const TmaDescriptor* desc) {
  asm volatile("prefetch.tensormap [%0];" :: "l"(reinterpret_cast<uint64_t>(desc)) : "memory");
}

__device__ __forceinline__ void tma_load_1d(const TmaDescriptor* desc, uint64_t* bar, void* dst, int c0) {
  asm volatile(
      "cp.async.bulk.tensor.1d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3}], [%2];"
      :: "r"(smem_u32(dst)), "l"(reinterpret_cast<uint64_t>(desc)), "r"(smem_u32(bar)), "r"(c0) : "memory");
}

// 1D bulk copy of `bytes` (a multiple of 16, both addresses 16-byte aligned) from global to shared
// memory, completing on `bar` (which must expect the bytes).
__device__ __forceinline__ void bulk_load_1d(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
               :: "r"(smem_u32(dst)), "l"(src), "r"(bytes), "r"(smem_u32(bar)) : "memory");
}

__device__ __forceinline__ void tma_load_2d(const TmaDescriptor* desc, uint64_t* bar, void* dst, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];"
      :: "r"(smem_u32(dst)), "l"(reinterpret_cast<uint64_t>(desc)), "r"(smem_u32(bar)), "r"(c0), "r"(c1)
      : "memory");
}

__device__ __forceinline__ void tma_load_3d(const TmaDescriptor* desc, uint64_t* bar, void* dst, int c0, int c1,
                                            int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];"
      :: "r"(smem_u32(dst)), "l"(reinterpret_cast<uint64_t>(desc)), "r"(smem_u32(bar)), "r"(c0), "r"(c1),
         "r"(c2)
      : "memory");
}

// 2D load with an L2 cache-policy hint (createpolicy value, e.g. from l2_policy_evict_last()).
__device__ __forceinline__ void tma_load_2d_hint(const TmaDescriptor* desc, uint64_t* bar, void* dst, int c0, int c1,
                                                 uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1, {%3, %4}], [%2], %5;"
      :: "r"(smem_u32(dst)), "l"(reinterpret_cast<uint64_t>(desc)), "r"(smem_u32(bar)), "r"(c0), "r"(c1),
         "l"(policy)
      : "memory");
}

// Multicast 2D load: the box lands at the same smem offset (and completes the barrier at the
// same offset) in every CTA of the cluster whose bit is set in `cta_mask`.
__device__ __forceinline__ void tma_load_2d_multicast(const TmaDescriptor* desc, uint64_t* bar, void* dst, int c0,
                                                      int c1, uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%4, %5}], [%2], %3;"
      :: "r"(smem_u32(dst)), "l"(reinterpret_cast<uint64_t>(desc)), "r"(smem_u32(bar)), "h"(cta_mask), "r"(c0),
         "r"(c1)
      : "memory");
}

__device__ __forceinline__ void tma_load_3d_multicast(const TmaDescriptor* desc, uint64_t* bar, void* dst, int c0,
                                                      int c1, int c2, uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%4, %5, %6}], [%2], %3;"
      :: "r"(smem_u32(dst)), "l"(reinterpret_cast<uint64_t>(desc)), "r"(smem_u32(bar)), "h"(cta_mask), "r"(c0),
         "r"(c1), "r"(c2)
      : "memory");
}

__device__ __forceinline__ uint64_t l2_policy_evict_first() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  return p;
}

__device__ __forceinline__ uint64_t l2_policy_evict_last() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(p));
  return p;
}

// TMA store smem -> global (out-of-bounds parts of the box are not written). Fence the smem
// writes first (fence_proxy_async_shared + barrier); then commit and wait before reusing `src`.
__device__ __forceinline__ void tma_store_2d(const TmaDescriptor* desc, const void* src, int c0, int c1) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];"
               :: "l"(reinterpret_cast<uint64_t>(desc)), "r"(smem_u32(src)), "r"(c0), "r"(c1) : "memory");
}

__device__ __forceinline__ void tma_store_3d(const TmaDescriptor* desc, const void* src, int c0, int c1, int c2) {
  asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%2, %3, %4}], [%1];"
               :: "l"(reinterpret_cast<uint64_t>(desc)), "r"(smem_u32(src)), "r"(c0), "r"(c1), "r"(c2) : "memory");
}

// Element-wise add reduction into global (fp32/bf16 per the tensor map's dtype).
__device__ __forceinline__ void tma_reduce_add_2d(const TmaDescriptor* desc, const void* src, int c0, int c1) {
  asm volatile("cp.reduce.async.bulk.tensor.2d.global.shared::cta.add.bulk_group [%0, {%2, %3}], [%1];"
               :: "l"(reinterpret_cast<uint64_t>(desc)), "r"(smem_u32(src)), "r"(c0), "r"(c1) : "memory");
}

__device__ __forceinline__ void tma_store_commit() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }

// Wait until at most N committed store groups are still reading their smem source.
template <int N>
__device__ __forceinline__ void tma_store_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;" :: "n"(N) : "memory");
}

// Wait until at most N committed store groups are still in flight (writes done).
template <int N>
__device__ __forceinline__ void tma_store_wait() {
  asm volatile("cp.async.bulk.wait_group %0;" :: "n"(N) : "memory");
}

// ------------------------------------------------------------------------------------------
// wgmma
// ------------------------------------------------------------------------------------------

// Before the first wgmma of a batch (orders prior register/smem writes of the accumulators).
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
// Wait until at most N committed wgmma groups of this warpgroup are pending.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(N) : "memory");
}

// Keeps the compiler from moving accumulator reads/writes across wgmma fence/wait points.
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r) :: "memory"); }
__device__ __forceinline__ void fence_operand(uint32_t& r) { asm volatile("" : "+r"(r) :: "memory"); }

// Swizzle modes of a wgmma shared-memory matrix descriptor (bits 62-63).
enum class SmemSwizzle : uint32_t { kNone = 0, k128B = 1, k64B = 2, k32B = 3 };

// wgmma shared-memory matrix descriptor. `lbo`/`sbo`: leading / stride byte offsets (multiples of
// 16). Swizzled tiles must start 1024-byte aligned (128B swizzle; base_offset field left 0).
__device__ __forceinline__ uint64_t make_smem_desc(const void* smem, SmemSwizzle swizzle, uint32_t lbo, uint32_t sbo) {
  uint64_t d = 0;
  d |= static_cast<uint64_t>((smem_u32(smem) & 0x3FFFFu) >> 4);
  d |= static_cast<uint64_t>((lbo & 0x3FFFFu) >> 4) << 16;
  d |= static_cast<uint64_t>((sbo & 0x3FFFFu) >> 4) << 32;
  d |= static_cast<uint64_t>(swizzle) << 62;
  return d;
}

// K-major tile with 128-byte rows, 128B swizzle, as TMA writes it with CU_TENSOR_MAP_SWIZZLE_128B
// (box inner dim = 128 bytes): 8-row core-matrix groups 1024 bytes apart. Advance along K inside
// the row by adding (bytes >> 4) to the returned value (the start-address field).
__device__ __forceinline__ uint64_t make_smem_desc_k_sw128(const void* smem) {
  return make_smem_desc(smem, SmemSwizzle::k128B, 16, 1024);
}

// ------------------------------------------------------------------------------------------
// Register reallocation between warpgroups (needs __launch_bounds__(threads, 1)).
// ------------------------------------------------------------------------------------------
template <uint32_t N>
__device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" :: "n"(N)); }
template <uint32_t N>
__device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" :: "n"(N)); }

// ------------------------------------------------------------------------------------------
// Cluster and CTA barriers
// ------------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t cluster_ctarank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
__device__ __forceinline__ uint32_t cluster_nctarank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(r));
  return r;
}
__device__ __forceinline__ void cluster_arrive_relaxed() {
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
}
__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.aligned;" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.aligned;" ::: "memory"); }
__device__ __forceinline__ void cluster_sync() {
  cluster_arrive();
  cluster_wait();
}

// Named barrier `id` (1..15; 0 is __syncthreads) over `threads` threads (a multiple of 32).
__device__ __forceinline__ void named_barrier_sync(uint32_t id, uint32_t threads) {
  asm volatile("bar.sync %0, %1;" :: "r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(uint32_t id, uint32_t threads) {
  asm volatile("bar.arrive %0, %1;" :: "r"(id), "r"(threads) : "memory");
}

// ------------------------------------------------------------------------------------------
// stmatrix / ldmatrix (8x8 b16 tiles; each lane gives one row address for x4: lanes 0-7 tile 0 ...)
// ------------------------------------------------------------------------------------------
__device__ __forceinline__ void stmatrix_x2(void* smem_row, uint32_t r0, uint32_t r1) {
  asm volatile("stmatrix.sync.aligned.x2.m8n8.shared.b16 [%0], {%1, %2};"
               :: "r"(smem_u32(smem_row)), "r"(r0), "r"(r1) : "memory");
}
__device__ __forceinline__ void stmatrix_x4(void* smem_row, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.x4.m8n8.shared.b16 [%0], {%1, %2, %3, %4};"
               :: "r"(smem_u32(smem_row)), "r"(r0), "r"(r1), "r"(r2), "r"(r3) : "memory");
}
__device__ __forceinline__ void ldmatrix_x4(const void* smem_row, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                            uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.x4.m8n8.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_u32(smem_row)) : "memory");
}

// Two floats -> packed bf16x2 (low half = a), round to nearest even.
__device__ __forceinline__ uint32_t pack_bf16x2(float a, float b) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(b), "f"(a));
  return r;
}

}  // namespace sm90
}  // namespace jitkern
