"""FP8 (e4m3) quantisation kernels: per-token 1x128 groups (activations) and 128x128 blocks
(weights), fp32 scales = max(amax, 1e-4) / 448, optionally rounded up to a power of two.
Math and the NaN/inf policy: :mod:`jitkern.reference.quant` (bit-identical results).
"""
from __future__ import annotations

import ctypes

import torch

from ..runtime import KernelSpec, current_target, get_kernel
from .checks import check_same_device, check_tensor

_IN_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
_CTYPE = {torch.bfloat16: "__nv_bfloat16", torch.float16: "__half", torch.float32: "float"}
GROUP = 128


def tma_aligned_rows(m: int) -> int:
    """Row count padded so each column of an MN-major fp32 scale tensor starts 16-byte aligned."""
    return (m + 3) // 4 * 4


def empty_token_group_scales(m: int, k: int, device) -> torch.Tensor:
    """Uninitialised MN-major, TMA-aligned scale tensor: shape [m, ceil(k/128)], strides
    (1, align(m, 4)) (storage [ceil(k/128), align(m, 4)]): the layout the FP8 GEMMs read."""
    g, mp = -(-k // GROUP), tma_aligned_rows(m)
    # Full [g, mp] storage: a TMA box over the padded rows of the last group must stay in bounds.
    return torch.empty((g, mp), dtype=torch.float32, device=device).as_strided((m, g), (1, mp))


_SPECS: dict = {}


def _spec(kind: str, dtype: torch.dtype, round_pow2: bool, groups: int = 0) -> KernelSpec:
    key = (kind, dtype, round_pow2, groups)
    spec = _SPECS.get(key)
    if spec is None:
        extra = f", {groups}" if kind == "token_group" else ""
        spec = _SPECS[key] = KernelSpec(
            "quant/quant.cuh", f"jitkern::quant_{kind}<{_CTYPE[dtype]}, {str(round_pow2).lower()}{extra}>",
            family="quant")
    return spec


# Groups per half-warp in the token-group kernel: 4 keeps 64 bytes per thread in flight on large
# inputs; small ones take 1 so the grid still covers every SM.
TOKEN_GROUP_VARIANTS = (1, 4)


def token_group_groups(m: int, k: int) -> int:
    return 4 if m * -(-k // GROUP) >= 132 * 64 * 4 else 1


def _check_input(x):
    check_tensor("x", x, dtype=_IN_DTYPES, ndim=2, inner_contiguous=True, align_bytes=16)
    if x.shape[1] % 16:
        raise ValueError(f"x: expected K (last dim) to be a multiple of 16 (16-byte e4m3 rows for TMA), got {x.shape[1]}")
    if (x.stride(0) * x.element_size()) % 16 and x.shape[0] > 1:
        raise ValueError(f"x: expected a row stride that is a multiple of 16 bytes, got {x.stride(0)} elements")


def per_token_group_quant_fp8(x: torch.Tensor, round_pow2: bool = False, out=None):
    """Quantise activations per 1x128 group along K.

    x: [M, K] bf16/fp16/fp32 CUDA tensor, stride 1 along K, K % 16 == 0, 16-byte aligned rows.
    Returns ``(q, scales)``: q [M, K] float8_e4m3fn contiguous; scales [M, ceil(K/128)] fp32 in the
    MN-major TMA-aligned layout of :func:`empty_token_group_scales`. ``out=(q, scales)`` writes
    into given tensors of exactly those layouts.
    """
    _check_input(x)
    m, k = x.shape
    if out is None:
        q = torch.empty((m, k), dtype=torch.float8_e4m3fn, device=x.device)
        s = empty_token_group_scales(m, k, x.device)
    else:
        q, s = out
        check_tensor("out[0]", q, dtype=torch.float8_e4m3fn, shape=(m, k), contiguous=True)
        check_tensor("out[1]", s, dtype=torch.float32, shape=(m, -(-k // GROUP)))
        if m and (s.stride(0) != 1 or (s.shape[1] > 1 and s.stride(1) != tma_aligned_rows(m))):
            raise ValueError(f"out[1]: expected MN-major strides (1, {tma_aligned_rows(m)}), got {s.stride()}")
        check_same_device(x=x, q=q, scales=s)
    if m == 0:
        return q, s
    groups, per = -(-k // GROUP), token_group_groups(m, k)
    kern = get_kernel(_spec("token_group", x.dtype, round_pow2, per), x.device)
    kern.launch((-(-groups // per), -(-m // 16)), (256,),
                [x, q, s, ctypes.c_int32(m), ctypes.c_int32(k), ctypes.c_int64(x.stride(0)),
                 ctypes.c_int32(tma_aligned_rows(m))])
    return q, s


def per_block_quant_fp8(x: torch.Tensor, round_pow2: bool = False, out=None):
    """Quantise weights per 128x128 block.

    x: [N, K] bf16/fp16/fp32 CUDA tensor, stride 1 along K, K % 16 == 0, 16-byte aligned rows.
    Returns ``(q, scales)``: q [N, K] float8_e4m3fn contiguous, scales [ceil(N/128), ceil(K/128)]
    fp32 contiguous. ``out=(q, scales)`` writes into given contiguous tensors.
    """
    _check_input(x)
    n, k = x.shape
    gn, gk = -(-n // GROUP), -(-k // GROUP)
    if out is None:
        q = torch.empty((n, k), dtype=torch.float8_e4m3fn, device=x.device)
        s = torch.empty((gn, gk), dtype=torch.float32, device=x.device)
    else:
        q, s = out
        check_tensor("out[0]", q, dtype=torch.float8_e4m3fn, shape=(n, k), contiguous=True)
        check_tensor("out[1]", s, dtype=torch.float32, shape=(gn, gk), contiguous=True)
        check_same_device(x=x, q=q, scales=s)
    if n == 0:
        return q, s
    kern = get_kernel(_spec("block", x.dtype, round_pow2), x.device)
    ctas = min(gn * gk, current_target(x.device).num_sms * 8)  # 8 resident 256-thread CTAs per SM
    kern.launch((ctas,), (256,), [x, q, s, ctypes.c_int32(n), ctypes.c_int32(k), ctypes.c_int64(x.stride(0))])
    return q, s


def warmup_specs(entries, target) -> list:
    """Kernels for a manifest's ``quant`` list: entries ``{"dtype": "bfloat16", "round_pow2": false,
    "kinds": ["token_group", "block"]}`` (all keys optional)."""
    specs = []
    for e in entries or [{}]:
        dtype = getattr(torch, e.get("dtype", "bfloat16"))
        pow2 = bool(e.get("round_pow2", False))
        for kind in e.get("kinds", ["token_group", "block"]):
            if kind == "token_group":
                specs += [_spec(kind, dtype, pow2, g) for g in TOKEN_GROUP_VARIANTS]
            else:
                specs.append(_spec(kind, dtype, pow2))
    return specs
