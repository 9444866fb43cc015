"""Mixture-of-experts routing for the grouped GEMMs: router output -> padded expert-contiguous
layout (``moe_align`` + ``moe_permute``) and back (``moe_unpermute``), on the GPU, with no host
synchronisation (fixed worst-case sizes, so a decode step can be captured in a CUDA graph).

Contiguous layout: the rows routed to expert ``e`` occupy one block of ``align(count_e, A)`` rows
(A = :func:`jitkern.ops.gemm.grouped_m_alignment`), experts in ascending order, each expert's rows in token order
(stable). Padding rows have ``group_index == -1`` and zero inputs. The layout has ``m_cap =
align(T*k + G*(A-1), A)`` rows, enough for any routing; ``num_rows`` (a device int32 [1]) holds
how many are used.
"""
from __future__ import annotations

import ctypes
import typing

import torch

from ..runtime import KernelSpec, get_kernel
from .checks import check_same_device, check_tensor
from .gemm import GROUPED_M_ALIGNMENT

TEMPLATE = "moe/route.cuh"
# Rows per expert block in the contiguous layout: the grouped GEMM's alignment, so no M tile
# straddles two experts.
M_ALIGNMENT = GROUPED_M_ALIGNMENT
_TOPK_VARIANTS = (1, 2, 4, 6, 8, 9)  # compiled top-k widths for moe_unpermute


class MoeLayout(typing.NamedTuple):
    """Padded expert-contiguous layout of a routing.

    group_index [m_cap] int32: expert of each row, -1 on padding rows (the grouped GEMM's input).
    row_of [T, k] int32: row holding token t's j-th routing, -1 if its expert id was out of range.
    token_of_row [m_cap] int32: source token of each row, -1 on padding rows.
    num_rows [1] int32 (device): rows in use (the rest of m_cap is trailing padding).
    m_cap: total rows (host int, worst case; fixed for a given T, k, G).
    """
    group_index: torch.Tensor
    row_of: torch.Tensor
    token_of_row: torch.Tensor
    num_rows: torch.Tensor
    m_cap: int


def layout_rows(num_tokens: int, top_k: int, num_experts: int, alignment: int = M_ALIGNMENT) -> int:
    a = alignment
    return (num_tokens * top_k + num_experts * (a - 1) + a - 1) // a * a


def moe_align(topk_ids: torch.Tensor, num_experts: int, alignment: int = M_ALIGNMENT) -> MoeLayout:
    """Router output -> :class:`MoeLayout`.

    topk_ids: [T, k] int32/int64 tensor of expert ids (CUDA; CPU works too, for tests). Ids outside [0, num_experts) (for
    example -1 for experts owned by another rank) are dropped: no row, ``row_of == -1``.
    Deterministic: rows of an expert keep token order (stable sort).
    """
    check_tensor("topk_ids", topk_ids, dtype=(torch.int32, torch.int64), ndim=2, cuda=False)
    if not isinstance(num_experts, int) or num_experts < 1:
        raise ValueError(f"num_experts: expected a positive int, got {num_experts!r}")
    if not isinstance(alignment, int) or alignment < 1:
        raise ValueError(f"alignment: expected a positive int, got {alignment!r}")
    t, k = topk_ids.shape
    dev = topk_ids.device
    m_cap = layout_rows(t, k, num_experts, alignment)
    flat = topk_ids.reshape(-1).to(torch.int64)
    valid = (flat >= 0) & (flat < num_experts)
    key = torch.where(valid, flat, torch.full_like(flat, num_experts))  # dropped ids sort last
    sorted_key, order = torch.sort(key, stable=True)
    counts = torch.zeros(num_experts + 1, dtype=torch.int64, device=dev).scatter_add_(0, key, torch.ones_like(key))
    counts = counts[:num_experts]
    padded = (counts + alignment - 1) // alignment * alignment
    pstart = torch.cumsum(padded, 0) - padded
    start = torch.cumsum(counts, 0) - counts
    e = sorted_key.clamp_max(num_experts - 1)
    sorted_valid = sorted_key < num_experts
    rank = torch.arange(t * k, device=dev) - start[e]
    row = torch.where(sorted_valid, pstart[e] + rank, torch.full_like(rank, -1))
    row_of = torch.empty(t * k, dtype=torch.int32, device=dev)
    row_of[order] = row.to(torch.int32)
    group_index = torch.full((m_cap,), -1, dtype=torch.int32, device=dev)
    token_of_row = torch.full((m_cap,), -1, dtype=torch.int32, device=dev)
    # dropped entries write to a scratch slot past the end, then get cut off
    dest = torch.where(sorted_valid, row, torch.full_like(row, m_cap))
    gi = torch.cat([group_index, group_index.new_full((1,), -1)])
    tr = torch.cat([token_of_row, token_of_row.new_full((1,), -1)])
    gi[dest] = e.to(torch.int32)
    tr[dest] = (order // k).to(torch.int32)
    gi[m_cap:].fill_(-1)  # a slice fill, not a Python-scalar assignment: no host copy in graph capture
    tr[m_cap:].fill_(-1)
    num_rows = padded.sum().to(torch.int32).reshape(1)
    return MoeLayout(gi[:m_cap], row_of.view(t, k), tr[:m_cap], num_rows, m_cap)


def _spec(name: str) -> KernelSpec:
    return KernelSpec(TEMPLATE, name, family="moe")


def moe_permute(x: torch.Tensor, layout: MoeLayout) -> torch.Tensor:
    """x [T, H] (any dtype; row bytes a multiple of 16, stride 1 along H, 16-byte aligned) ->
    x_perm [m_cap, H] in the layout's row order, zeros on padding rows."""
    check_tensor("x", x, ndim=2, inner_contiguous=True, align_bytes=16)
    t, h = x.shape
    if (h * x.element_size()) % 16 or (t > 1 and (x.stride(0) * x.element_size()) % 16):
        raise ValueError(f"x: expected rows and row stride of a multiple of 16 bytes, got H={h} {x.dtype}")
    if layout.token_of_row.shape != (layout.m_cap,):
        raise ValueError("layout: token_of_row does not match m_cap")
    check_same_device(x=x, token_of_row=layout.token_of_row)
    out = torch.empty((layout.m_cap, h), dtype=x.dtype, device=x.device)
    if layout.m_cap == 0 or h == 0:
        return out
    vec = h * x.element_size() // 16
    rows_per_cta = 4
    get_kernel(_spec(f"jitkern::moe_gather_rows<{rows_per_cta}>"), x.device).launch(
        (-(-layout.m_cap // rows_per_cta),), (min(256, max(32, vec)),),
        [x, out, layout.token_of_row, ctypes.c_int32(layout.m_cap), ctypes.c_int32(vec),
         ctypes.c_int64(x.stride(0) * x.element_size() // 16 if t > 1 else vec), ctypes.c_int32(t)])
    return out


def moe_unpermute(y_perm: torch.Tensor, layout: MoeLayout, topk_weights: torch.Tensor, out=None) -> torch.Tensor:
    """y_perm [m_cap, N] bf16 (expert outputs in the layout) -> out [T, N] bf16 with
    ``out[t] = sum_j topk_weights[t, j] * y_perm[row_of[t, j]]`` accumulated in fp32.
    topk_weights: [T, k] fp32. N % 8 == 0; stride 1 along N, 16-byte aligned rows."""
    t, k = layout.row_of.shape
    check_tensor("y_perm", y_perm, dtype=torch.bfloat16, shape=(layout.m_cap, None), inner_contiguous=True, align_bytes=16)
    n = y_perm.shape[1]
    if n % 8 or (y_perm.stride(0) % 8 and layout.m_cap > 1):
        raise ValueError(f"y_perm: expected N and the row stride to be multiples of 8, got N={n}, stride {y_perm.stride(0)}")
    check_tensor("topk_weights", topk_weights, dtype=torch.float32, shape=(t, k), contiguous=True)
    if k not in _TOPK_VARIANTS:
        raise ValueError(f"layout: top-k {k} not supported; expected one of {_TOPK_VARIANTS}")
    if out is None:
        out = torch.empty((t, n), dtype=torch.bfloat16, device=y_perm.device)
    else:
        check_tensor("out", out, dtype=torch.bfloat16, shape=(t, n), contiguous=True)
    check_same_device(y_perm=y_perm, topk_weights=topk_weights, out=out, row_of=layout.row_of)
    if t == 0 or n == 0:
        return out
    get_kernel(_spec(f"jitkern::moe_combine<{k}>"), y_perm.device).launch(
        (t,), (128,), [y_perm, out, layout.row_of, topk_weights, ctypes.c_int32(n // 8),
                       ctypes.c_int64(y_perm.stride(0) // 8), ctypes.c_int64(n // 8)])
    return out


def warmup_specs(entries, target) -> list:
    """Kernels for a manifest's ``moe`` list: entries ``{"top_k": 8}``."""
    specs = [_spec("jitkern::moe_gather_rows<4>")]
    for e in entries or [{}]:
        k = int(e.get("top_k", 8))
        if k not in _TOPK_VARIANTS:
            raise ValueError(f"moe manifest entry: top_k {k} not in {_TOPK_VARIANTS}")
        specs.append(_spec(f"jitkern::moe_combine<{k}>"))
    return specs
