"""Which GPU target a kernel is built for.

A :class:`Target` names the NVRTC architecture (``sm_90a`` on Hopper: the ``a`` suffix unlocks
wgmma/setmaxnreg) plus the limits heuristics need. ``current_target()`` reads them off a visible
GPU; ``target_for_arch("sm_90a")`` gives the same record with nominal H100 limits so that
compile-only work (warmup on a machine with no GPU) picks the same configs.
"""
from __future__ import annotations

import dataclasses
import functools


@dataclasses.dataclass(frozen=True)
class Target:
    arch: str                 # NVRTC --gpu-architecture value, e.g. "sm_90a"
    num_sms: int              # streaming multiprocessors
    smem_per_block: int       # max dynamic shared memory per block (opt-in), bytes
    l2_bytes: int
    name: str = ""

    @property
    def major(self) -> int:
        return int(self.arch[3:-1] if self.arch.endswith("a") else self.arch[3:]) // 10


# Nominal limits for compile-only targets (H100 SXM: 132 SMs, 227 KiB opt-in smem, 50 MiB L2).
_NOMINAL = {
    "sm_90a": Target("sm_90a", 132, 232448, 50 * 1024 * 1024, "nominal H100 SXM"),
    "sm_90": Target("sm_90", 132, 232448, 50 * 1024 * 1024, "nominal H100 SXM"),
}

SUPPORTED_ARCHS = ("sm_90a",)


def target_for_arch(arch: str) -> Target:
    """Target record for an explicit architecture string (no GPU needed)."""
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"arch: expected one of {SUPPORTED_ARCHS}, got {arch!r} "
                         "(jitkern's kernels use Hopper-only wgmma/TMA instructions)")
    return _NOMINAL[arch]


def gpu_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available() and torch.cuda.device_count() > 0
    except Exception:  # a broken driver install counts as no GPU
        return False


@functools.lru_cache(maxsize=None)
def _target_of_device(index: int) -> Target:
    import torch
    p = torch.cuda.get_device_properties(index)
    if (p.major, p.minor) != (9, 0):
        raise RuntimeError(f"device cuda:{index} ({p.name}) has compute capability {p.major}.{p.minor}; "
                           "jitkern's kernels need Hopper (9.0)")
    smem = getattr(p, "shared_memory_per_block_optin", 232448)
    l2 = getattr(p, "L2_cache_size", 50 * 1024 * 1024)
    return Target("sm_90a", p.multi_processor_count, smem, l2, p.name)


def current_target(device=None) -> Target:
    """Target of ``device`` (default: the current CUDA device). Raises if no GPU is visible."""
    import torch
    if not gpu_available():
        raise RuntimeError("no CUDA GPU is visible: pass arch='sm_90a' for compile-only work")
    index = torch.cuda.current_device() if device is None else torch.device(device).index
    if index is None:
        index = torch.cuda.current_device()
    return _target_of_device(index)
