"""Reference math for FP8 (e4m3) quantisation with fp32 scales (DeepSeek-V3 recipe).

Per group of values (1x128 along K for activations, 128x128 blocks for weights):
    amax  = max |x| over the group (computed in fp32)
    scale = max(amax, 1e-4) / 448            (448 = largest finite e4m3fn)
    scale = 2 ** ceil(log2(scale))           only with round_pow2=True (exact, on the fp32 bits)
    q     = e4m3(x / scale)                  fp32 IEEE division, round to nearest even
The 1e-4 floor keeps all-zero groups finite (scale 2.23e-7, q = 0), as DeepGEMM does.

Non-finite policy: a group holding any NaN or +-inf gets scale = NaN and every one of its
elements the e4m3 NaN code 0x7F, so bad values never turn into plausible finite numbers.
Partial groups at the edge (K or N not a multiple of 128) use only their real elements.
"""
from __future__ import annotations

import torch

FP8_MAX = 448.0
AMAX_FLOOR = 1e-4
GROUP = 128
E4M3_NAN = 0x7F


def ceil_pow2(s: torch.Tensor) -> torch.Tensor:
    """Smallest power of two >= s, for positive normal fp32 s, computed on the bits (exact)."""
    bits = s.contiguous().view(torch.int32)
    exp = bits & 0x7F800000
    up = torch.where((bits & 0x007FFFFF) != 0, exp + 0x00800000, exp)
    return up.view(torch.float32)


def _scales(amax: torch.Tensor, finite: torch.Tensor, round_pow2: bool) -> torch.Tensor:
    s = amax.clamp_min(AMAX_FLOOR) / FP8_MAX
    if round_pow2:
        s = ceil_pow2(s)
    return torch.where(finite, s, torch.full_like(s, float("nan")))


def _cast(xf: torch.Tensor, scale: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    q = (xf / scale).to(torch.float8_e4m3fn)
    qb = q.view(torch.uint8)
    qb[bad] = E4M3_NAN
    return qb.view(torch.float8_e4m3fn)


def quant_token_group(x: torch.Tensor, round_pow2: bool = False):
    """x [M, K] (bf16/fp16/fp32) -> (q [M, K] e4m3fn, scales [M, ceil(K/128)] fp32, contiguous)."""
    m, k = x.shape
    g = -(-k // GROUP)
    xf = x.float()
    pad = g * GROUP - k
    xp = torch.nn.functional.pad(xf, (0, pad)).view(m, g, GROUP)
    amax = xp.abs().nan_to_num(nan=0.0, posinf=0.0).amax(dim=-1) if m else xp.new_zeros(m, g)
    finite = torch.isfinite(xp).all(dim=-1)
    s = _scales(amax, finite, round_pow2)
    sx = s.repeat_interleave(GROUP, dim=1)[:, :k]
    bad = (~finite).repeat_interleave(GROUP, dim=1)[:, :k]
    return _cast(xf, sx, bad), s


def quant_block(x: torch.Tensor, round_pow2: bool = False):
    """x [N, K] -> (q [N, K] e4m3fn, scales [ceil(N/128), ceil(K/128)] fp32) per 128x128 block."""
    n, k = x.shape
    gn, gk = -(-n // GROUP), -(-k // GROUP)
    xf = x.float()
    xp = torch.nn.functional.pad(xf, (0, gk * GROUP - k, 0, gn * GROUP - n))
    blocks = xp.view(gn, GROUP, gk, GROUP).permute(0, 2, 1, 3).reshape(gn, gk, GROUP * GROUP)
    amax = blocks.abs().nan_to_num(nan=0.0, posinf=0.0).amax(dim=-1) if blocks.numel() else blocks.new_zeros(gn, gk)
    finite = torch.isfinite(blocks).all(dim=-1)
    s = _scales(amax, finite, round_pow2)
    sx = s.repeat_interleave(GROUP, 0).repeat_interleave(GROUP, 1)[:n, :k]
    bad = (~finite).repeat_interleave(GROUP, 0).repeat_interleave(GROUP, 1)[:n, :k]
    return _cast(xf, sx, bad), s


def dequant_token_group(q: torch.Tensor, scales: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """(q [M, K] e4m3, scales [M, ceil(K/128)]) -> [M, K] in ``dtype`` (fp32 or fp64)."""
    k = q.shape[1]
    return q.to(dtype) * scales.to(dtype).repeat_interleave(GROUP, dim=1)[:, :k]


def dequant_block(q: torch.Tensor, scales: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """(q [N, K] e4m3, scales [ceil(N/128), ceil(K/128)]) -> [N, K] in ``dtype`` (fp32 or fp64)."""
    n, k = q.shape
    s = scales.to(dtype).repeat_interleave(GROUP, 0).repeat_interleave(GROUP, 1)[:n, :k]
    return q.to(dtype) * s
