"""Reference math for the dense GEMMs (plain torch, float64; CPU or GPU): the test oracle.

``D = dequant(A) @ dequant(B)^T (+ C)`` with DeepSeek-V3 scales: A per 1x128 group along K
(scales [M, ceil(K/128)], any strides), B per 128x128 block (scales [ceil(N/128), ceil(K/128)]).
"""
from __future__ import annotations

import torch

from .quant import dequant_block, dequant_token_group



def dequant_rows(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(q [M, K] e4m3, scales [M, ceil(K/128)]) -> float64 [M, K]."""
    return dequant_token_group(q, scales, torch.float64)


def dequant_blocks(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(q [N, K] e4m3, scales [ceil(N/128), ceil(K/128)]) -> float64 [N, K]."""
    return dequant_block(q, scales, torch.float64)


def gemm_fp8_nt_ref(a, b, c=None) -> torch.Tensor:
    """a = (A [M, K] e4m3, sa [M, ceil(K/128)]), b = (B [N, K] e4m3, sb [ceil(N/128), ceil(K/128)]);
    returns float64 [M, N] = dequant(A) @ dequant(B)^T (+ c)."""
    d = dequant_rows(*a) @ dequant_blocks(*b).t()
    return d + c.double() if c is not None else d


def gemm_bf16_nt_ref(a: torch.Tensor, b: torch.Tensor, c=None) -> torch.Tensor:
    """a [M, K], b [N, K] (any float dtype) -> float64 [M, N] = a @ b^T (+ c)."""
    d = a.double() @ b.double().t()
    return d + c.double() if c is not None else d


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref|| in float64 (inf when x has a non-finite value, 0 for 0 == 0)."""
    x = x.double()
    ref = ref.double().to(x.device)
    if not torch.isfinite(x).all():
        return float("inf")
    den = ref.norm().item()
    num = (x - ref).norm().item()
    return num / den if den else num


def bf16_output_bound(ref: torch.Tensor, kernel_err: float = 5e-4, bound: float = 2e-3,
                      concentrated: int = 4096) -> float:
    """Bound on ||bf16 kernel output - ref|| / ||ref|| for an exact float64 `ref`.

    Rounding the exact result to bf16 (8-bit significand) costs ~1.66e-3 on random data. On an
    output of >= `concentrated` elements that figure stays within 1.74e-3 (max of 3000 draws of
    4096), so the issue's `bound` (2e-3) applies as written. On a small output it spreads (up to
    2.44e-3 over 3000 draws of 64 elements), and the bound becomes what the triangle inequality
    gives: the bf16 rounding of `ref` itself plus the kernel's own arithmetic error `kernel_err`
    (the fp32-output path's bound), never less than `bound`.
    """
    if ref.numel() >= concentrated:
        return bound
    r = ref.double()
    return max(bound, rel_err(r.to(torch.bfloat16), r) + kernel_err)


def _grouped_b(b, fp8: bool) -> torch.Tensor:
    """B [G, N, K] (+ scales [G, ceil(N/128), ceil(K/128)] when fp8) -> float64 [G, N, K]."""
    if fp8:
        B, sb = b
        return torch.stack([dequant_blocks(B[g], sb[g]) for g in range(B.shape[0])]) if B.shape[0] else B.double()
    return b.double()


def grouped_contiguous_ref(a, b, group_index: torch.Tensor, fp8: bool = True) -> torch.Tensor:
    """Contiguous-layout grouped GEMM: row r of D = A[r] @ B[group_index[r]]^T; rows with
    group_index -1 are zero. a: (A, sa) for fp8 or A [M_total, K]; b: (B, sb) or B [G, N, K]."""
    ad = dequant_rows(*a) if fp8 else a.double()
    bd = _grouped_b(b, fp8)
    d = torch.zeros(ad.shape[0], bd.shape[1], dtype=torch.float64, device=ad.device)
    gi = group_index.to(ad.device).long()
    for g in range(bd.shape[0]):
        rows = (gi == g).nonzero().flatten()
        if rows.numel():
            d[rows] = ad[rows] @ bd[g].t()
    return d


def grouped_masked_ref(a, b, masked_m: torch.Tensor, fp8: bool = True) -> torch.Tensor:
    """Masked-layout grouped GEMM: D[g, :m_g] = A[g, :m_g] @ B[g]^T with m_g = clamp(masked_m[g],
    0, max_m); rows past m_g are NaN (the kernel leaves them untouched). a: (A [G, max_m, K], sa
    [G, max_m, ceil(K/128)]) or A; b: (B, sb) or B [G, N, K]."""
    if fp8:
        A, sa = a
        g_, max_m, k = A.shape
        ad = dequant_rows(A.reshape(g_ * max_m, k), sa.reshape(g_ * max_m, -1)).view(g_, max_m, k)
    else:
        ad = a.double()
        g_, max_m, _ = ad.shape
    bd = _grouped_b(b, fp8)
    d = torch.full((g_, max_m, bd.shape[1]), float("nan"), dtype=torch.float64, device=ad.device)
    for g in range(g_):
        mg = max(0, min(int(masked_m[g]), max_m))
        if mg:
            d[g, :mg] = ad[g, :mg] @ bd[g].t()
    return d
