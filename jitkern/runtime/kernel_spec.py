"""What identifies one specialised kernel: template file + C++ name expression + macros."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """One kernel specialisation.

    template: path under ``templates/`` (e.g. ``"quant/quant.cuh"``). A template may include
        headers from its own folder, ``common/``, and the CUDA/CUTLASS/CCCL wheels.
    name: C++ name expression of the ``__global__`` function with every template argument,
        e.g. ``"jitkern::quant_token_group<__nv_bfloat16, 128, false>"``. NVRTC instantiates it.
    defines: extra ``-D`` macros as ``(("NAME", "VALUE"), ...)``; part of the cache key.
    family: label for listings and progress bars (``"quant"``, ``"gemm"``, ...).
    serialized_fallback: extra ``-D`` macros to recompile with when ptxas reports that it
        serialised the kernel's wgmma instructions (advisories C751x); the kernel must compute the
        same results under them. Not part of the cache key (the defines of the retry are).
    """
    template: str
    name: str
    defines: tuple = ()
    family: str = ""
    serialized_fallback: tuple = ()

    def __post_init__(self):
        if not isinstance(self.defines, tuple):
            object.__setattr__(self, "defines", tuple(sorted(dict(self.defines).items())))
