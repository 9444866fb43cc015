"""Reference math for MoE routing (plain torch, any device)."""
from __future__ import annotations

import torch


def moe_align(topk_ids: torch.Tensor, num_experts: int, alignment: int):
    """Python-loop reference of :func:`jitkern.ops.moe.moe_align`: returns (group_index,
    row_of, token_of_row, num_rows, m_cap) as CPU tensors / ints."""
    ids = topk_ids.cpu().long()
    t, k = ids.shape
    a = alignment
    m_cap = (t * k + num_experts * (a - 1) + a - 1) // a * a
    group_index = torch.full((m_cap,), -1, dtype=torch.int32)
    token_of_row = torch.full((m_cap,), -1, dtype=torch.int32)
    row_of = torch.full((t, k), -1, dtype=torch.int32)
    r = 0
    for e in range(num_experts):
        start = r
        for ti in range(t):
            for j in range(k):
                if ids[ti, j] == e:
                    row_of[ti, j] = r
                    group_index[r] = e
                    token_of_row[r] = ti
                    r += 1
        r = start + (r - start + a - 1) // a * a
    return group_index, row_of, token_of_row, r, m_cap


def moe_permute(x: torch.Tensor, token_of_row: torch.Tensor) -> torch.Tensor:
    out = torch.zeros((token_of_row.numel(), x.shape[1]), dtype=x.dtype)
    live = token_of_row >= 0
    out[live] = x.cpu()[token_of_row[live].long()]
    return out


def moe_unpermute(y_perm: torch.Tensor, row_of: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """fp32 result: out[t] = sum_j w[t, j] * y_perm[row_of[t, j]] (row_of < 0 contributes 0)."""
    y = y_perm.cpu().float()
    rows = row_of.cpu().long()
    gathered = torch.where((rows >= 0)[..., None], y[rows.clamp_min(0)], torch.zeros(()))
    return (gathered * weights.cpu().float()[..., None]).sum(1)
