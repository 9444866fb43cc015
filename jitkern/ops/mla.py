"""MLA decode (DeepSeek multi-head latent attention) over a paged latent KV cache, sm_90a.

Shapes and layouts (all CUDA tensors on one device):
  q            [b, s_q, h_q, 576] bf16, contiguous, 16-byte aligned. The s_q query tokens of a
               request are the last s_q positions of its sequence (speculative verification).
  kv_cache     [num_pages, page_size, 1, 576] bf16, contiguous, 16-byte aligned; page_size a
               multiple of 64. The first 512 dims of a token's latent vector are its value.
  block_table  [b, max_pages] int32, stride 1 along pages (any row stride).
  cache_seqlens [b] int32, contiguous, any value >= 0 (negative values count as 0).
Results: out [b, s_q, h_q, 512] bf16 and lse [b, h_q, s_q] fp32 (natural log).

Semantics (float32 oracle: :func:`jitkern.reference.mla.mla_decode_ref`): query token t of a
request of length L sees keys [0, L - s_q + t] with ``causal=True``, keys [0, L) otherwise. A row
that sees no key (L = 0, or L < s_q with causal) gets out = 0 and lse = -inf, never NaN.

Work split: :func:`mla_metadata` cuts the batch's 64-token tiles into ``num_parts`` equal-cost
contiguous ranges on the GPU (no host sync, fixed-size output, CUDA-graph capturable, reusable
by every layer of one decode step). The decode kernel runs one CTA per (64-row query block,
part); requests split across parts are merged by a combine kernel.

block_table too short for cache_seqlens (a request needs ceil(L / page_size) > max_pages
pages) cannot be seen on the host without a sync: the kernel then reads the last column instead
(never out of bounds) and sets bit 0 of ``metadata.error``; :func:`mla_check_errors` (which
syncs) raises the ValueError. Page ids outside [0, num_pages) read zeros (TMA bounds).
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import math
import os

import torch

from ..runtime import KernelSpec, get_kernel
from .checks import check_same_device, check_tensor

DIM_QK = 576
DIM_V = 512
BLOCK_M = 64
BLOCK_N = 64
FIXED_OVERHEAD = 5  # a request's fixed cost (Q load, output write, combine) in tiles
MAX_HEADS = 128
MAX_Q_TOKENS = 8
_DECODE_THREADS = 384
_SMEM_BYTES = 3 * 73728 + 8192 + 1024 + 8 * (2 * 9 + 2 + 2 + 2 + 2 + 2)  # kSmemBytes in mla.cuh

_TEMPLATE = "mla/mla.cuh"
# Tensor-core decode paths: impl name -> (kMode bits of mla_decode_kernel: 1 pipe, 2 split, 4 lazy,
# 8 per-chunk barriers, 16 S(j+1) right behind PV(j); see templates/mla/mla.cuh, and the combine kernel: "wide" = one CTA per row).
_DECODE_MODES = {"wgmma": (0, "narrow"), "wgmma_pipe": (1, "narrow"), "wgmma_lazy": (4, "narrow"),
                 "wgmma_pipe_lazy": (5, "narrow"), "wgmma_split": (6, "narrow"), "wgmma_split_pipe": (7, "narrow"),
                 "wgmma_wc": (0, "wide"), "wgmma_chunk": (8, "narrow"), "wgmma_chunk_wc": (8, "wide"),
                 "wgmma_chunk_lazy_wc": (12, "wide"), "wgmma_ov": (16, "narrow"), "wgmma_ov_wc": (16, "wide"),
                 "wgmma_chunk_ov": (24, "narrow"), "wgmma_chunk_ov_wc": (24, "wide"),
                 # FlashMLA-style seesaw schedule (mla.cuh kMode 32)
                 "wgmma_seesaw": (32, "narrow"), "wgmma_seesaw_wc": (32, "wide"),
                 # transposed tiles (S^T = K Q^T, O^T = V^T P^T) for h_q * s_q <= 32 (mla.cuh kMode 64)
                 "wgmma_t": (64, "narrow"), "wgmma_t_wc": (64, "wide")}
# impls that take only query blocks of at most this many rows (h_q * s_q)
NARROW_ROWS_IMPLS, NARROW_ROWS = ("wgmma_t", "wgmma_t_wc"), 32
_MODE_SPECS = {m: KernelSpec(_TEMPLATE, f"jitkern::mla::mla_decode_kernel<{m}>", family="mla")
               for m in sorted({m for m, _ in _DECODE_MODES.values()})}
DECODE_SPECS = {k: _MODE_SPECS[m] for k, (m, _) in _DECODE_MODES.items()}
DEFAULT_IMPL = "wgmma"
# Few requests: many KV parts per request. SMALL_BATCH_IMPL's per-chunk barriers measured best at
# b=1 (H100, s_k=32768, h_q=128: 42.3 us against 53.5 us for "wgmma"; at b >= 32 2-10% slower).
SMALL_BATCH, SMALL_BATCH_IMPL = 2, "wgmma_chunk_wc"
# At most 32 query rows per request (e.g. 16 heads x 2 tokens, a TP-sharded DeepSeek layer): the
# transposed tiles, whose wgmma do no work for rows that do not exist (H200, 2026-12-02 run 5, us,
# wgmma / wgmma_t: b=64 s_k=4096 h_q=16 s_q=2 97.5 / 92.4; b=128 s_k=8192 h_q=16 s_q=2 380.8 / 311.5;
# b=64 h_q=32 s_q=1 97.9 / 92.6; b=32 h_q=8 s_q=4 56.0 / 53.7; b=1 s_k=32768 h_q=16: 58.3 / 56.4,
# with the wide combine 38.2).
# The wide combine (one 512-thread CTA per query row, every split in flight) where a request has at
# least WIDE_COMBINE_MIN_SPLITS parts (num_parts >= that x b; equal lengths), the warp one below.
# Measured (H200, 2026-12-02 second session run 5, scripts/mla_profile.py, whole call us,
# narrow / wide): h_q=16 s_q=2 s_k=4096: b=16 (8 splits) 35.3 / 41.7, b=8 (16) 24.6 / 26.8, b=4
# (33) 21.8 / 17.8, b=2 (66) 23.1 / 17.1; h_q=128: b=2 s_k=16384 s_q=2 (16) 52.8 / 59.9, b=2 s_q=1
# (33) 41.7 / 39.7, b=1 s_k=32768 s_q=2 (33) 58.2 / 56.3.
WIDE_COMBINE_MIN_SPLITS = 32
NOMINAL_SMS = 132  # H100 SXM / H200: default_impl's part count when it is not given
# 128 heads with several query tokens: the seesaw schedule (one warpgroup's softmax under the
# other's GEMM) measured 5% faster (H200, b=128 s_k=8192 s_q=2: 1175 vs 1237 us; b=32 s_k=4096
# s_q=4: 293 vs 304-314 us, two rounds each); at s_q = 1 it was -5% (b=64 s_k=4096) to +3%
# (b=128 s_k=8192) and at 16 heads -6%, so only this case takes it.
MANY_ROWS_IMPL = "wgmma_seesaw"


def default_impl(b: int, s_q: int, h_q: int, num_parts: int | None = None) -> str:
    """The decode path mla_decode takes when ``impl`` is None (before ``$JITKERN_MLA_IMPL``), for
    metadata of ``num_parts`` parts (None: ``default_num_parts`` on NOMINAL_SMS SMs)."""
    if num_parts is None:
        num_parts = default_num_parts(NOMINAL_SMS, s_q, h_q, b)
    wide = num_parts >= WIDE_COMBINE_MIN_SPLITS * b
    if h_q * s_q <= NARROW_ROWS:
        return NARROW_ROWS_IMPLS[1] if wide else NARROW_ROWS_IMPLS[0]
    if b <= SMALL_BATCH:
        return SMALL_BATCH_IMPL if wide else "wgmma_chunk"
    if h_q == MAX_HEADS and s_q >= 2:
        return MANY_ROWS_IMPL
    return DEFAULT_IMPL
SPEC_DECODE = DECODE_SPECS[DEFAULT_IMPL]
SPEC_DECODE_PIPE = DECODE_SPECS["wgmma_pipe"]
# Combine kernels by the impl's kind: "wide" (the *_wc impls) the ring kernel, mla.cuh
# mla_combine_kernel<kRows, kGroups, kStages> (kRows query rows per CTA, kGroups x 128 threads per
# row each summing every kGroups-th split, a ring of kStages 16 KiB bulk-copy stages): one row per
# CTA with every split in flight, for few rows split over many parts (b = 1: 66 splits per row);
# "narrow" the warp kernel (mla_combine_warp_kernel, one warp per row, plain loads). Measured (H200,
# 2026-12-02 second session run 5, scripts/mla_profile.py, two interleaved rounds, combine kernel
# us, warp / ring with four rows per CTA, one group, two stages): b=64 s_k=4096 h_q=16 s_q=2 5.0 /
# 6.9; b=64 h_q=128 s_q=1 whole requests 1.8-1.9 / 3.1; b=8 h_q=128 5.0-5.3 / 5.2-5.3; b=16 h_q=16
# 4.7 / 4.4; b=2 s_k=16384 h_q=128 s_q=2 7.3-7.5 / 6.4 (requests of >= WIDE_COMBINE_MIN_SPLITS parts
# take the wide one).
COMBINE_CONFIGS = {"narrow": "warp", "wide": (1, 4, 12)}
_COMBINE_STAGE_BYTES = 16384  # kCombineStageBytes in mla.cuh


@functools.lru_cache(maxsize=None)  # on every mla_decode call: build each spec once
def combine_spec(config) -> KernelSpec:
    """The combine kernel of a COMBINE_CONFIGS value: "warp" or (rows per CTA, groups, stages)."""
    name = "mla_combine_warp_kernel<0>" if config == "warp" else "mla_combine_kernel<%d, %d, %d>" % tuple(config)
    return KernelSpec(_TEMPLATE, "jitkern::mla::" + name, family="mla")


def _launch_combine(config, prm, rows: int, b: int, device):
    if config == "warp":
        get_kernel(combine_spec(config), device).launch((-(-rows // 8), b), (256,), [prm])
    else:
        c_rows, c_groups, c_stages = config
        get_kernel(combine_spec(config), device).launch((-(-rows // c_rows), b), (128 * c_rows * c_groups,), [prm],
                                                        smem=c_stages * _COMBINE_STAGE_BYTES)


SPEC_COMBINE_NARROW = combine_spec(COMBINE_CONFIGS["narrow"])
SPEC_COMBINE_WIDE = combine_spec(COMBINE_CONFIGS["wide"])
SPEC_DECODE_SIMT = KernelSpec(_TEMPLATE, "jitkern::mla::mla_decode_simt_kernel<0>", family="mla")
_SIMT_SMEM_BYTES = 2 * 64 * (DIM_QK + 8) * 2
IMPLS = tuple(_DECODE_MODES) + ("simt",)
SPEC_METADATA = KernelSpec(_TEMPLATE, "jitkern::mla::mla_metadata_kernel<1024>", family="mla")


class _ByValue(ctypes.Structure):
    """A kernel parameter struct passed by value (the launcher passes ctypes Structures from their
    storage; ``getPtr`` keeps the tensor-map path working with launchers that predate that)."""

    def getPtr(self):  # noqa: N802 (the launcher's duck-typed name)
        return ctypes.addressof(self)


class _DecodeParams(_ByValue):
    _fields_ = [(n, ctypes.c_void_p) for n in (
        "out", "lse", "out_acc", "lse_acc", "block_table", "seqlens", "md_g", "md_begin", "md_bpre",
        "md_nsplits", "md_first", "md_soff", "err")] + [("bt_stride", ctypes.c_longlong)] + [
        (n, ctypes.c_int32) for n in ("batch", "s_q", "h_q", "rows", "max_pages", "page_size", "causal",
                                      "num_parts")] + [("scale_log2", ctypes.c_float), ("pad_", ctypes.c_int32)]


class _CombineParams(_ByValue):
    _fields_ = [(n, ctypes.c_void_p) for n in ("out", "lse", "out_acc", "lse_acc", "md_nsplits", "md_soff")] + [
        (n, ctypes.c_int32) for n in ("batch", "s_q", "h_q", "rows")]


class _MetadataParams(_ByValue):
    _fields_ = [(n, ctypes.c_void_p) for n in (
        "seqlens", "md_g", "md_begin", "md_bpre", "md_cpre", "md_nsplits", "md_first", "md_soff", "md_total")] + [
        (n, ctypes.c_int32) for n in ("batch", "num_parts", "overhead", "pad_")]


@dataclasses.dataclass
class MLAMetadata:
    """Split-KV partition of one decode step (see module docstring). ``data`` is one int32
    tensor of fixed size for (batch, num_parts); the named fields are views into it."""
    data: torch.Tensor
    batch: int
    num_q_tokens: int
    num_heads_q: int
    num_parts: int
    num_m_blocks: int

    def _view(self, name):
        return self.data[slice(*self.layout()[name])]

    def layout(self) -> dict:
        b, p = self.batch, self.num_parts
        sizes = [("error", 1), ("total_slots", 1), ("part_start", p + 1), ("part_begin_req", p),
                 ("tile_prefix", b + 1), ("cost_prefix", b + 1), ("num_splits", b), ("first_part", b),
                 ("slot_offset", b)]
        out, o = {}, 0
        for n, s in sizes:
            out[n] = (o, o + s)
            o += s
        return out

    def __getattr__(self, name):
        if name in ("error", "total_slots", "part_start", "part_begin_req", "tile_prefix", "cost_prefix",
                    "num_splits", "first_part", "slot_offset"):
            return self._view(name)
        raise AttributeError(name)

    @property
    def max_slots(self) -> int:
        """Partial-result slots the decode may use: a part splits at most its first and last request."""
        return 2 * self.num_parts


def metadata_size(batch: int, num_parts: int) -> int:
    return 2 + (num_parts + 1) + num_parts + 5 * batch + 2


_NUM_SMS = {}


def _num_sms(device) -> int:
    idx = torch.device(device).index
    idx = torch.cuda.current_device() if idx is None else idx
    if idx not in _NUM_SMS:
        _NUM_SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _NUM_SMS[idx]


def num_m_blocks(num_q_tokens: int, num_heads_q: int) -> int:
    return -(-num_q_tokens * num_heads_q // BLOCK_M)


# One request per part when the batch fills at least this share of the one-wave part count: with
# equal lengths no request is then split, and the combine kernel has nothing to merge. Measured
# (H200, 2026-12-02 runs 9, 10): b=64 s_k=4096 h_q=128 s_q=1 169.9 -> 157.4 us (the combine took
# 10.8 us of it), b=128 s_k=8192 h_q=16 s_q=2 309-311 -> 307 us; two requests per part (b=128
# h_q=128 on 64 instead of 66 parts) lost what it saved (623 -> 636, 1145 -> 1160 us: 3% fewer SMs
# on a long compute-bound run), so only one request per part.
WHOLE_REQUEST_MIN_FILL = 0.85


def default_num_parts(num_sms: int, num_q_tokens: int, num_heads_q: int, batch: int | None = None) -> int:
    """One wave: the grid is (m_blocks, parts) and one 227 KiB CTA fits an SM. With ``batch``
    between WHOLE_REQUEST_MIN_FILL of that wave and all of it: one part per request (e.g. 64
    requests x 2 query blocks on 132 SMs: 64 parts instead of 66 that cut 62 requests in two)."""
    full = max(num_sms // num_m_blocks(num_q_tokens, num_heads_q), 1)
    if batch and WHOLE_REQUEST_MIN_FILL * full <= batch <= full:
        return batch
    return full


def _check_shape_args(num_q_tokens, num_heads_q):
    if not isinstance(num_q_tokens, int) or not 1 <= num_q_tokens <= MAX_Q_TOKENS:
        raise ValueError(f"num_q_tokens: expected an int in [1, {MAX_Q_TOKENS}], got {num_q_tokens!r}")
    if not isinstance(num_heads_q, int) or not 1 <= num_heads_q <= MAX_HEADS:
        raise ValueError(f"num_heads_q: expected an int in [1, {MAX_HEADS}] (h_q not supported), got {num_heads_q!r}")


def mla_metadata(cache_seqlens: torch.Tensor, num_q_tokens: int, num_heads_q: int, num_parts: int | None = None,
                 out: MLAMetadata | None = None) -> MLAMetadata:
    """Split-KV work partition for :func:`mla_decode`, computed on the GPU (no host sync).

    cache_seqlens: [b] int32 CUDA tensor, contiguous. num_q_tokens: s_q in [1, 8]. num_heads_q:
    h_q in [1, 128]. num_parts: KV partitions per query block (default: ``default_num_parts``: SMs //
    query blocks, or whole requests per part where that fills most of them).
    ``out``: an earlier result of the same (b, s_q, h_q, num_parts) to overwrite in place (for
    CUDA-graph replay with new lengths). Reuse the result for every layer of one decode step.
    """
    _check_shape_args(num_q_tokens, num_heads_q)
    check_tensor("cache_seqlens", cache_seqlens, dtype=torch.int32, ndim=1, contiguous=True)
    b = cache_seqlens.shape[0]
    if b < 1:
        raise ValueError("cache_seqlens: expected at least one request, got an empty tensor")
    nmb = num_m_blocks(num_q_tokens, num_heads_q)
    if num_parts is None:
        num_parts = default_num_parts(_num_sms(cache_seqlens.device), num_q_tokens, num_heads_q, b)
    if not isinstance(num_parts, int) or num_parts < 1:
        raise ValueError(f"num_parts: expected a positive int, got {num_parts!r}")
    if out is None:
        data = torch.zeros(metadata_size(b, num_parts), dtype=torch.int32, device=cache_seqlens.device)
        md = MLAMetadata(data, b, num_q_tokens, num_heads_q, num_parts, nmb)
    else:
        md = out
        if (md.batch, md.num_q_tokens, md.num_heads_q, md.num_parts) != (b, num_q_tokens, num_heads_q, num_parts):
            raise ValueError("out: metadata was made for another (batch, num_q_tokens, num_heads_q, num_parts)")
        md.error.zero_()
    d = md.data
    lay = md.layout()

    def ptr(name):
        return ctypes.c_void_p(d.data_ptr() + 4 * lay[name][0])

    prm = _MetadataParams(ctypes.c_void_p(cache_seqlens.data_ptr()), ptr("part_start"), ptr("part_begin_req"),
                          ptr("tile_prefix"), ptr("cost_prefix"), ptr("num_splits"), ptr("first_part"),
                          ptr("slot_offset"), ptr("total_slots"), b, num_parts, FIXED_OVERHEAD, 0)
    get_kernel(SPEC_METADATA, cache_seqlens.device).launch((1,), (1024,), [prm])
    return md


_TMA_CACHE = {}


def _tma(t: torch.Tensor, rows: int, box_rows: int = BLOCK_M):
    from ..runtime.tma import make_tma_desc
    key = (t.data_ptr(), rows, box_rows, t.device.index)
    d = _TMA_CACHE.get(key)
    if d is None:
        if len(_TMA_CACHE) > 256:
            _TMA_CACHE.clear()
        d = make_tma_desc(t, torch.bfloat16, (DIM_QK, rows), (DIM_QK * 2,), (64, box_rows), 128)
        _TMA_CACHE[key] = d
    return d


def mla_decode(q: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor, cache_seqlens: torch.Tensor,
               metadata: MLAMetadata, softmax_scale: float | None = None, causal: bool = True, out=None,
               impl: str | None = None):
    """Attention of ``q`` over the paged latent cache; returns ``(out, lse)``.

    See the module docstring for shapes, dtypes, layouts and edge cases. softmax_scale defaults
    to 576 ** -0.5. ``out``: None, an ``out`` tensor [b, s_q, h_q, 512] bf16 contiguous, or a
    pair ``(out, lse)`` with lse [b, h_q, s_q] fp32 contiguous. ``impl``: one of ``IMPLS``;
    None = ``default_impl(b, s_q, h_q, metadata.num_parts)`` (``$JITKERN_MLA_IMPL`` overrides): the fastest verified
    path per case as measured (H100/H200).
    "simt" uses no tensor cores (a slow cross-check). The other names select experimental decode
    modes of the same kernel and the wide combine (``*_wc``); templates/mla/NOTES.md has their
    measured speed and verification status (all give the same math contract). ``wgmma_t`` and
    ``wgmma_t_wc`` (transposed tiles) take at most ``NARROW_ROWS`` = 32 query rows per request
    (``h_q * s_q``); other shapes raise ValueError naming ``impl``.
    """
    if impl is None:
        impl = os.environ.get("JITKERN_MLA_IMPL")
        if impl is None:  # a malformed q falls through to check_tensor's error below
            ok = isinstance(q, torch.Tensor) and q.dim() == 4
            impl = default_impl(q.shape[0], q.shape[1], q.shape[2], getattr(metadata, "num_parts", None)) if ok \
                else DEFAULT_IMPL
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
    check_tensor("q", q, dtype=torch.bfloat16, ndim=4, contiguous=True, align_bytes=16)
    b, s_q, h_q, dq = q.shape
    if dq != DIM_QK:
        raise ValueError(f"q: expected head dim {DIM_QK} (512 latent + 64 rope), got {dq}")
    _check_shape_args(s_q, h_q)
    if impl in NARROW_ROWS_IMPLS and s_q * h_q > NARROW_ROWS:
        raise ValueError(f"impl: {impl} needs h_q * s_q <= {NARROW_ROWS} query rows per request, got {h_q} x {s_q}")
    check_tensor("kv_cache", kv_cache, dtype=torch.bfloat16, ndim=4, contiguous=True, align_bytes=16)
    num_pages, page_size, hk, dk = kv_cache.shape
    if hk != 1:
        raise ValueError(f"kv_cache: expected one latent KV head (dim 2 == 1), got {hk}")
    if dk != DIM_QK:
        raise ValueError(f"kv_cache: expected head dim {DIM_QK}, got {dk}")
    if page_size < BLOCK_N or page_size % BLOCK_N:
        raise ValueError(f"kv_cache: expected page_size a positive multiple of {BLOCK_N}, got {page_size}")
    if num_pages * page_size >= 2 ** 31:
        raise ValueError(f"kv_cache: {num_pages * page_size} tokens exceed the 2^31 TMA coordinate range")
    check_tensor("block_table", block_table, dtype=torch.int32, ndim=2, inner_contiguous=True)
    if block_table.shape[0] != b:
        raise ValueError(f"block_table: expected {b} rows (batch of q), got {block_table.shape[0]}")
    if block_table.shape[1] < 1:
        raise ValueError("block_table: expected at least one page column")
    check_tensor("cache_seqlens", cache_seqlens, dtype=torch.int32, shape=(b,), contiguous=True)
    if not isinstance(metadata, MLAMetadata):
        raise ValueError(f"metadata: expected the result of mla_metadata, got {type(metadata).__name__}")
    if (metadata.batch, metadata.num_q_tokens, metadata.num_heads_q) != (b, s_q, h_q):
        raise ValueError(f"metadata: made for (b, s_q, h_q) = {(metadata.batch, metadata.num_q_tokens, metadata.num_heads_q)},"
                         f" got {(b, s_q, h_q)}")
    check_same_device(q=q, kv_cache=kv_cache, block_table=block_table, cache_seqlens=cache_seqlens,
                      metadata=metadata.data)
    if softmax_scale is None:
        softmax_scale = DIM_QK ** -0.5
    if not (isinstance(softmax_scale, (int, float)) and math.isfinite(softmax_scale) and softmax_scale > 0):
        raise ValueError(f"softmax_scale: expected a positive finite float, got {softmax_scale!r}")
    if isinstance(out, (tuple, list)):
        o, lse = out
    else:
        o, lse = out, None
    if o is None:
        o = torch.empty((b, s_q, h_q, DIM_V), dtype=torch.bfloat16, device=q.device)
    else:
        check_tensor("out", o, dtype=torch.bfloat16, shape=(b, s_q, h_q, DIM_V), contiguous=True)
    if lse is None:
        lse = torch.empty((b, h_q, s_q), dtype=torch.float32, device=q.device)
    else:
        check_tensor("out[1]", lse, dtype=torch.float32, shape=(b, h_q, s_q), contiguous=True)
    check_same_device(q=q, out=o, lse=lse)

    rows = s_q * h_q
    md = metadata
    slots = md.max_slots
    out_acc = torch.empty((slots, rows, DIM_V), dtype=torch.float32, device=q.device)
    lse_acc = torch.empty((slots, rows), dtype=torch.float32, device=q.device)
    lay = md.layout()
    base = md.data.data_ptr()

    def mp(name):
        return base + 4 * lay[name][0]

    prm = _DecodeParams(o.data_ptr(), lse.data_ptr(), out_acc.data_ptr(), lse_acc.data_ptr(), block_table.data_ptr(),
                        cache_seqlens.data_ptr(), mp("part_start"), mp("part_begin_req"), mp("tile_prefix"),
                        mp("num_splits"), mp("first_part"), mp("slot_offset"), mp("error"), block_table.stride(0),
                        b, s_q, h_q, rows, block_table.shape[1], page_size, int(bool(causal)), md.num_parts,
                        float(softmax_scale) * math.log2(math.e), 0)
    if impl != "simt":
        tq = _tma(q, b * rows, NARROW_ROWS if impl in NARROW_ROWS_IMPLS else BLOCK_M)  # Q box: kQRows in mla.cuh
        tkv = _tma(kv_cache, num_pages * page_size)
        spec = DECODE_SPECS[impl]
        get_kernel(spec, q.device).launch((md.num_m_blocks, md.num_parts), (_DECODE_THREADS,), [tq, tkv, prm],
                                          smem=_SMEM_BYTES)
    else:
        get_kernel(SPEC_DECODE_SIMT, q.device).launch((md.num_m_blocks, md.num_parts), (256,), [q, kv_cache, prm],
                                                      smem=_SIMT_SMEM_BYTES)
    cprm = _CombineParams(o.data_ptr(), lse.data_ptr(), out_acc.data_ptr(), lse_acc.data_ptr(), mp("num_splits"),
                          mp("slot_offset"), b, s_q, h_q, rows)
    _launch_combine(COMBINE_CONFIGS[_DECODE_MODES[impl][1] if impl != "simt" else "narrow"], cprm, rows, b, q.device)
    return o, lse


def mla_check_errors(metadata: MLAMetadata):
    """Synchronising check of the flags the kernels set (see module docstring)."""
    e = int(metadata.error.item())
    if e & 1:
        raise ValueError("block_table: too short for cache_seqlens (a request needs more pages than "
                         "block_table has columns)")


def warmup_specs(entries, target) -> list:
    """Every kernel a default_impl choice can launch (h_q, s_q, page size are runtime values)."""
    return [SPEC_METADATA, SPEC_DECODE, SPEC_COMBINE_NARROW, DECODE_SPECS[SMALL_BATCH_IMPL],
            DECODE_SPECS[MANY_ROWS_IMPL], DECODE_SPECS[NARROW_ROWS_IMPLS[0]], SPEC_COMBINE_WIDE]  # the SIMT cross-check and other modes compile on first use
