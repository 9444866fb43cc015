"""Dense "NT" GEMMs for Hopper: ``D[M, N] = A[M, K] @ B[N, K]^T``.

* :func:`gemm_fp8_nt`: A, B float8_e4m3fn with DeepSeek-V3 block scales (A per 1x128 group along K,
  B per 128x128 block), fp32 accumulation with per-128-K-block promotion, bf16 D (or fp32 D = AB^T + C).
* :func:`gemm_bf16_nt`: bf16 A, B, fp32 accumulation, bf16 D (or fp32 D = AB^T + C).

Kernel: ``templates/gemm/gemm.cuh`` (TMA + wgmma, warp-specialised, persistent). N and K are
compile-time constants (one kernel per (N, K) and config), M is a runtime argument.

Requirements (ValueError naming the argument otherwise):
  * A [M, K], B [N, K]: stride 1 along K, row strides multiples of 16 bytes, 16-byte aligned data.
  * K % 16 == 0 (fp8) / K % 8 == 0 (bf16), K >= 1 ... any K; N % 8 == 0; M >= 0.
  * out [M, N]: bf16 (fp32 when ``c`` is given), stride 1 along N, row stride a multiple of 8
    elements, 16-byte aligned. ``c`` [M, N] fp32, same stride rules; ``out`` may be ``c``.
  * fp8 scales: A's [M, ceil(K/128)] fp32; the kernel reads them MN-major with TMA-aligned
    columns (strides (1, align(M, 4)), what :func:`jitkern.ops.quant.per_token_group_quant_fp8`
    returns); any other layout is copied into that one on the GPU first. B's
    [ceil(N/128), ceil(K/128)] fp32 (made contiguous if it is not).
No host synchronisation: capturable in CUDA graphs. M == 0 returns an empty result, no launch.
"""
from __future__ import annotations

import collections
import ctypes

import torch

from .. import heuristics
from ..runtime import KernelSpec, get_kernel
from ..runtime.arch import current_target
from .checks import check_same_device, check_tensor

TEMPLATE = "gemm/gemm.cuh"
GROUP = 128


def _align4(m: int) -> int:
    return (m + 3) // 4 * 4


def gemm_spec(kind: str, n: int, k: int, cfg: heuristics.GemmConfig, accum: bool = False,
              group_mode: int = 0) -> KernelSpec:
    """KernelSpec of the GEMM kernel for ``kind`` ("fp8" | "bf16"), N, K and ``cfg``;
    ``group_mode`` 0 dense, 1 grouped contiguous, 2 grouped masked (see gemm.cuh)."""
    fp8 = "true" if kind == "fp8" else "false"
    tail = f", {group_mode}, {cfg.split_k}>" if cfg.split_k > 1 else (f", {group_mode}>" if group_mode else ">")
    name = (f"jitkern::gemm::gemm_nt_kernel<{fp8}, {n}, {k}, {cfg.block_m}, {cfg.block_n}, {cfg.stages}, "
            f"{cfg.group_n}, {'true' if accum else 'false'}, {cfg.cluster_m}, {cfg.cluster_n}" + tail)
    # fp8's pipelined promotion loop compiles serialised for a few constant trip counts (gemm.cuh)
    fallback = (("JITKERN_GEMM_RUNTIME_J", "1"),) if kind == "fp8" else ()
    return KernelSpec(TEMPLATE, name, family="gemm", serialized_fallback=fallback)


# TMA descriptors are pure functions of (pointer, shape, strides, box): memoise the few a model
# uses so a hot call skips cuTensorMapEncodeTiled.
_DESC_CACHE: "collections.OrderedDict" = collections.OrderedDict()


def _desc(t: torch.Tensor, dims, strides, box, swizzle, dtype=None):
    from ..runtime.tma import make_tma_desc
    key = (t.data_ptr(), dtype or t.dtype, tuple(dims), tuple(strides), tuple(box), swizzle)
    d = _DESC_CACHE.get(key)
    if d is None:
        d = make_tma_desc(t, dtype or t.dtype, dims, strides, box, swizzle)
        _DESC_CACHE[key] = d
        if len(_DESC_CACHE) > 512:
            _DESC_CACHE.popitem(last=False)
    else:
        _DESC_CACHE.move_to_end(key)
    return d


def _check_operand(name: str, t, dtype, k_mult: int):
    check_tensor(name, t, dtype=dtype, ndim=2, inner_contiguous=True, align_bytes=16)
    if t.shape[1] % k_mult:
        raise ValueError(f"{name}: expected K (last dim) to be a multiple of {k_mult} (16-byte rows for TMA), "
                         f"got {t.shape[1]}")
    if t.shape[0] > 1 and (t.stride(0) * t.element_size()) % 16:
        raise ValueError(f"{name}: expected a row stride that is a multiple of 16 bytes, got {t.stride(0)} elements")


def _check_out(name: str, t, m: int, n: int, dtype, device):
    check_tensor(name, t, dtype=dtype, shape=(m, n), inner_contiguous=True, align_bytes=16, device=device)
    if m > 1 and t.stride(0) % 8:
        raise ValueError(f"{name}: expected a row stride that is a multiple of 8 elements, got {t.stride(0)}")


def _sfa_mn_major(sfa: torch.Tensor, m: int, kb: int) -> torch.Tensor:
    """A scales as the kernel reads them: [m, kb] view, strides (1, align(m, 4))."""
    ld = _align4(m)
    ok = sfa.stride(0) == 1 or m == 1
    ok = ok and (kb == 1 or (sfa.stride(1) % 4 == 0 and sfa.stride(1) >= m))
    ok = ok and sfa.data_ptr() % 16 == 0
    if ok:
        return sfa
    buf = torch.empty((kb, ld), dtype=torch.float32, device=sfa.device)
    buf[:, :m].copy_(sfa.t())
    return buf.t()[:m]


def _prepare_out(out, c, m, n, device):
    if c is not None:
        _check_out("c", c, m, n, torch.float32, device)
        if out is None:
            out = torch.empty((m, n), dtype=torch.float32, device=device)
        _check_out("out", out, m, n, torch.float32, device)
    else:
        if out is None:
            out = torch.empty((m, n), dtype=torch.bfloat16, device=device)
        _check_out("out", out, m, n, torch.bfloat16, device)
    return out


def _check_tile(kind, cfg):
    """An explicit config's tile must be one gemm.cuh compiles (a ValueError instead of a failed
    static_assert): BLOCK_M 64, 128 or 256 (fp8 only) with a BLOCK_N of ``heuristics.block_n_candidates``."""
    if cfg.block_m not in (64, 128, 256):
        raise ValueError(f"config: BLOCK_M must be 64, 128 or 256, got {cfg.block_m}")
    cands = heuristics.block_n_candidates(kind, cfg.block_m)
    if cfg.block_n not in cands:
        raise ValueError(f"config: {kind} BLOCK_N at BLOCK_M {cfg.block_m} must be one of {cands}, got {cfg.block_n}")


def _launch(kind, a, b, sfa, sfb, out, c, m, n, k, config=None, group_mode=0, layout=None, num_groups=1, max_m=0):
    """``a`` [m, K] (all groups' rows), ``b`` [G * n, K], ``out`` [m, n] (2D views)."""
    dev = a.device
    target = current_target(dev)
    if config is not None:
        _check_tile(kind, config)
    cfg = config or heuristics.gemm_config(kind, m, n, k, target.num_sms, target.name, target.smem_per_block)
    accum = c is not None
    bk = heuristics.gemm_block_k(kind)
    split = cfg.split_k > 1
    if cfg.split_k != 1:  # only explicit or tuned split-K configs pay for these checks
        if group_mode or cfg.cluster_m * cfg.cluster_n > 1:
            raise ValueError(f"config: split_k > 1 needs a dense GEMM without clusters, got {cfg}")
        if not 1 <= cfg.split_k <= -(-k // bk):
            raise ValueError(f"config: split_k must be in [1, {-(-k // bk)}] (K blocks of {bk}), got {cfg.split_k}")
    if accum:  # the fp32 path keeps no output tile in smem: same stages fit
        cfg = _fit_stages(kind, cfg, True, target.smem_per_block)
    spec = gemm_spec(kind, n, k, cfg, accum=accum, group_mode=group_mode)
    kern = get_kernel(spec, dev)
    es = a.element_size()
    cluster = cfg.cluster_m * cfg.cluster_n
    # with a CTA pair, each CTA loads (and multicasts) half of the shared operand's tile
    ta = _desc(a, (k, m), (a.stride(0) * es,), (bk, cfg.block_m // cfg.cluster_n), 128)
    tb = _desc(b, (k, b.shape[0]), (b.stride(0) * es,), (bk, cfg.block_n // cfg.cluster_m), 128)
    w = 64 if cfg.block_n % 64 == 0 else (32 if cfg.block_n % 32 == 0 else 16)  # kStoreCols in gemm.cuh
    direct = accum or group_mode == 2 or split  # no TMA store: no output tile in smem
    td = ta if direct else _desc(out, (n, m), (out.stride(0) * 2,), (w, 64), 2 * w)
    if kind == "fp8":
        kb = -(-k // GROUP)
        ld = sfa.stride(1) if kb > 1 else _align4(m)
        tsfa = _desc(sfa, (m, kb), (ld * 4,), (cfg.block_m, 1), 0)
    else:
        tsfa, sfb = ta, a
    ctiles = -(-(-(-m // cfg.block_m)) // cfg.cluster_m) * -(-(-(-n // cfg.block_n)) // cfg.cluster_n)
    max_clusters = cfg.num_sms // cluster
    if cluster > 1:
        max_clusters = min(max_clusters, _max_active_clusters(kern, threads_of(cfg), heuristics.gemm_smem_bytes(
            kind, cfg.block_m, cfg.block_n, cfg.stages, accum), cluster, cfg.num_sms))
    grid = min(ctiles * cfg.split_k, max_clusters) * cluster
    if group_mode == 2:  # tile count lives on the GPU (masked_m): one persistent CTA per SM
        grid = cfg.num_sms
    threads = threads_of(cfg)
    smem = heuristics.gemm_smem_bytes(kind, cfg.block_m, cfg.block_n, cfg.stages, direct)
    cc = c if c is not None else out
    lay = layout if layout is not None else a
    ws, ws_count = _split_workspace(dev, cfg.split_k * m * n, ctiles) if split else (a, a)
    kern.launch((grid,), (threads,), [ta, tb, tsfa, td, sfb, out, cc, ctypes.c_uint32(m),
                                      ctypes.c_uint32(out.stride(0)), ctypes.c_uint32(cc.stride(0)),
                                      lay, ctypes.c_uint32(num_groups), ctypes.c_uint32(max_m), ws, ws_count],
                smem=smem, cluster=(cluster, 1, 1) if cluster > 1 else None)
    return out


# Split-K scratch per (device, stream): fp32 partials and one counter per output tile, which the
# kernel leaves at zero. Stream order keeps consecutive GEMMs on one stream apart; a workspace is
# never shared between streams (two replays of one captured graph must not run concurrently).
_SPLIT_WS: dict = {}


def _split_workspace(dev, floats: int, tiles: int):
    key = (dev, torch.cuda.current_stream(dev).cuda_stream)
    ws = _SPLIT_WS.get(key)
    if ws is None or ws[0].numel() < floats or ws[1].numel() < tiles:
        old = ws or (torch.empty(0), torch.empty(0))
        ws = _SPLIT_WS[key] = (torch.empty(max(floats, old[0].numel()), dtype=torch.float32, device=dev),
                               torch.zeros(max(tiles, old[1].numel(), 1024), dtype=torch.int32, device=dev))
    return ws


def threads_of(cfg) -> int:
    # a producer warpgroup plus one (BLOCK_M 64) or two math warpgroups (gemm.cuh)
    return 128 * (2 if cfg.block_m == 64 else 3)


# A persistent grid must be co-resident: with clusters, GPCs whose free SMs do not pair up host
# fewer than num_sms / 2 clusters, and a cluster beyond that would run as a second wave.
_MAX_CLUSTERS: dict = {}


def _max_active_clusters(kern, threads, smem, cluster, num_sms) -> int:
    key = (kern.function, threads, smem, cluster)
    v = _MAX_CLUSTERS.get(key)
    if v is None:
        v = _MAX_CLUSTERS[key] = min(num_sms // cluster, kern.max_active_clusters((threads, 1, 1), smem, (cluster, 1, 1)))
    return v


def _fit_stages(kind, cfg, accum, smem_limit):
    import dataclasses
    return dataclasses.replace(cfg, stages=min(cfg.stages, heuristics.gemm_max_stages(
        kind, cfg.block_m, cfg.block_n, smem_limit, accum)))


def gemm_fp8_nt(a, b, out=None, c=None, config=None):
    """FP8 block-scaled GEMM, ``D = dequant(A) @ dequant(B)^T (+ C)``.

    a: ``(A, sa)``: A [M, K] float8_e4m3fn; sa [M, ceil(K/128)] fp32, one scale per row and 128-wide
       K group (MN-major TMA-aligned preferred, see the module docstring).
    b: ``(B, sb)``: B [N, K] float8_e4m3fn; sb [ceil(N/128), ceil(K/128)] fp32 per 128x128 block.
    out: optional [M, N] bf16 (fp32 when ``c`` is given). c: optional [M, N] fp32 added to the product.
    config: optional :class:`jitkern.heuristics.GemmConfig` overriding the heuristic (tuning).
    Returns ``out``.
    """
    if not (isinstance(a, (tuple, list)) and len(a) == 2):
        raise ValueError("a: expected a (tensor, scales) pair")
    if not (isinstance(b, (tuple, list)) and len(b) == 2):
        raise ValueError("b: expected a (tensor, scales) pair")
    A, sa = a
    B, sb = b
    _check_operand("a[0]", A, torch.float8_e4m3fn, 16)
    _check_operand("b[0]", B, torch.float8_e4m3fn, 16)
    m, k = A.shape
    n = B.shape[0]
    if B.shape[1] != k:
        raise ValueError(f"b[0]: expected K = {k} (a[0] is {list(A.shape)}), got shape {list(B.shape)}")
    if n % 8:
        raise ValueError(f"b[0]: expected N (rows) to be a multiple of 8, got {n}")
    kb = -(-k // GROUP)
    check_tensor("a[1]", sa, dtype=torch.float32, shape=(m, kb), device=A.device)
    check_tensor("b[1]", sb, dtype=torch.float32, shape=(-(-n // GROUP), kb), device=A.device)
    check_same_device(a=A, b=B)
    out = _prepare_out(out, c, m, n, A.device)
    if m == 0 or n == 0:
        return out
    if k == 0:
        return out.copy_(c) if c is not None else out.zero_()
    sa = _sfa_mn_major(sa, m, kb)
    if not sb.is_contiguous():
        sb = sb.contiguous()
    return _launch("fp8", A, B, sa, sb, out, c, m, n, k, config)


def gemm_bf16_nt(a, b, out=None, c=None, config=None):
    """BF16 GEMM, ``D = A @ B^T (+ C)``.

    a: A [M, K] bf16; b: B [N, K] bf16. out: optional [M, N] bf16 (fp32 when ``c`` is given).
    c: optional [M, N] fp32 added to the product. Returns ``out``.
    """
    _check_operand("a", a, torch.bfloat16, 8)
    _check_operand("b", b, torch.bfloat16, 8)
    m, k = a.shape
    n = b.shape[0]
    if b.shape[1] != k:
        raise ValueError(f"b: expected K = {k} (a is {list(a.shape)}), got shape {list(b.shape)}")
    if n % 8:
        raise ValueError(f"b: expected N (rows) to be a multiple of 8, got {n}")
    check_same_device(a=a, b=b)
    out = _prepare_out(out, c, m, n, a.device)
    if m == 0 or n == 0:
        return out
    if k == 0:
        return out.copy_(c) if c is not None else out.zero_()
    return _launch("bf16", a, b, None, None, out, c, m, n, k, config)


def warmup_specs(entries, target) -> list:
    """Kernels for a manifest's ``gemm`` list. Dense entries: ``{"kind": "fp8"|"bf16", "n": N,
    "k": K, "m": [64, 128, 4096], "accum": false}`` (``m`` picks the configs). Grouped entries add
    ``"layout": "contiguous"|"masked"`` and ``"groups": G``; their ``m`` is rows per group
    (contiguous) or expected_m (masked)."""
    specs = []
    for e in entries or []:
        kind = e.get("kind", "fp8")
        n, k = int(e["n"]), int(e["k"])
        layout = e.get("layout")
        for m in e.get("m", [64, 128, 4096]):
            if layout in ("contiguous", "masked"):
                cfg = _grouped_config(kind, int(m), int(e.get("groups", 1)), n, k, target, None,
                                      masked=layout == "masked")
                specs.append(gemm_spec(kind, n, k, cfg, group_mode=1 if layout == "contiguous" else 2))
            else:
                cfg = heuristics.gemm_config(kind, int(m), n, k, target.num_sms, target.name, target.smem_per_block)
                specs.append(gemm_spec(kind, n, k, cfg, bool(e.get("accum", False))))
    return specs


# ---------------------------------------------------------------------------------------------
# Grouped GEMMs for mixture-of-experts (same kernel, grouped tile schedulers; see gemm.cuh).
# ---------------------------------------------------------------------------------------------

GROUPED_M_ALIGNMENT = 128


def grouped_m_alignment() -> int:
    """Rows each group of the contiguous layout must be padded to (128; the fp8 256-row tiles
    schedule the two 128-row halves of a tile apart where they belong to different groups)."""
    return GROUPED_M_ALIGNMENT


# Contiguous fp8 takes 256x128 tiles from this many rows per group (8 blocks of 128). A 256-row
# tile reads its B panel once for twice the rows (dense M=4096: 10-14% faster than 128x128); what
# it loses in the contiguous layout is the 128-row halves: a group's odd last block, and a block
# whose slot starts in another group (gemm.cuh ContigSlot), up to two per group. From 8 blocks on
# those are at most 2 of 5 tiles of a group; at the anchors' G=32 cases (~330 rows, 3 blocks) they
# are half of them or more, and those keep 128x128. Measured (H200, scripts/contig_ab.py, medians
# of 3 rounds): G=4, 8 (4240-8864 rows) 1-10% faster with 256, G=32 (~330 rows) 6-25% slower.
CONTIG_256_MIN_ROWS = 1024


def _grouped_config(kind, rows_per_group, num_groups, n, k, target, config, masked=False):
    """Config from the rows one group typically has: BLOCK_M 64 up to 64 rows, else 128 (masked
    fp8 over 128 rows: 256x128, whose 64-row waves past a group's valid rows compute nothing, so a
    group of 129-256 rows reads its B panel once; contiguous fp8 from CONTIG_256_MIN_ROWS rows:
    256x128 where the wave model agrees); BLOCK_N by the wave model over all groups' tiles."""
    if config is not None:
        if config.cluster_m * config.cluster_n != 1:
            raise ValueError("config: grouped GEMMs run without clusters (cluster_m = cluster_n = 1)")
        if config.block_m == 256 and (kind != "fp8" or config.block_n > 128):
            raise ValueError(f"config: BLOCK_M 256 is fp8-only, with BLOCK_N <= 128, got {kind} {config}")
        _check_tile(kind, config)
        return config
    import dataclasses
    bm = 64 if rows_per_group <= 64 else 128
    if masked and kind == "fp8" and rows_per_group > 128:
        return heuristics.GemmConfig(256, 128, heuristics.gemm_max_stages(kind, 256, 128, target.smem_per_block,
                                                                         accum=True), 16, target.num_sms)
    # the wave model only needs the tile count: num_groups * ceil(rows/bm) row blocks
    m_eq = num_groups * (-(-max(1, rows_per_group) // bm)) * bm
    if not masked and kind == "fp8" and rows_per_group >= CONTIG_256_MIN_ROWS:
        # the dense model's wave slots (tile area over measured efficiency): with few tiles per
        # SM the 128-row tiles' finer split of the rows can still win (G=1, 1024 rows, N=576)
        def cost(bm_, bn_):
            tiles = num_groups * -(-rows_per_group // bm_) * -(-n // bn_)
            return -(-tiles // target.num_sms) * bm_ * bn_ / heuristics._FP8_LARGE_M_TILES[(bm_, bn_)]
        if cost(256, 128) <= cost(128, 128):
            return heuristics.GemmConfig(256, 128, heuristics.gemm_max_stages(kind, 256, 128, target.smem_per_block),
                                         16, target.num_sms)
    cfg = heuristics.heuristic_gemm_config(kind, m_eq, n, k, target.num_sms, target.smem_per_block)
    if cfg.block_m != bm:
        cfg = dataclasses.replace(cfg, block_m=bm)
    if kind == "fp8" and m_eq > 256:
        # 128x128 won 6 of the 9 contiguous anchor cases and both masked expected_m=192 cases
        # (bench grouped --sweep, H200); it is also the widest tile with pipelined promotion
        cfg = dataclasses.replace(cfg, block_n=128)
    if cfg.block_n not in heuristics.block_n_candidates(kind, bm):
        cfg = dataclasses.replace(cfg, block_n=128)
    return dataclasses.replace(cfg, stages=heuristics.gemm_max_stages(kind, bm, cfg.block_n, target.smem_per_block),
                               cluster_m=1, cluster_n=1)


def _check_grouped_b(kind, b, k):
    if kind == "fp8":
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise ValueError("b: expected a (tensor, scales) pair")
        B, sb = b
        name = "b[0]"
    else:
        B, sb, name = b, None, "b"
    check_tensor(name, B, dtype=torch.float8_e4m3fn if kind == "fp8" else torch.bfloat16, ndim=3, contiguous=True,
                 align_bytes=16)
    g, n, kk = B.shape
    if kk != k:
        raise ValueError(f"{name}: expected K = {k} (from a), got shape {list(B.shape)}")
    if n % 8:
        raise ValueError(f"{name}: expected N to be a multiple of 8, got {n}")
    if kind == "fp8":
        check_tensor("b[1]", sb, dtype=torch.float32, shape=(g, -(-n // GROUP), -(-k // GROUP)), device=B.device)
        sb = sb.contiguous()
    return B, sb, g, n


def _grouped_contiguous(kind, a, b, group_index, out, config):
    if kind == "fp8":
        if not (isinstance(a, (tuple, list)) and len(a) == 2):
            raise ValueError("a: expected a (tensor, scales) pair")
        A, sa = a
        _check_operand("a[0]", A, torch.float8_e4m3fn, 16)
    else:
        A, sa = a, None
        _check_operand("a", A, torch.bfloat16, 8)
    m, k = A.shape
    B, sb, g, n = _check_grouped_b(kind, b, k)
    if m % GROUPED_M_ALIGNMENT:
        raise ValueError(f"a: expected the stacked row count to be a multiple of {GROUPED_M_ALIGNMENT} "
                         f"(each group padded to grouped_m_alignment()), got {m}")
    check_tensor("group_index", group_index, dtype=torch.int32, shape=(m,), contiguous=True, device=A.device)
    if kind == "fp8":
        check_tensor("a[1]", sa, dtype=torch.float32, shape=(m, -(-k // GROUP)), device=A.device)
    out = _prepare_out(out, None, m, n, A.device)
    if m == 0 or n == 0:
        return out
    target = current_target(A.device)
    # BLOCK_M = 128 = the alignment: every tile starts on a group's first rows, so all padding
    # rows of a minimally padded group land inside a computed tile and are zeroed (BLOCK_M 256:
    # the kernel schedules per 128-row block, gemm.cuh ContigSlot, with the same result)
    cfg = _grouped_config(kind, max(65, m // max(1, g)), g, n, k, target, config)
    if kind == "fp8":
        sa = _sfa_mn_major(sa, m, sa.shape[1])
    return _launch(kind, A, B.view(g * n, k), sa, sb, out, None, m, n, k, cfg, group_mode=1, layout=group_index,
                   num_groups=g)


def _grouped_masked(kind, a, b, masked_m, expected_m, out, config):
    if kind == "fp8":
        if not (isinstance(a, (tuple, list)) and len(a) == 2):
            raise ValueError("a: expected a (tensor, scales) pair")
        A, sa = a
        name = "a[0]"
    else:
        A, sa, name = a, None, "a"
    check_tensor(name, A, dtype=torch.float8_e4m3fn if kind == "fp8" else torch.bfloat16, ndim=3, contiguous=True,
                 align_bytes=16)
    ga, max_m, k = A.shape
    if k % (16 if kind == "fp8" else 8):
        raise ValueError(f"{name}: expected K to be a multiple of {16 if kind == 'fp8' else 8}, got {k}")
    B, sb, g, n = _check_grouped_b(kind, b, k)
    if g != ga:
        raise ValueError(f"{'b[0]' if kind == 'fp8' else 'b'}: expected {ga} groups (from a), got {g}")
    check_tensor("masked_m", masked_m, dtype=torch.int32, shape=(g,), contiguous=True, device=A.device)
    if not isinstance(expected_m, int) or expected_m < 0:
        raise ValueError(f"expected_m: expected a non-negative int (host hint), got {expected_m!r}")
    if out is None:
        out = torch.empty((g, max_m, n), dtype=torch.bfloat16, device=A.device)
    check_tensor("out", out, dtype=torch.bfloat16, shape=(g, max_m, n), contiguous=True, align_bytes=16,
                 device=A.device)
    if g == 0 or max_m == 0 or n == 0:
        return out
    kb = -(-k // GROUP)
    if kind == "fp8":
        if sa.dim() == 3:
            check_tensor("a[1]", sa, dtype=torch.float32, shape=(g, max_m, kb), device=A.device)
            sa = sa.reshape(g * max_m, kb)
        else:
            check_tensor("a[1]", sa, dtype=torch.float32, shape=(g * max_m, kb), device=A.device)
        sa = _sfa_mn_major(sa, g * max_m, kb)
    target = current_target(A.device)
    cfg = _grouped_config(kind, min(max(1, expected_m), max_m), g, n, k, target, config, masked=True)
    _launch(kind, A.view(g * max_m, k), B.view(g * n, k), sa, sb, out.view(g * max_m, n), None, g * max_m,
            n, k, cfg, group_mode=2, layout=masked_m, num_groups=g, max_m=max_m)
    return out


def grouped_gemm_fp8_contiguous(a, b, group_index, out=None, config=None):
    """Grouped FP8 GEMM, contiguous layout (MoE prefill): ``D[r] = A[r] @ B[group_index[r]]^T``.

    a: ``(A [M_total, K] e4m3, sa [M_total, ceil(K/128)] fp32)``: every group's rows stacked, each
       group padded to :func:`grouped_m_alignment` rows (M_total a multiple of it).
    b: ``(B [G, N, K] e4m3 contiguous, sb [G, ceil(N/128), ceil(K/128)] fp32)``.
    group_index: [M_total] int32 on the GPU: group of each row, -1 for padding rows.
    Returns D [M_total, N] bf16: padding rows are written as zero, except whole 128-row blocks of
    padding (more padding than the alignment needs), which are skipped and left untouched. (With a
    ``config`` of BLOCK_M 64 that applies to 64-row blocks; BLOCK_M 256, fp8 only, keeps 128.)
    No host sync.
    """
    return _grouped_contiguous("fp8", a, b, group_index, out, config)


def grouped_gemm_bf16_contiguous(a, b, group_index, out=None, config=None):
    """BF16 twin of :func:`grouped_gemm_fp8_contiguous`: a [M_total, K] bf16, b [G, N, K] bf16."""
    return _grouped_contiguous("bf16", a, b, group_index, out, config)


def grouped_gemm_fp8_masked(a, b, masked_m, expected_m: int, out=None, config=None):
    """Grouped FP8 GEMM, masked layout (MoE decode): ``D[g, :masked_m[g]] = A[g, :masked_m[g]] @ B[g]^T``.

    a: ``(A [G, max_m, K] e4m3 contiguous, sa [G, max_m, ceil(K/128)] or [G*max_m, ceil(K/128)] fp32)``.
    b: ``(B [G, N, K] e4m3, sb [G, ceil(N/128), ceil(K/128)] fp32)``.
    masked_m: [G] int32 on the GPU, valid rows per group; read only by the kernel (no host sync,
       CUDA-graph capturable); values are clamped to [0, max_m] on the GPU (rows past max_m do not
       exist, negative counts mean 0). expected_m: host hint (typical rows per group) for the config.
    Returns out [G, max_m, N] bf16; rows at or past masked_m[g] are left untouched.
    """
    return _grouped_masked("fp8", a, b, masked_m, expected_m, out, config)


def grouped_gemm_bf16_masked(a, b, masked_m, expected_m: int, out=None, config=None):
    """BF16 twin of :func:`grouped_gemm_fp8_masked`: a [G, max_m, K] bf16, b [G, N, K] bf16."""
    return _grouped_masked("bf16", a, b, masked_m, expected_m, out, config)
