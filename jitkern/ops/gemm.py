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


def gemm_spec(kind: str, n: int, k: int, cfg: heuristics.GemmConfig, accum: bool = False) -> KernelSpec:
    """KernelSpec of the GEMM kernel for ``kind`` ("fp8" | "bf16"), N, K and ``cfg``."""
    fp8 = "true" if kind == "fp8" else "false"
    name = (f"jitkern::gemm::gemm_nt_kernel<{fp8}, {n}, {k}, {cfg.block_m}, {cfg.block_n}, {cfg.stages}, "
            f"{cfg.group_n}, {'true' if accum else 'false'}, {cfg.cluster_m}, {cfg.cluster_n}>")
    return KernelSpec(TEMPLATE, name, family="gemm")


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


def _launch(kind, a, b, sfa, sfb, out, c, m, n, k, config=None):
    dev = a.device
    target = current_target(dev)
    cfg = config or heuristics.gemm_config(kind, m, n, k, target.num_sms, target.name, target.smem_per_block)
    accum = c is not None
    if accum:  # the fp32 path keeps no output tile in smem: same stages fit
        cfg = _fit_stages(kind, cfg, True, target.smem_per_block)
    spec = gemm_spec(kind, n, k, cfg, accum=accum)
    kern = get_kernel(spec, dev)
    bk = heuristics.gemm_block_k(kind)
    es = a.element_size()
    cluster = cfg.cluster_m * cfg.cluster_n
    # with a CTA pair, each CTA loads (and multicasts) half of the shared operand's tile
    ta = _desc(a, (k, m), (a.stride(0) * es,), (bk, cfg.block_m // cfg.cluster_n), 128)
    tb = _desc(b, (k, n), (b.stride(0) * es,), (bk, cfg.block_n // cfg.cluster_m), 128)
    w = 64 if cfg.block_n % 64 == 0 else (32 if cfg.block_n % 32 == 0 else 16)  # kStoreCols in gemm.cuh
    td = ta if accum else _desc(out, (n, m), (out.stride(0) * 2,), (w, 64), 2 * w)
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
    grid = min(ctiles, max_clusters) * cluster
    threads = threads_of(cfg)
    smem = heuristics.gemm_smem_bytes(kind, cfg.block_m, cfg.block_n, cfg.stages, accum)
    cc = c if c is not None else out
    kern.launch((grid,), (threads,), [ta, tb, tsfa, td, sfb, out, cc, ctypes.c_uint32(m),
                                      ctypes.c_uint32(out.stride(0)), ctypes.c_uint32(cc.stride(0))],
                smem=smem, cluster=(cluster, 1, 1) if cluster > 1 else None)
    return out


def threads_of(cfg) -> int:
    return 128 * (1 + cfg.block_m // 64)


# A persistent grid must be co-resident: with clusters, GPCs whose free SMs do not pair up host
# fewer than num_sms / 2 clusters, and a cluster beyond that would run as a second wave.
_MAX_CLUSTERS: dict = {}


def _max_active_clusters(kern, threads, smem, cluster, num_sms) -> int:
    key = (kern.function, threads, smem, cluster)
    v = _MAX_CLUSTERS.get(key)
    if v is None:
        v = num_sms // cluster
        try:
            from cuda.bindings import driver
            kern._ensure_smem(smem)
            lc = kern._cluster_config((cluster * (num_sms // cluster), 1, 1), (threads, 1, 1), smem, (cluster, 1, 1))
            err, n = driver.cuOccupancyMaxActiveClusters(kern.function, lc)
            if err == driver.CUresult.CUDA_SUCCESS and int(n) > 0:
                v = min(v, int(n))
        except Exception:  # the query is an optimisation; fall back to the SM count
            pass
        _MAX_CLUSTERS[key] = v
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
    """Kernels for a manifest's ``gemm`` list: entries ``{"kind": "fp8"|"bf16", "n": N, "k": K,
    "m": [64, 128, 4096], "accum": false}`` (``m`` picks the configs; default 64, 128, 4096)."""
    specs = []
    for e in entries or []:
        kind = e.get("kind", "fp8")
        n, k = int(e["n"]), int(e["k"])
        for m in e.get("m", [64, 128, 4096]):
            cfg = heuristics.gemm_config(kind, int(m), n, k, target.num_sms, target.name, target.smem_per_block)
            specs.append(gemm_spec(kind, n, k, cfg, bool(e.get("accum", False))))
    return specs
