"""MLA decode references: the float32 oracle, the split-KV partition model, and the plain-PyTorch
baseline the benchmark compares against.

Contract (shared with :mod:`jitkern.ops.mla`):
  q [b, s_q, h_q, 576], kv_cache [num_pages, page_size, 1, 576], block_table [b, max_pages] int32,
  cache_seqlens [b] int32. Request i holds L_i = max(cache_seqlens[i], 0) tokens; token j lives in
  page block_table[i, j // page_size], slot j % page_size. Its value is the first 512 dims.
  Query token t of request i is at position L_i - s_q + t; with ``causal`` it sees keys
  [0, L_i - s_q + t], otherwise keys [0, L_i).
  out [b, s_q, h_q, 512] = softmax(q k^T * scale) v; lse [b, h_q, s_q] = logsumexp(q k^T * scale).
  A query row that sees no key (L_i = 0, or L_i < s_q with causal) is defined as out = 0 and
  lse = -inf: never NaN.
"""
from __future__ import annotations

import torch

DIM_QK, DIM_V, BLOCK_N = 576, 512, 64


def gather_kv(kv_cache, block_table_row, length):
    """[length, 576] latent vectors of one request, in sequence order."""
    ps = kv_cache.shape[1]
    n = -(-length // ps)
    pages = block_table_row[:n].long()
    return kv_cache[pages].reshape(n * ps, -1)[:length]


def mla_decode_ref(q, kv_cache, block_table, cache_seqlens, softmax_scale=None, causal=True,
                   dtype=torch.float32):
    """Float32 (or ``dtype``) oracle, one request at a time, on q's device. Returns (out, lse)
    in ``dtype``."""
    b, s_q, h_q, d = q.shape
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    out = torch.zeros(b, s_q, h_q, DIM_V, dtype=dtype, device=q.device)
    lse = torch.full((b, h_q, s_q), float("-inf"), dtype=dtype, device=q.device)
    lens = cache_seqlens.tolist()
    for i in range(b):
        L = max(int(lens[i]), 0)
        if L == 0:
            continue
        kv = gather_kv(kv_cache, block_table[i], L).to(dtype)        # [L, 576]
        qi = q[i].to(dtype).reshape(s_q * h_q, d)                       # rows (t, h)
        s = (qi @ kv.T) * scale                                         # [R, L]
        if causal:
            t = torch.arange(s_q, device=q.device).repeat_interleave(h_q)
            lim = L - s_q + t                                           # last visible key
            keys = torch.arange(L, device=q.device)
            s = s.masked_fill(keys[None, :] > lim[:, None], float("-inf"))
        m = s.amax(-1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        p = torch.exp(s - m)
        l = p.sum(-1, keepdim=True)
        o = (p @ kv[:, :DIM_V]) / torch.where(l > 0, l, torch.ones_like(l))
        ls = torch.where(l > 0, m + torch.log(l), torch.full_like(l, float("-inf")))
        out[i] = o.reshape(s_q, h_q, DIM_V)
        lse[i] = ls.reshape(s_q, h_q).T
    return out, lse


def mla_metadata_ref(cache_seqlens, num_parts, overhead=5):
    """Python model of the GPU partition (bit-identical to ``mla_metadata``'s fields).

    Request i costs ceil(L_i / 64) tiles + ``overhead``; the total cost is cut into ``num_parts``
    ranges of width ceil(total / num_parts); a cut inside a request's overhead moves to its
    first tile. Returns a dict of lists: part_start [P+1] (global tile index), part_begin_req [P],
    tile_prefix [b+1], cost_prefix [b+1], num_splits [b], first_part [b], slot_offset [b],
    total_slots.
    """
    lens = [max(int(x), 0) for x in cache_seqlens]
    b, P = len(lens), num_parts
    nb = [-(-L // BLOCK_N) for L in lens]
    bpre, cpre = [0], [0]
    for n in nb:
        bpre.append(bpre[-1] + n)
        cpre.append(cpre[-1] + n + overhead)
    total = cpre[-1]
    width = max(-(-total // P), 1)
    g, begin = [], []
    for q in range(P + 1):
        x = min(q * width, total)
        if x >= total:
            gi, i = bpre[b], b - 1
        else:
            i = max(j for j in range(b + 1) if cpre[j] <= x)
            gi = bpre[i] + min(max(x - cpre[i] - overhead, 0), nb[i])
        g.append(gi)
        if q < P:
            begin.append(max(i, 0))
    nsplits, first, soff, acc = [], [], [], 0
    for i in range(b):
        s, e = bpre[i], bpre[i + 1]
        if e > s:
            f = max(p for p in range(P) if g[p] <= s)
            last = max(p for p in range(P) if g[p] <= e - 1)
            ns = last - f + 1
        else:
            f, ns = 0, 0
        nsplits.append(ns)
        first.append(f)
        soff.append(acc)
        acc += ns if ns > 1 else 0
    return {"part_start": g, "part_begin_req": begin, "tile_prefix": bpre, "cost_prefix": cpre,
            "num_splits": nsplits, "first_part": first, "slot_offset": soff, "total_slots": acc}


def mla_decode_plain(q, kv_cache, block_table, cache_seqlens, softmax_scale=None, causal=True):
    """What a user writes without a kernel (the bench baseline): gather every request's pages to
    the longest length, two batched einsums in q's dtype, a masked float32 softmax. Returns
    (out bf16-like q.dtype, lse fp32)."""
    b, s_q, h_q, d = q.shape
    ps = kv_cache.shape[1]
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    lens = cache_seqlens.long().clamp_min(0)
    n_pages = block_table.shape[1]
    kv = kv_cache[block_table.long()].reshape(b, n_pages * ps, d)        # [b, S, 576]
    S = kv.shape[1]
    s = torch.einsum("bqhd,bkd->bhqk", q, kv).float() * scale           # [b, h, s_q, S]
    keys = torch.arange(S, device=q.device)
    lim = lens[:, None] - (s_q - torch.arange(s_q, device=q.device))[None, :] if causal else \
        (lens[:, None] - 1).expand(b, s_q)                               # last visible key [b, s_q]
    mask = keys[None, None, :] > lim[:, :, None]                         # [b, s_q, S]
    s = s.masked_fill(mask[:, None], float("-inf"))
    lse = torch.logsumexp(s, -1)                                          # [b, h, s_q]
    p = torch.exp(s - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))[..., None])
    out = torch.einsum("bhqk,bkd->bqhd", p.to(q.dtype), kv[..., :DIM_V])
    return out, lse
