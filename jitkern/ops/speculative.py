"""Speculative-decoding verification: greedy and rejection-sampled acceptance of draft tokens,
one fused launch per call, no host sync (CUDA-graph capturable).

Ragged packed layout (shared by every function here), for ``b`` requests where request ``i``
proposes ``k_i >= 0`` draft tokens:

* ``cu_num_draft`` [b + 1] int32/int64: cumulative draft counts, ``cu[0] = 0``,
  ``k_i = cu[i+1] - cu[i]``.
* ``draft_tokens`` [sum k_i] int32/int64: request ``i``'s drafts at ``cu[i] .. cu[i+1]-1``.
* ``target_logits`` [sum (k_i + 1), V] bf16 or fp32, stride 1 along V: request ``i`` owns rows
  ``cu[i] + i .. cu[i+1] + i``; row ``cu[i] + i + j`` is the target's prediction for position j
  (it scores draft j for j < k_i; row ``j = k_i`` gives the bonus token).
* ``draft_probs`` [sum k_i, V] fp32, stride 1 along V (sampled only): the draft distribution q
  each draft token was sampled from, row-aligned with ``draft_tokens``.

Outputs: ``accepted`` [b] int32 (drafts accepted) and ``out_tokens`` [b, max_num_draft + 1]
int32: the accepted drafts, then one bonus/recovered token, then -1 padding. ``max_num_draft``
must bound every ``k_i`` (it cannot be checked without a host sync): a request with a larger
``k_i`` gets ``accepted = -1`` and a row of -1. Its default, ``len(draft_tokens)``, is always
safe but writes a wider output.

Preconditions not checked on the host (they would need a sync): ``cu`` is non-decreasing with
``cu[b] == len(draft_tokens)``; draft tokens in ``[0, V)`` (an out-of-range draft is rejected
by the sampled kernel and never matches in the greedy one).

Calls on one stream share a small zero-initialised counter buffer that each call leaves zeroed;
concurrent calls on different streams use different buffers.
"""
from __future__ import annotations

import ctypes
import functools

import torch

from ..runtime import KernelSpec, get_kernel
from .checks import check_same_device, check_tensor

_LOGIT_DTYPES = (torch.bfloat16, torch.float32)
_IDX_DTYPES = (torch.int32, torch.int64)
_CTYPE = {torch.bfloat16: "__nv_bfloat16", torch.float32: "float", torch.float16: "__half",
          torch.int32: "int32_t", torch.int64: "int64_t"}
GREEDY_THREADS, GREEDY_UNROLL = 256, 4
# Largest vocab chunk per CTA (elements). Measured on H100 (bench spec --sweep, V=129280 bf16):
# 65536 beat 4096/8192/16384/32768 and whole rows at b = 16, 64, 256 and tied at b = 1.
GREEDY_MAX_CHUNK = 65536
# verify_sampled: persistent work-queue kernel, 2 CTAs per SM (128 registers: no spills at 4 CTAs);
# 2 x 256 threads x 4 16-byte loads in flight = 32 KiB per SM, above the latency-bandwidth need.
# Measured on H100 (bench spec --sweep, V=129280 bf16, same run), unroll 4 vs 8: b=1 k=7 18.6 vs
# 19.6 us; b=16 k=7 42.4 vs 43.7; b=64 k=7 116.0 vs 124.8; b=256 k=3 278.7 vs 305.2 (ptxas:
# 64 vs 136 B of spill stores). Unroll 16 spills 400 B.
SAMPLED_THREADS, SAMPLED_UNROLL, SAMPLED_MIN_BLOCKS = 256, 4, 2
# Measured on H100 (bench spec, V=129280 bf16, 2 CTAs/SM): max chunk 65536 vs 16384: b=64 k=7
# 124.0 vs 149.4 us; b=256 k=3 306.4 vs 355.3 us; b=16 44.0 vs 45.5; b=1 18.9 vs 19.0.
# H200 (bench spec, three runs), 131072 (whole rows) vs 65536 at b=256 k=3: 169.8 / 178.7 / 178.6 vs
# 179.2 / 184.5 / 184.3 us; b=1, 16, 64 within 1%.
SAMPLED_MAX_CHUNK, SAMPLED_MIN_CHUNK = 131072, 2048
# Vocab tiles per resident CTA slot (phase A rows and phase B rows alike). Measured on H100 (bench
# spec --sweep, unroll 8), 2 vs 1 / 4 / 8: b=16 k=7 43.7 vs 46.9 / 47.0 / 57.6 us; b=64 k=7 124.8
# vs 124.0 / 130.9 / 142.1; b=256 k=3 305.2 vs 304.3 / 304.2 / 316.1. Where 2 per slot would need
# chunks below SAMPLED_MIN_CHUNK (b=1 k=7: 8 rows) one wave of tiles is used: 16.5 vs 19.6 us.
# Phase B on its own 1 / 4 / 8 / 16 tiles per slot (same run): b=16 45.5 / 47.5 / 47.2 / 47.5 us,
# b=64 133.9 / 120.6 / 124.9 / 144.2, b=256 300.9 / 304.2 / 319.1 / 326.2: no better overall.
# Interleaving B tiles with later requests' A tiles in the queue (0.5 / 1 / 2 / 4 waves of lag;
# B tiles then wait on their decision holding slots) was slower: b=256 697 / 449 / 331 / 316 us.
# Defaults together (bench spec, same H100, floor = logits + q bytes at copy bandwidth): b=1 k=7
# 15.5 us (8.2x), b=16 k=7 41.6 (1.37x), b=64 k=7 115.9 (0.95x), b=256 k=3 278.0 (1.25x).
# H200, since the B tiles compute their request's decision themselves (2026-12-03 session, run 5,
# scripts/sampled_ab.py, three interleaved rounds, us; A / B tiles per slot 2 / 2 (then the
# default), 1 / 2, 2 / 1, 1 / 1): b=16 k=7 33.0-33.2 / 29.3-29.5 / 33.0-33.1 / 29.2-29.5; b=32 k=7
# 49.1-49.3 / 44.9-45.0 / 47.8-47.9 / 45.2-45.5; b=64 k=7 75.0-75.3 / 75.1-75.3 / 73.8-73.9 /
# 73.7; b=256 k=3 153.7-153.8 / 153.8-153.9 / 149.9-150.1 / 149.7-150.1; b=1 12.6-13.0 in all.
# (B 0.5 per slot: b=64 72.6-72.8 but b=256 185.5.) Each B tile repeats the decision, so fewer B
# tiles cost less; fewer A tiles mean fewer arrivals for the B tiles to wait on.
SAMPLED_TILES_PER_SLOT = 1
# Phase B (sampling) tiles per slot, separately (measured above).
SAMPLED_B_TILES_PER_SLOT = 1
# Phase A per-thread L2 prefetch distance in passes (0 = off): 2 CTAs x 256 threads x 4 loads is
# 32 KiB in flight per SM, below what the H200 needs at DRAM latency. 1 since 2026-12-04 (the
# leaner phase-A loop and one-pass race; H200, scripts/sampled_ab.py, 6 interleaved rounds, us,
# 1 vs 2): b=8 k=7 21.5-21.9 vs 22.1-22.2, b=16 27.8-28.0 vs 28.3-28.4, b=32 42.4-42.7 vs 43.3-43.5,
# b=64 71.5-71.7 vs 71.9-72.2, b=256 k=3 147.0-147.5 vs 148.3-148.5, b=1 equal (11.3-11.5); bench
# spec, same run, 0 / 4 passes slower at b=16..256. (Before: 2 vs 0 / 1 / 4, b=64 81.2 vs 84.0 /
# 82.3 / 84.2 us, b=256 179.2 vs 185.5 / 180.4 / 182.9.)
SAMPLED_AHEAD = 1
# verify_sampled's top-k / top-p thresholds: False forces the threshold search for every filtered
# row (the bench times both; the GPU tests run both) instead of filter_fast's sort of the few
# candidates that can survive (templates/spec/sampled.cuh). verify_tree_sampled always searches.
SAMPLED_FILTER_FAST = True
# Dynamic shared memory of a launch whose requests may filter (the kFilter instantiation):
# filter_fast's kFilterCap (4096) candidate keys and their count.
SAMPLED_FILTER_SMEM = (4096 + 4) * 4  # the keys, then their count (16-byte padded)
TREE_SAMPLED_THREADS = 512
_SMEM_LIMIT = 227 * 1024 - 1024  # Hopper opt-in shared memory per CTA, minus the static part

_counters_by_stream: dict = {}
_keepalive: list = []  # old counter buffers stay alive: a captured CUDA graph may point at them


def _counters(device: torch.device, b: int) -> torch.Tensor:
    key = (device.index, torch.cuda.current_stream(device).cuda_stream)
    t = _counters_by_stream.get(key)
    if t is None or t.numel() < b:
        t = torch.zeros(max(b, 1024), dtype=torch.int32, device=device)
        _counters_by_stream[key] = t
        _keepalive.append(t)
    return t


@functools.lru_cache(maxsize=None)
def _num_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def greedy_spec(logit_dtype, tok_dtype, cu_dtype, vec: bool) -> KernelSpec:
    return KernelSpec("spec/greedy.cuh",
                      f"jitkern::verify_greedy<{_CTYPE[logit_dtype]}, {_CTYPE[tok_dtype]}, {_CTYPE[cu_dtype]}, "
                      f"{str(vec).lower()}, {GREEDY_THREADS}, {GREEDY_UNROLL}>", family="spec")


# Streaming greedy kernel (default): kUnroll 16-byte loads per thread in flight, kMinBlocks CTAs
# per SM (caps registers at 64/thread so the grid is one wave of resident CTAs walking tiles).
# Measured on H100 (bench spec, V=129280 bf16, copy 2979 GB/s), stream vs split: b=1 k=7 6.40 vs
# 7.00 us; b=16 k=7 19.6 vs 24.1 us; b=64 k=7 51.2 vs 69.1 us (86.8% vs 64.3% of the read floor);
# b=256 k=3 92.0 vs 132.0 us (96.6% vs 67.3%). Both bit-exact in the same GPU test run.
GREEDY_KERNEL = "stream"  # "stream" or "split" (the first kernel: one CTA per (row, chunk) tile)
STREAM_THREADS, STREAM_UNROLL, STREAM_MIN_BLOCKS = 256, 8, 4
STREAM_MIN_SPLITS = 1  # smaller tiles (more splits per row) shorten the tail of the last wave
# H200 (bench spec, copy 4194 GB/s): whole-row tiles where rows fill >= 93% of the slots (b=64 k=7:
# 512 rows on 528 slots) 34.1 us = 92.5% of the read floor; the earlier rule (at least one tile per
# slot, so 2 splits per row) 38.5 us = 81.8% (previous session, same kernel otherwise).


def greedy_stream_spec(logit_dtype, tok_dtype, cu_dtype) -> KernelSpec:
    return KernelSpec("spec/greedy.cuh",
                      f"jitkern::verify_greedy_stream<{_CTYPE[logit_dtype]}, {_CTYPE[tok_dtype]}, {_CTYPE[cu_dtype]}, "
                      f"{STREAM_THREADS}, {STREAM_UNROLL}, {STREAM_MIN_BLOCKS}>", family="spec")


def sampled_spec(logit_dtype, tok_dtype, cu_dtype, vec: bool, filtered: bool = False) -> KernelSpec:
    """verify_sampled's kernel; ``filtered``: the instantiation for launches that may use top-k /
    top-p (filter_fast; unfiltered launches keep the kernel without it, measured faster)."""
    return KernelSpec("spec/sampled.cuh",
                      f"jitkern::verify_sampled<{_CTYPE[logit_dtype]}, {_CTYPE[tok_dtype]}, {_CTYPE[cu_dtype]}, "
                      f"{str(vec).lower()}, {SAMPLED_THREADS}, {SAMPLED_UNROLL}, {SAMPLED_MIN_BLOCKS}, {SAMPLED_AHEAD}, "
                      f"{str(filtered).lower()}>", family="spec", defines=_filter_defines() if filtered else ())


def tree_sampled_spec(logit_dtype, tok_dtype, cu_dtype, vec: bool) -> KernelSpec:
    return KernelSpec("spec/sampled.cuh",
                      f"jitkern::verify_tree_sampled<{_CTYPE[logit_dtype]}, {_CTYPE[tok_dtype]}, {_CTYPE[cu_dtype]}, "
                      f"{str(vec).lower()}, {TREE_SAMPLED_THREADS}, {TREE_MAX_NODES}>", family="spec")


def _filter_defines() -> tuple:
    return () if SAMPLED_FILTER_FAST else (("JITKERN_FILTER_FAST", "0"),)


TREE_MAX_NODES = 256


def tree_greedy_spec(logit_dtype, tok_dtype, cu_dtype, vec: bool) -> KernelSpec:
    return KernelSpec("spec/greedy.cuh",
                      f"jitkern::verify_tree_greedy<{_CTYPE[logit_dtype]}, {_CTYPE[tok_dtype]}, {_CTYPE[cu_dtype]}, "
                      f"{str(vec).lower()}, {GREEDY_THREADS}, {GREEDY_UNROLL}, {TREE_MAX_NODES}>", family="spec")


# markov_draft measured on H100 (bench spec, V=129280, r=128, bf16, k=7; floor = w_out once per
# position + base at copy bandwidth): greedy b=1 81.2 us (96% of floor), b=16 129.6 (67%), b=64
# 303.2 (38%); sampled 99.9 / 169.5 / 565.1 us. Large batches are issue-bound in the per-element
# epilogue (8 warps per SM at ~250 registers: ~0.3 instructions per cycle per scheduler).
MARKOV_THREADS = 256


def markov_mtiles(b: int, rank: int) -> int:
    """m16 request tiles per pass over the vocabulary (requests per pass = 16 * this): the
    fewest that hold the batch, at most 4 (at most 2 for r = 256, whose 4-tile kernel spills);
    larger batches take several passes."""
    cap = 2 if rank == 256 else 4
    return min(cap, 1 if b <= 16 else (2 if b <= 32 else 4))


# How markov_draft samples (temperature > 0); both draw exactly from softmax(logits / T) over the
# tensor-core logits, with different random streams (templates/spec/markov.cuh,
# JITKERN_MARKOV_BLOCK_RACE): "token" = Gumbel-max over every token, one Philox block per 4 tokens
# (measured: H100 2026-12-07, 87.8 / 91.2 / 153.9 / 536.4 us at b = 1 / 2 / 16 / 64, k = 7);
# "block" = a two-level race over each lane's 8 (r = 256: 4) consecutive tokens, one Philox block per
# 16 (8) tokens of two requests and one exp per token. "block" is not yet measured on a GPU.
MARKOV_SAMPLERS = ("token", "block")
MARKOV_SAMPLER = "token"


def markov_spec(base_dtype, tok_dtype, rank: int, sampled: bool = False, mtiles: int = 4,
                vec: bool = True, sampler: str | None = None) -> KernelSpec:
    """markov_draft's tensor-core kernel; ``sampler`` (sampled kernels only): one of
    MARKOV_SAMPLERS, default MARKOV_SAMPLER."""
    sampler = MARKOV_SAMPLER if sampler is None else sampler
    if sampler not in MARKOV_SAMPLERS:
        raise ValueError(f"sampler: expected one of {MARKOV_SAMPLERS}, got {sampler!r}")
    defines = (("JITKERN_MARKOV_BLOCK_RACE", "1"),) if sampled and sampler == "block" else ()
    return KernelSpec("spec/markov.cuh",
                      f"jitkern::markov_draft<{_CTYPE[base_dtype]}, {_CTYPE[tok_dtype]}, {rank}, {mtiles}, "
                      f"{str(sampled).lower()}, {str(vec).lower()}>", defines=defines, family="spec")


_MARKOV_SMEM_LIMIT = 227 * 1024 - 6 * 1024  # opt-in shared memory minus the kernel's static arrays

# Greedy batches up to this size take markov_draft_exact (CUDA-core logits in the reference's
# order, w_out cached in shared memory): exact by construction, no candidate pass. 0 = always the
# tensor-core kernel. H200 (r=128, k=7, scripts/markov_ab.py exact, 3 rounds, third 2026-12-02
# session): b=1 62.5-62.7 vs 74.2-74.4 us (tensor-core); b=2 78.5-78.7 vs 75.9-76.2 us, so b=2 takes
# the tensor-core kernel since its Top1 / fragment-order h rework (before it: 80.5-80.8 vs 81.0-81.6).
MARKOV_EXACT_MAX_B = 1


# Largest batch one markov_draft_exact kernel serves (its kMaxB): 2, the build that was measured and
# GPU-tested (test_markov_small_batch_both_kernels runs it at b = 1 and 2).
MARKOV_EXACT_KERNEL_B = 2


def markov_exact_spec(base_dtype, tok_dtype, rank: int) -> KernelSpec:
    return KernelSpec("spec/markov.cuh",
                      f"jitkern::markov_draft_exact<{_CTYPE[base_dtype]}, {_CTYPE[tok_dtype]}, {rank}, "
                      f"{max(MARKOV_EXACT_MAX_B, MARKOV_EXACT_KERNEL_B)}>", family="spec")


def markov_exact_cache_rows(V: int, num_sms: int, rank: int) -> int:
    """w_out rows of each CTA's vocabulary slice kept in shared memory by markov_draft_exact."""
    return min(-(-V // num_sms), _MARKOV_SMEM_LIMIT // (rank * 2))


def markov_smem_bytes(base_bytes: int, rank: int, mtiles: int, cache_blocks: int = 0) -> int:
    """Dynamic shared memory of markov_draft (mirrors the kernel's layout): h [16*mtiles][rank]
    bf16 (in mma fragment order), per-warp double-buffered base tiles [8][2][16*mtiles][block rows
    (+pad)], then the w_out tile cache: 8 warps x cache_blocks x (block rows x rank) bf16."""
    br = 32 if rank <= 128 else 16
    brs = br + (4 if base_bytes == 4 and br == 32 else 0)
    bp = 16 * mtiles
    return bp * rank * 2 + 8 * 2 * bp * brs * base_bytes + 8 * cache_blocks * br * rank * 2


def markov_cache_blocks(V: int, num_sms: int, base_bytes: int, rank: int, mtiles: int) -> int:
    """w_out blocks per warp kept in shared memory across positions: as many as fit, at most the
    warp's share of its CTA's slice (8 warps per CTA, one CTA per SM)."""
    br = 32 if rank <= 128 else 16
    nblk = -(-V // br)
    per_warp = -(-(-(-nblk // num_sms)) // 8)
    cb = 0
    while cb < per_warp and markov_smem_bytes(base_bytes, rank, mtiles, cb + 1) <= _MARKOV_SMEM_LIMIT:
        cb += 1
    return cb


def markov_scratch_words(b: int, k: int, bounds: bool) -> int:
    """u32 words of a markov kernel's zeroed scratch: [barrier, exit, -, -], k*b u64 argmax keys, and
    with ``bounds`` (greedy markov_draft) k*b u64 grid lower bounds; the kernels leave it zero and
    their trace stamps (scripts/markov_trace.py) follow it."""
    return 4 + (4 if bounds else 2) * k * b


def select_spec(dtype) -> KernelSpec:
    return KernelSpec("spec/greedy.cuh", f"jitkern::select_draft_length<{_CTYPE[dtype]}>", family="spec")


def _aligned16(t: torch.Tensor) -> bool:
    return t.data_ptr() % 16 == 0 and (t.shape[0] <= 1 or (t.stride(0) * t.element_size()) % 16 == 0)


def _check_ragged(target_logits, draft_tokens, cu_num_draft, max_num_draft):
    check_tensor("target_logits", target_logits, dtype=_LOGIT_DTYPES, ndim=2, inner_contiguous=True)
    check_tensor("draft_tokens", draft_tokens, dtype=_IDX_DTYPES, ndim=1, contiguous=True)
    check_tensor("cu_num_draft", cu_num_draft, dtype=_IDX_DTYPES, ndim=1, contiguous=True)
    check_same_device(target_logits=target_logits, draft_tokens=draft_tokens, cu_num_draft=cu_num_draft)
    if cu_num_draft.numel() < 1:
        raise ValueError("cu_num_draft: expected b + 1 >= 1 entries, got 0")
    b = cu_num_draft.numel() - 1
    rows, V = target_logits.shape
    n = draft_tokens.numel()
    if rows != n + b:
        raise ValueError(f"target_logits: expected len(draft_tokens) + b = {n} + {b} = {n + b} rows "
                         f"(k_i + 1 per request), got {rows}")
    if V < 1:
        raise ValueError("target_logits: expected a vocabulary of at least 1 column")
    if V >= 2 ** 31 - 1 or rows * max(V, 1) >= 2 ** 62:
        raise ValueError(f"target_logits: shape {tuple(target_logits.shape)} too large")
    if max_num_draft is None:
        max_num_draft = n
    if not isinstance(max_num_draft, int) or max_num_draft < 0:
        raise ValueError(f"max_num_draft: expected a non-negative int, got {max_num_draft!r}")
    return b, rows, V, max_num_draft


def _outputs(b, max_num_draft, device, out):
    if out is None:
        return (torch.empty(b, dtype=torch.int32, device=device),
                torch.empty((b, max_num_draft + 1), dtype=torch.int32, device=device))
    acc, toks = out
    check_tensor("out[0]", acc, dtype=torch.int32, shape=(b,), contiguous=True, device=device)
    check_tensor("out[1]", toks, dtype=torch.int32, shape=(b, max_num_draft + 1), contiguous=True, device=device)
    return acc, toks


def greedy_config(rows: int, V: int, num_sms: int, max_chunk: int | None = None):
    """(splits, chunk): vocab chunks per row. Small batches split rows until the grid has about
    four CTAs per SM (latency); large ones cap a chunk at ``max_chunk`` elements (default
    GREEDY_MAX_CHUNK, picked by measurement). Chunks are multiples of 8 elements (16-byte vectors)."""
    if max_chunk is None:
        max_chunk = GREEDY_MAX_CHUNK
    max_splits = max(1, -(-V // 2048))
    splits = max(-(-V // max_chunk), min(max_splits, -(-num_sms * 4 // max(rows, 1))))
    splits = max(1, min(splits, -(-V // 8)))
    chunk = -(-V // splits)
    chunk = -(-chunk // 8) * 8
    splits = -(-V // chunk)
    return splits, chunk


def greedy_stream_config(rows: int, V: int, num_sms: int, min_blocks: int | None = None,
                         min_splits: int | None = None):
    """(splits, chunk, grid) for the streaming kernel: the fewest splits per row (at least
    ``min_splits``, default STREAM_MIN_SPLITS) whose tile count ``rows * splits`` fills the
    ``num_sms * min_blocks`` resident CTA slots in whole waves (>= 93% of the last wave used; a
    partial first wave counts as one), chunks of at least 2048 elements; grid = min(tiles, slots).
    Fewer, longer tiles mean fewer reductions and arrivals per CTA. Chunks are multiples of 8
    elements (16-byte vectors for bf16 and fp32)."""
    slots = num_sms * (min_blocks or STREAM_MIN_BLOCKS)
    max_splits = max(1, -(-V // 2048))
    lo = max(1, min(max_splits, min_splits or STREAM_MIN_SPLITS))
    pick, pick_eff = lo, -1.0
    for s in range(lo, min(max_splits, lo + 64) + 1):
        tiles = rows * s
        eff = tiles / (-(-tiles // slots) * slots)
        if eff > pick_eff + 1e-9:
            pick, pick_eff = s, eff
        if eff >= 0.93:
            break
    chunk = -(-V // pick)
    chunk = -(-chunk // 8) * 8
    splits = -(-V // chunk)
    return splits, chunk, min(rows * splits, slots)


def verify_greedy(target_logits: torch.Tensor, draft_tokens: torch.Tensor, cu_num_draft: torch.Tensor,
                  max_num_draft: int | None = None, out=None):
    """Greedy verification: request i accepts the longest draft prefix equal to the target's
    argmax at each position, then emits the argmax at the first mismatch (or after the last
    draft). Bit-identical to ``torch.argmax`` decoding: ties (and -0/+0) go to the lowest index,
    NaN counts as the maximum.

    Layout: module docstring. Returns ``(accepted [b] int32, out_tokens [b, max_num_draft+1] int32)``;
    ``out=(accepted, out_tokens)`` writes into given contiguous int32 tensors of those shapes.
    """
    b, rows, V, max_num_draft = _check_ragged(target_logits, draft_tokens, cu_num_draft, max_num_draft)
    dev = target_logits.device
    accepted, out = _outputs(b, max_num_draft, dev, out)
    if b == 0:
        return accepted, out
    nsm = _num_sms(dev.index if dev.index is not None else torch.cuda.current_device())
    counters = _counters(dev, b)
    vec = _aligned16(target_logits)
    if GREEDY_KERNEL == "stream" and vec:
        splits, chunk, grid = greedy_stream_config(rows, V, nsm)
        partial = torch.empty(rows * splits, dtype=torch.int64, device=dev)
        kern = get_kernel(greedy_stream_spec(target_logits.dtype, draft_tokens.dtype, cu_num_draft.dtype), dev)
        kern.launch((grid,), (STREAM_THREADS,),
                    [target_logits, ctypes.c_int64(target_logits.stride(0)), ctypes.c_int32(V), ctypes.c_int32(chunk),
                     ctypes.c_int32(splits), ctypes.c_int32(rows * splits), draft_tokens, cu_num_draft,
                     ctypes.c_int32(b), partial, counters, accepted, out, ctypes.c_int32(max_num_draft + 1)])
        return accepted, out
    splits, chunk = greedy_config(rows, V, nsm)
    partial = torch.empty(rows * splits, dtype=torch.int64, device=dev)
    kern = get_kernel(greedy_spec(target_logits.dtype, draft_tokens.dtype, cu_num_draft.dtype, vec), dev)
    kern.launch((rows * splits,), (GREEDY_THREADS,),
                [target_logits, ctypes.c_int64(target_logits.stride(0)), ctypes.c_int32(V), ctypes.c_int32(chunk),
                 ctypes.c_int32(splits), draft_tokens, cu_num_draft, ctypes.c_int32(b), partial, counters,
                 accepted, out, ctypes.c_int32(max_num_draft + 1)])
    return accepted, out


class _Knobs(ctypes.Structure):
    """By-value mirror of ``jitkern::spec::Knobs`` (templates/spec/sampled.cuh): per-request
    pointers (0 = use the scalar) and scalars for temperature, top-k and top-p."""
    _fields_ = [("temps", ctypes.c_void_p), ("temp", ctypes.c_float), ("topks", ctypes.c_void_p),
                ("topk", ctypes.c_int32), ("topps", ctypes.c_void_p), ("topp", ctypes.c_float)]


def _per_request_ptr(name: str, t: torch.Tensor, dtype, b: int, ref: torch.Tensor):
    """Validate a per-request knob tensor (``dtype``, [b], contiguous, on ``ref``'s device)."""
    check_tensor(name, t, dtype=dtype, shape=(b,), contiguous=True)
    check_same_device(target_logits=ref, **{name: t})
    return t.data_ptr() or None


def _sampling_knobs(b: int, ref: torch.Tensor, temperature, top_k, top_p) -> _Knobs:
    """Validate temperature / top_k / top_p (scalar or per-request [b] tensor) into a _Knobs."""
    kn = _Knobs()
    if isinstance(temperature, torch.Tensor):
        kn.temps, kn.temp = _per_request_ptr("temperature", temperature, torch.float32, b, ref), 0.0
    else:
        t = float(temperature)
        if not t >= 0.0:
            raise ValueError(f"temperature: expected >= 0, got {temperature!r}")
        kn.temps, kn.temp = None, t
    if isinstance(top_k, torch.Tensor):
        kn.topks, kn.topk = _per_request_ptr("top_k", top_k, torch.int32, b, ref), 0
    elif top_k is None:
        kn.topks, kn.topk = None, 0
    else:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k: expected None, an int >= 1 or an int32 tensor [b], got {top_k!r}")
        kn.topks, kn.topk = None, min(top_k, 2 ** 31 - 1)
    if isinstance(top_p, torch.Tensor):
        kn.topps, kn.topp = _per_request_ptr("top_p", top_p, torch.float32, b, ref), 1.0
    elif top_p is None:
        kn.topps, kn.topp = None, 1.0
    else:
        p = float(top_p)
        if not 0.0 < p <= 1.0:
            raise ValueError(f"top_p: expected None, a float in (0, 1] or an fp32 tensor [b], got {top_p!r}")
        kn.topps, kn.topp = None, p
    return kn


def _filter_smem(kn: _Knobs, V: int) -> int:
    """Dynamic shared memory for a sampled launch: SAMPLED_FILTER_SMEM where a request may filter."""
    may = kn.topks is not None or kn.topps is not None or 0 < kn.topk < V or kn.topp < 1.0
    return SAMPLED_FILTER_SMEM if may else 0


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 64:
        raise ValueError(f"seed: expected an int in [0, 2**64), got {seed!r}")


RACE_BLOCK = 256  # tokens per race block of verify_sampled (32 lanes x 8 bf16; fp32 blocks are 128)


def sampled_tiles(rows: int, V: int, slots: int, max_chunk: int | None = None, min_chunk: int | None = None,
                  per_slot: float | None = None, align: int = 8):
    """(splits, chunk) of verify_sampled's vocab tiles for ``rows`` rows: about ``per_slot``
    (default SAMPLED_TILES_PER_SLOT) tiles per resident CTA slot (the work queue balances them),
    or one per slot where that many would need chunks below ``min_chunk`` (default
    SAMPLED_MIN_CHUNK); chunks at most ``max_chunk`` (SAMPLED_MAX_CHUNK) elements, multiples of
    ``align`` (8: 16-byte vectors for bf16 and fp32; the sampling tiles use RACE_BLOCK so that a
    tile holds whole race blocks)."""
    max_chunk = max_chunk or SAMPLED_MAX_CHUNK
    min_chunk = min_chunk or SAMPLED_MIN_CHUNK
    per_slot = per_slot or SAMPLED_TILES_PER_SLOT
    max_splits = max(1, -(-V // min_chunk))
    want = max(1, -(-int(per_slot * slots) // max(rows, 1)))
    if want > max_splits:  # small batch: one wave of tiles instead of a partial second one
        want = max(1, -(-slots // max(rows, 1)))
    splits = max(-(-V // max_chunk), min(want, max_splits))
    chunk = -(-V // splits)
    chunk = -(-chunk // align) * align
    return -(-V // chunk), chunk


# False: sampled_launch_tiles uses sampled_tiles for the A tiles too (no whole-row rule; A/B switch).
SAMPLED_TILE_RULES = True


def sampled_launch_tiles(rows: int, b: int, V: int, slots: int):
    """(splits, chunk, splits_b, chunk_b) of a verify_sampled launch: :func:`sampled_tiles` for the
    A tiles (rows) and the B tiles (requests, SAMPLED_B_TILES_PER_SLOT), except that the A tiles are
    whole rows where the rows alone fill at least 1.5 waves of slots at >= 93% (as the greedy
    stream kernel): fewer partials and arrivals. Measured (H200, V = 129280 bf16, 264 slots,
    2026-12-03 run 9, scripts/sampled_ab.py): b=64 k=7 (512 rows) 78.8-79.3 us vs 81.9 with two
    tiles per row.
    """
    whole_rows = SAMPLED_TILE_RULES and rows >= 1.5 * slots and rows / (-(-rows // slots) * slots) >= 0.93
    # whole rows: the fewest tiles sampled_tiles allows (one per row, up to SAMPLED_MAX_CHUNK each)
    splits, chunk = sampled_tiles(rows, V, slots, per_slot=1e-9) if whole_rows else sampled_tiles(rows, V, slots)
    return (splits, chunk) + sampled_tiles(b, V, slots, per_slot=SAMPLED_B_TILES_PER_SLOT, align=RACE_BLOCK)


def sampled_sync_words(b: int) -> int:
    """int32 words of verify_sampled's sync scratch: counters [2b + 2], then (8-byte aligned) one u64
    race slot per request (templates/spec/sampled.cuh)."""
    return ((2 * b + 3) & ~1) + 2 * b


def verify_sampled(target_logits: torch.Tensor, draft_tokens: torch.Tensor, draft_probs: torch.Tensor,
                   cu_num_draft: torch.Tensor, temperature=1.0, top_k=None, top_p=None, seed: int = 0,
                   max_num_draft: int | None = None, out=None):
    """Rejection-sampled verification (Leviathan et al. 2023; Chen et al. 2023), one launch.

    Target distribution of row j (every row of the request, drafts and bonus alike):
    temperature, then top-k, then top-p, i.e. the distribution the target would sample from:

    * temperature T: p = softmax(logits / T); T == 0: one-hot at the argmax (lowest index on
      ties, i.e. greedy; top-k/top-p then change nothing).
    * top_k = k: keep every token whose logit is >= the k-th largest logit (ties at the k-th
      value are all kept, so more than k tokens may survive); k >= V keeps all.
    * top_p = P (FlashInfer / vLLM semantics): over the top-k survivors, keep the smallest set of
      most probable tokens whose probability mass is >= P, plus every token tied with the least
      probable kept one; P >= 1 keeps all. Then renormalise.

    Draft j is accepted with probability min(1, p_j(x_j) / q_j(x_j)) (test ``u * q < p``, u uniform
    in [0, 1)); a draft outside [0, V) or with p_j(x_j) = 0 is rejected. At the first rejection
    one token is drawn from normalize(max(0, p_j - q_j)); if that residual has zero mass (only
    through rounding, or a q that does not sum to 1) it is drawn from p_j instead. If every draft
    is accepted a bonus token is drawn from p_k. The emitted tokens follow p exactly (up to fp32
    rounding of p and 23-bit uniforms).

    draft_probs: the draft's probabilities q, fp32 [sum k_i, V] (not logits). temperature: float
    >= 0 or fp32 tensor [b]. top_k: None, int >= 1, or int32 tensor [b] (entries < 1 or >= V:
    no top-k for that request). top_p: None, float in (0, 1], or fp32 tensor [b] (entries >= 1 or
    NaN: no top-p; entries <= 0 keep only the most probable token and its ties). seed: int in
    [0, 2**64); random numbers are Philox4x32-10 of (seed, request, position[, token block]), so
    they depend on the seed and the request's index only, and a call repeated on the same inputs
    returns the same tokens. The row statistics (max, normaliser) are merged from per-chunk
    partials in chunk order, and the chunking follows the batch size and the GPU's SM count:
    another batch or GPU can move p by fp32 rounding, which changes a decision only where it is
    tied to that rounding. Sampling is a two-level race: fixed blocks of 256 tokens (128 for fp32
    logits) race exponentially with their summed weights, then the winning block is inverted by
    its CDF, both in one pass over the emitted row (templates/spec/sampled.cuh), so only that row
    is read a second time.
    Layout and outputs (and ``out=``): module docstring and :func:`verify_greedy`.
    Cost: without top-k/top-p the logits are read once plus one row per request (and q at the
    draft tokens plus one q row per rejecting request). A row of a request with top-k/top-p is
    handled whole by one CTA. Where its survivors provably lie among <= 4096 candidates (V <= 4096;
    top_k <= 256; top_p alone when the tokens that cannot survive carry the mass) that is the argmax
    pass, one collecting pass and a sort of the candidates; otherwise (top_k > 256, top_p alone over
    a flat distribution) a threshold search of about 5-8 passes over the row, 8-22x slower than
    the unfiltered path (H100, b=64, k=7: 1267 vs 116 us). Both give the same thresholds (top-p:
    up to the summation order of fp32 masses). docs/PERFORMANCE.md has the measured figures.
    """
    b, rows, V, max_num_draft = _check_ragged(target_logits, draft_tokens, cu_num_draft, max_num_draft)
    check_tensor("draft_probs", draft_probs, dtype=torch.float32, shape=(draft_tokens.numel(), V),
                 inner_contiguous=True)
    check_same_device(target_logits=target_logits, draft_probs=draft_probs)
    _check_seed(seed)
    knobs = _sampling_knobs(b, target_logits, temperature, top_k, top_p)
    dev = target_logits.device
    accepted, out = _outputs(b, max_num_draft, dev, out)
    if b == 0:
        return accepted, out
    slots = _num_sms(dev.index if dev.index is not None else torch.cuda.current_device()) * SAMPLED_MIN_BLOCKS
    splits, chunk, splits_b, chunk_b = sampled_launch_tiles(rows, b, V, slots)
    grid = min(slots, rows * splits + b * splits_b)
    # One scratch allocation: rowstat [rows] 16 B, then partial [rows*splits] 8 B (aligned).
    n_rs, n_pa = 4 * rows, 2 * rows * splits
    scratch = torch.empty(n_rs + n_pa, dtype=torch.int32, device=dev)
    sync = _counters(dev, sampled_sync_words(b))
    vec = _aligned16(target_logits) and _aligned16(draft_probs)
    smem = _filter_smem(knobs, V)
    kern = get_kernel(sampled_spec(target_logits.dtype, draft_tokens.dtype, cu_num_draft.dtype, vec, smem > 0), dev)
    kern.launch((grid,), (SAMPLED_THREADS,),
                [target_logits, ctypes.c_int64(target_logits.stride(0)), draft_probs,
                 ctypes.c_int64(draft_probs.stride(0) if draft_probs.shape[0] else V), ctypes.c_int32(V),
                 ctypes.c_int32(rows), ctypes.c_int32(chunk), ctypes.c_int32(splits), ctypes.c_int32(chunk_b),
                 ctypes.c_int32(splits_b), draft_tokens, cu_num_draft, ctypes.c_int32(b), knobs,
                 ctypes.c_uint64(seed), scratch[n_rs:], scratch[:n_rs], sync,
                 accepted, out, ctypes.c_int32(max_num_draft + 1)], smem=smem)
    return accepted, out


def verify_tree_sampled(target_logits: torch.Tensor, tree_tokens: torch.Tensor, tree_parents: torch.Tensor,
                        draft_probs: torch.Tensor, cu_num_nodes: torch.Tensor, temperature=1.0, top_k=None,
                        top_p=None, seed: int = 0, max_depth: int | None = None, out=None):
    """Rejection-sampled verification of Eagle-style token trees (multi-candidate recursive
    rejection sampling: SpecInfer, Miao et al. 2024; Eagle's multi-round speculative sampling),
    one launch (one CTA per request).

    Tree layout as :func:`verify_tree_greedy`: request i owns nodes ``cu_num_nodes[i] ..
    cu_num_nodes[i+1]-1`` (at least one; the first is the root, whose token is ignored);
    ``tree_tokens`` [N] int32/int64, ``tree_parents`` [N] int32 relative to the request's first
    node (-1 for the root); ``target_logits`` [N, V] bf16/fp32: the target's prediction after
    each node; at most 256 nodes per request. ``draft_probs`` [N, V] fp32, one row per node: the
    distribution q_c that node c's token was drawn from (the root's row is unused). Exactness
    needs each child's token drawn independently from its q row given its parent (siblings from
    the same q: i.i.d. draws, not top-k without replacement).

    Walk: p = target distribution at the current node (temperature, top-k, top-p exactly as
    :func:`verify_sampled`); W = p, R = 1. Try the node's children in increasing index order:
    child c with token x is accepted with probability min(1, (W(x) / R) / q_c(x)) (uniform keyed
    by (seed, request, current node, ordinal of c among the tried children)); accepted: move to c
    and restart with c's p. Rejected: W <- max(0, W / R - q_c), R <- sum W (if that residual has
    zero mass W is kept). When no child is accepted (a leaf: the bonus from p; otherwise the final
    residual) one token is drawn from W / R. The emitted sequence follows the target
    distribution exactly. A chain (node j+1 the only child of node j) gives the same random
    numbers and distribution as :func:`verify_sampled` with the same seed.

    Returns ``(accepted [b] int32, out_tokens [b, max_depth + 1] int32, path [b, max_depth + 1]
    int32)``: accepted path length without the root; the accepted tokens then the emitted one;
    the path's node indices relative to the request (root first) for KV-cache compaction; -1
    padded. ``max_depth`` bounds every accepted path (default ``min(N, 256) - 1``, always safe);
    a request that breaks a bound gets ``accepted = -1`` and -1 rows. temperature / top_k /
    top_p / seed: as :func:`verify_sampled` (a filtered node's thresholds always come from the
    threshold search, the slow path of verify_sampled). ``out=(accepted, out_tokens, path)``.
    Scratch: 2 x V fp32 per request (the residual).
    """
    b, rows, V = _check_tree(target_logits, tree_tokens, tree_parents, cu_num_nodes)
    if V < 1 or V >= 2 ** 31 - 8:
        raise ValueError(f"target_logits: vocabulary {V} out of range")
    check_tensor("draft_probs", draft_probs, dtype=torch.float32, shape=(rows, V), inner_contiguous=True)
    check_same_device(target_logits=target_logits, draft_probs=draft_probs)
    _check_seed(seed)
    knobs = _sampling_knobs(b, target_logits, temperature, top_k, top_p)
    if max_depth is None:
        max_depth = max(0, min(rows, TREE_MAX_NODES) - 1)
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0:
        raise ValueError(f"max_depth: expected a non-negative int, got {max_depth!r}")
    dev = target_logits.device
    cols = max_depth + 1
    if out is None:
        out = tuple(torch.empty(s, dtype=torch.int32, device=dev) for s in ((b,), (b, cols), (b, cols)))
    else:
        for i, (t, s) in enumerate(zip(out, ((b,), (b, cols), (b, cols)))):
            check_tensor(f"out[{i}]", t, dtype=torch.int32, shape=s, contiguous=True, device=dev)
    acc, toks, path = out
    if b == 0:
        return acc, toks, path
    res_ld = -(-V // 4) * 4
    scratch = torch.empty((b, 2, res_ld), dtype=torch.float32, device=dev)
    vec = _aligned16(target_logits)
    kern = get_kernel(tree_sampled_spec(target_logits.dtype, tree_tokens.dtype, cu_num_nodes.dtype, vec), dev)
    kern.launch((b,), (TREE_SAMPLED_THREADS,),
                [target_logits, ctypes.c_int64(target_logits.stride(0)), draft_probs,
                 ctypes.c_int64(draft_probs.stride(0) if rows else V), ctypes.c_int32(V), tree_tokens,
                 tree_parents, cu_num_nodes, ctypes.c_int32(b), knobs, ctypes.c_uint64(seed), scratch,
                 ctypes.c_int64(res_ld), acc, toks, path, ctypes.c_int32(cols)])
    return acc, toks, path


def _check_tree(target_logits, tree_tokens, tree_parents, cu_num_nodes):
    """Validate the packed token-tree layout shared by the tree verifiers; returns (b, rows, V)."""
    check_tensor("target_logits", target_logits, dtype=_LOGIT_DTYPES, ndim=2, inner_contiguous=True)
    check_tensor("tree_tokens", tree_tokens, dtype=_IDX_DTYPES, ndim=1, contiguous=True)
    check_tensor("tree_parents", tree_parents, dtype=torch.int32, ndim=1, contiguous=True)
    check_tensor("cu_num_nodes", cu_num_nodes, dtype=_IDX_DTYPES, ndim=1, contiguous=True)
    check_same_device(target_logits=target_logits, tree_tokens=tree_tokens, tree_parents=tree_parents,
                      cu_num_nodes=cu_num_nodes)
    if cu_num_nodes.numel() < 1:
        raise ValueError("cu_num_nodes: expected b + 1 >= 1 entries, got 0")
    b = cu_num_nodes.numel() - 1
    rows, V = target_logits.shape
    if tree_tokens.numel() != rows or tree_parents.numel() != rows:
        raise ValueError(f"tree_tokens/tree_parents: expected {rows} entries (one per logits row), got "
                         f"{tree_tokens.numel()} and {tree_parents.numel()}")
    if b and rows < b:
        raise ValueError(f"target_logits: expected at least one row (the root) per request, got {rows} rows for b={b}")
    return b, rows, V


def verify_tree_greedy(target_logits: torch.Tensor, tree_tokens: torch.Tensor, tree_parents: torch.Tensor,
                       cu_num_nodes: torch.Tensor, max_depth: int | None = None, out=None):
    """Greedy verification of Eagle-style token trees, one launch.

    Request i owns nodes ``cu_num_nodes[i] .. cu_num_nodes[i+1]-1`` (at least one: node 0 of the
    request is the root, i.e. the last verified token; its token is ignored). Per node:
    ``tree_tokens`` [N] int32/int64 (the drafted token), ``tree_parents`` [N] int32 (parent index
    relative to the request's first node, -1 for the root; a child's index need not exceed its
    parent's), ``target_logits`` [N, V] bf16/fp32 (the target's prediction after that node).
    At most 256 nodes per request.

    From the root, step to the lowest-index child whose token equals the current node's argmax
    (torch.argmax semantics) until none does; emit that argmax as the bonus token.
    Returns ``(accepted [b] int32, out_tokens [b, max_depth + 1] int32, path [b, max_depth + 1]
    int32)``: accepted path length without the root; the accepted tokens then the bonus; the
    path's node indices relative to the request (root first) for KV-cache compaction; -1 padded.
    ``max_depth`` must bound every accepted path (default ``min(N, 256) - 1``, always safe);
    a request that breaks a bound gets ``accepted = -1`` and -1 rows.
    ``out=(accepted, out_tokens, path)`` writes into given contiguous int32 tensors.
    """
    b, rows, V = _check_tree(target_logits, tree_tokens, tree_parents, cu_num_nodes)
    if max_depth is None:
        max_depth = max(0, min(rows, TREE_MAX_NODES) - 1)
    if not isinstance(max_depth, int) or max_depth < 0:
        raise ValueError(f"max_depth: expected a non-negative int, got {max_depth!r}")
    dev = target_logits.device
    cols = max_depth + 1
    if out is None:
        acc = torch.empty(b, dtype=torch.int32, device=dev)
        toks = torch.empty((b, cols), dtype=torch.int32, device=dev)
        path = torch.empty((b, cols), dtype=torch.int32, device=dev)
    else:
        acc, toks, path = out
        check_tensor("out[0]", acc, dtype=torch.int32, shape=(b,), contiguous=True, device=dev)
        check_tensor("out[1]", toks, dtype=torch.int32, shape=(b, cols), contiguous=True, device=dev)
        check_tensor("out[2]", path, dtype=torch.int32, shape=(b, cols), contiguous=True, device=dev)
    if b == 0:
        return acc, toks, path
    splits, chunk = greedy_config(rows, V, _num_sms(dev.index if dev.index is not None else torch.cuda.current_device()))
    partial = torch.empty(rows * splits, dtype=torch.int64, device=dev)
    counters = _counters(dev, b)
    kern = get_kernel(tree_greedy_spec(target_logits.dtype, tree_tokens.dtype, cu_num_nodes.dtype,
                                       _aligned16(target_logits)), dev)
    kern.launch((rows * splits,), (GREEDY_THREADS,),
                [target_logits, ctypes.c_int64(target_logits.stride(0)), ctypes.c_int32(V), ctypes.c_int32(chunk),
                 ctypes.c_int32(splits), tree_tokens, tree_parents, cu_num_nodes, ctypes.c_int32(b), partial,
                 counters, acc, toks, path, ctypes.c_int32(cols)])
    return acc, toks, path


def markov_draft(base_logits: torch.Tensor, first_prev: torch.Tensor, w_in: torch.Tensor, w_out: torch.Tensor,
                 temperature: float = 0.0, seed: int = 0, out: torch.Tensor | None = None) -> torch.Tensor:
    """DSpark's sequential low-rank Markov draft head, all k positions in one launch.

    For t = 0..k-1 and each request i: ``logits = base_logits[i, t] + w_out @ w_in[prev_i]``,
    next = argmax (temperature 0) or a sample from softmax(logits / temperature), then
    ``prev_i = next`` (``prev_i`` starts at ``first_prev[i]``).

    Greedy is bit-identical to :func:`jitkern.reference.speculative.markov_draft_greedy`, which
    defines the logits exactly: fp32, ``acc = 0; acc = acc + w_out[v, c] * h[c]`` for c = 0..r-1
    in increasing order (each bf16 x bf16 product rounded to fp32 on its own, never fused), then
    ``base + acc``; next = torch.argmax (lowest index on ties, NaN wins). The kernel computes all
    logits with tensor cores and recomputes in that exact order every token a rigorous error bound
    cannot rule out, so the result does not depend on tensor-core rounding. Sampled: an exact
    sample of softmax(logits / temperature) over the tensor-core logits, Philox4x32-10 keyed by the
    seed, request, position and token group; deterministic for a seed on a given GPU model. How
    (MARKOV_SAMPLER): "token", Gumbel-max over every token (one draw per token), or "block", a
    two-level race over groups of 8 tokens (4 at r = 256) and an inverse-CDF pick inside the
    winning group; the two give different (equally distributed) draws for a seed. Tokens whose
    logit is -inf or NaN are never drawn.

    base_logits: [b, k, V] bf16/fp32, V contiguous, positions V apart. first_prev: [b]
    int32/int64 in [0, V) (clamped). w_in, w_out: [V, r] bf16 contiguous, 16-byte aligned, r in
    {64, 128, 256}. Returns int32 [b, k]. The kernel is persistent (one CTA per SM, a software
    grid barrier between positions) and needs a whole SM per CTA: kernels on other streams only
    delay it. A greedy batch of up to MARKOV_EXACT_MAX_B (1) requests computes every logit on the CUDA
    cores in the reference's order instead (exact by construction). Batches above 64 requests (32 for r = 256) take several passes over w_out per
    position. As much of each CTA's w_out slice as fits stays in shared memory across positions. ``out``: an int32 [b, k] contiguous tensor to write into.
    """
    check_tensor("base_logits", base_logits, dtype=_LOGIT_DTYPES, ndim=3, inner_contiguous=True)
    check_tensor("first_prev", first_prev, dtype=_IDX_DTYPES, ndim=1, contiguous=True)
    b, k, V = base_logits.shape
    if first_prev.numel() != b:
        raise ValueError(f"first_prev: expected {b} entries, got {first_prev.numel()}")
    check_tensor("w_in", w_in, dtype=torch.bfloat16, ndim=2, contiguous=True, align_bytes=16)
    r = w_in.shape[1]
    if r not in (64, 128, 256):
        raise ValueError(f"w_in: expected rank r in (64, 128, 256), got {r}")
    check_tensor("w_in", w_in, shape=(V, r))
    check_tensor("w_out", w_out, dtype=torch.bfloat16, shape=(V, r), contiguous=True, align_bytes=16)
    check_same_device(base_logits=base_logits, first_prev=first_prev, w_in=w_in, w_out=w_out)
    if base_logits.stride(1) != V and k > 1:
        raise ValueError(f"base_logits: expected stride {V} between positions, got {base_logits.stride(1)}")
    if V >= 2 ** 31 - 1:
        raise ValueError(f"base_logits: vocabulary {V} too large")
    temperature = float(temperature)
    if not temperature >= 0.0:
        raise ValueError(f"temperature: expected >= 0, got {temperature}")
    if not isinstance(seed, int) or not 0 <= seed < 2 ** 64:
        raise ValueError(f"seed: expected an int in [0, 2**64), got {seed!r}")
    dev = base_logits.device
    if out is None:
        out = torch.empty((b, k), dtype=torch.int32, device=dev)
    else:
        check_tensor("out", out, dtype=torch.int32, shape=(b, k), contiguous=True, device=dev)
    if b == 0 or k == 0:
        return out
    esz = base_logits.element_size()
    G = _num_sms(dev.index if dev.index is not None else torch.cuda.current_device())
    sampled = temperature > 0.0
    if not sampled and b <= MARKOV_EXACT_MAX_B:
        rows = markov_exact_cache_rows(V, G, r)
        sync = _counters(dev, markov_scratch_words(b, k, bounds=False))
        kern = get_kernel(markov_exact_spec(base_logits.dtype, first_prev.dtype, r), dev)
        kern.launch((G,), (MARKOV_THREADS,),
                    [base_logits, ctypes.c_int64(base_logits.stride(0)), ctypes.c_int32(V), ctypes.c_int32(k),
                     ctypes.c_int32(b), first_prev, w_in, w_out, sync, out, ctypes.c_int32(rows)],
                    smem=rows * r * 2)
        return out
    mt = markov_mtiles(b, r)
    cb = markov_cache_blocks(V, G, esz, r, mt)
    smem = markov_smem_bytes(esz, r, mt, cb)
    vec = (base_logits.data_ptr() % 16 == 0 and (V * esz) % 16 == 0
           and (b == 1 or (base_logits.stride(0) * esz) % 16 == 0))
    sync = _counters(dev, markov_scratch_words(b, k, bounds=not sampled))
    kern = get_kernel(markov_spec(base_logits.dtype, first_prev.dtype, r, sampled, mt, vec), dev)
    kern.launch((G,), (MARKOV_THREADS,),
                [base_logits, ctypes.c_int64(base_logits.stride(0)), ctypes.c_int32(V), ctypes.c_int32(k),
                 ctypes.c_int32(b), first_prev, w_in, w_out, ctypes.c_float(temperature if sampled else 1.0),
                 ctypes.c_uint64(seed), sync, out, ctypes.c_int32(cb)], smem=smem)
    return out


def select_draft_length(confidence_logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """DSpark draft length per request: the longest prefix j of ``confidence_logits[i, :]`` with
    ``sigmoid(c) >= threshold`` at every position, computed on the GPU.

    confidence_logits: [b, k] bf16/fp16/fp32, stride 1 along k. Returns int32 [b] in [0, k].
    """
    check_tensor("confidence_logits", confidence_logits, dtype=(torch.bfloat16, torch.float16, torch.float32),
                 ndim=2, inner_contiguous=True)
    threshold = float(threshold)
    b, k = confidence_logits.shape
    out = torch.empty(b, dtype=torch.int32, device=confidence_logits.device)
    if b == 0:
        return out
    kern = get_kernel(select_spec(confidence_logits.dtype), confidence_logits.device)
    kern.launch((-(-b // 4),), (128,), [confidence_logits, ctypes.c_int64(confidence_logits.stride(0)),
                                       ctypes.c_int32(b), ctypes.c_int32(k), ctypes.c_float(threshold), out])
    return out


def warmup_specs(entries, target) -> list:
    """Kernels for a manifest's ``spec`` list: entries ``{"dtype": "bfloat16", "token_dtype":
    "int64", "cu_dtype": "int32", "kinds": ["greedy", "sampled", "tree_greedy", "tree_sampled", "select"]}`` (keys optional).
    Kind ``"markov"`` (not a default; add ``"rank": r``) gives markov_draft's greedy and sampled
    kernels for every request-tile count."""
    specs = []
    for e in entries or [{}]:
        dt = getattr(torch, e.get("dtype", "bfloat16"))
        tk = getattr(torch, e.get("token_dtype", "int64"))
        cu = getattr(torch, e.get("cu_dtype", "int32"))
        for kind in e.get("kinds", ["greedy", "sampled", "tree_greedy", "tree_sampled", "select"]):
            if kind == "greedy":
                specs.append(greedy_stream_spec(dt, tk, cu) if GREEDY_KERNEL == "stream" else greedy_spec(dt, tk, cu, True))
            elif kind == "sampled":
                specs += [sampled_spec(dt, tk, cu, True, filtered) for filtered in (False, True)]
            elif kind == "tree_greedy":
                specs.append(tree_greedy_spec(dt, tk, cu, True))
            elif kind == "tree_sampled":
                specs.append(tree_sampled_spec(dt, tk, cu, True))
            elif kind == "select":
                specs.append(select_spec(dt))
            elif kind == "markov":  # base dtype = dtype, first_prev dtype = token_dtype, rank r
                r = int(e.get("rank", 128))
                for mt in sorted({markov_mtiles(b, r) for b in (1, 32, 64)}):
                    specs += [markov_spec(dt, tk, r, sampled, mt, True) for sampled in (False, True)]
                if MARKOV_EXACT_MAX_B:
                    specs.append(markov_exact_spec(dt, tk, r))
    return specs
