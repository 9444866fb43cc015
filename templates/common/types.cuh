// Shared device helpers: fixed-width types and small utilities used by every jitkern template.
#pragma once
#include <cuda/std/cstdint>

namespace jitkern {
using int32_t = cuda::std::int32_t;
using int64_t = cuda::std::int64_t;
using uint8_t = cuda::std::uint8_t;
using uint32_t = cuda::std::uint32_t;
using uint64_t = cuda::std::uint64_t;

template <typename T>
__device__ __forceinline__ constexpr T ceil_div(T a, T b) { return (a + b - 1) / b; }
}  // namespace jitkern
