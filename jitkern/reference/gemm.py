"""Reference math for the dense GEMMs (plain torch, float64; CPU or GPU): the test oracle.

``D = dequant(A) @ dequant(B)^T (+ C)`` with DeepSeek-V3 scales: A per 1x128 group along K
(scales [M, ceil(K/128)], any strides), B per 128x128 block (scales [ceil(N/128), ceil(K/128)]).
"""
from __future__ import annotations

import torch

GROUP = 128


def dequant_rows(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(q [M, K] e4m3, scales [M, ceil(K/128)]) -> float64 [M, K]."""
    k = q.shape[1]
    return q.double() * scales.double().repeat_interleave(GROUP, dim=1)[:, :k]


def dequant_blocks(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(q [N, K] e4m3, scales [ceil(N/128), ceil(K/128)]) -> float64 [N, K]."""
    n, k = q.shape
    s = scales.double().repeat_interleave(GROUP, 0).repeat_interleave(GROUP, 1)[:n, :k]
    return q.double() * s


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
