"""Grouped (MoE) GEMMs on the dense GEMM kernel: contiguous and masked layouts, FP8 and BF16.

CPU: reference self-consistency, compile for sm_90a (no spills, tensor-core instructions),
validation. GPU (`-m gpu`): per-group error vs float64 <= `reference.gemm.bf16_output_bound`
(2e-3; under 4096 elements, the group's own bf16 rounding + 5e-4 where larger: see test_gemm.py),
padding rows zero (contiguous), rows past masked_m untouched (masked).
"""
import os
import random

import pytest
import torch
from hypothesis import given, settings, strategies as st

from jitkern import heuristics
from jitkern.reference import gemm as ref
from jitkern.reference.quant import quant_block, quant_token_group
from sass_tools import sass_of

NK = [(4096, 7168), (7168, 2048), (576, 512), (2112, 1536), (256, 256)]


def _quant_b(w):
    qs = [quant_block(w[g]) for g in range(w.shape[0])]
    return torch.stack([q for q, _ in qs]), torch.stack([s for _, s in qs])


# ----------------------------------------------------------------------------- CPU

def test_grouped_refs_match_dense_ref():
    torch.manual_seed(1)
    g, n, k = 3, 136, 256
    counts = [5, 0, 130]
    al = 128
    rows = [-(-c // al) * al for c in counts]
    m = sum(rows)
    x = torch.randn(m, k)
    gi = torch.full((m,), -1, dtype=torch.int32)
    off = 0
    for i, (c, r) in enumerate(zip(counts, rows)):
        gi[off:off + c] = i
        off += r
    qa, sa = quant_token_group(x)
    qb, sb = _quant_b(torch.randn(g, n, k))
    d = ref.grouped_contiguous_ref((qa, sa), (qb, sb), gi)
    off = 0
    for i, (c, r) in enumerate(zip(counts, rows)):
        if c:
            want = ref.gemm_fp8_nt_ref((qa[off:off + c], sa[off:off + c]), (qb[i], sb[i]))
            assert torch.allclose(d[off:off + c], want)
        assert (d[off + c:off + r] == 0).all()
        off += r
    am = torch.randn(g, 8, k).bfloat16()
    bm = torch.randn(g, n, k).bfloat16()
    mm = torch.tensor([3, 0, 9], dtype=torch.int32)  # 9 > max_m: clamped to 8
    dm = ref.grouped_masked_ref(am, bm, mm, fp8=False)
    assert torch.allclose(dm[2], am[2].double() @ bm[2].double().t())
    assert torch.isnan(dm[0, 3:]).all() and torch.isnan(dm[1]).all()




# contiguous 256x64 is the pipelined-promotion build of the 256-row contiguous tiles (its idle wave
# is computed and dropped), 256x128 the default one (idle wave skipped per k-block)
@pytest.mark.parametrize("kind,mode,bm,bn", [("fp8", 1, 128, 128), ("bf16", 1, 128, 256), ("fp8", 2, 64, 128),
                                             ("bf16", 2, 64, 256), ("fp8", 2, 256, 128), ("fp8", 1, 256, 128),
                                             ("fp8", 1, 256, 64)])
def test_grouped_kernels_compile(kind, mode, bm, bn, cache_dir):
    from jitkern.ops.gemm import gemm_spec
    from jitkern.runtime import compile_spec
    cfg = heuristics.GemmConfig(bm, bn, heuristics.gemm_max_stages(kind, bm, bn), 16, 132)
    entry, status = compile_spec(gemm_spec(kind, 7168, 2048, cfg, group_mode=mode), "sm_90a")
    p = entry.meta["ptxas"]
    assert p.get("spill_stores", 0) == 0 and p.get("stack_frame", 0) == 0, p
    assert p["wgmma_serialized"] is False, p  # ptxas C7511
    assert ("QGMMA" if kind == "fp8" else "HGMMA") in sass_of(entry.cubin)


def test_grouped_validation():
    from jitkern.ops.gemm import grouped_gemm_bf16_contiguous, grouped_gemm_fp8_masked
    a = torch.zeros(128, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="^a:"):
        grouped_gemm_bf16_contiguous(a.float(), a, torch.zeros(128, dtype=torch.int32))
    with pytest.raises(ValueError, match="^a:"):
        grouped_gemm_fp8_masked(a, a, torch.zeros(1, dtype=torch.int32), 4)


# ----------------------------------------------------------------------------- GPU

def _contiguous_case(kind, counts, n, k, seed, config=None, extra=None, labels=None):
    """Group i: counts[i] rows, padded to the alignment, then extra[i] whole 128-row padding blocks
    (left untouched: NaN), rows labelled labels[i] (default i)."""
    from jitkern.ops.gemm import grouped_gemm_bf16_contiguous, grouped_gemm_fp8_contiguous, grouped_m_alignment
    dev = "cuda"
    gen = torch.Generator(device=dev).manual_seed(seed)
    al = grouped_m_alignment()
    extra = extra or [0] * len(counts)
    labels = labels or list(range(len(counts)))
    rows = [-(-c // al) * al + e * al for c, e in zip(counts, extra)]
    m = sum(rows)
    g = len(counts)
    gi = torch.full((m,), -1, dtype=torch.int32, device=dev)
    off = 0
    for i, (c, r) in enumerate(zip(counts, rows)):
        gi[off:off + c] = labels[i]
        off += r
    x = torch.randn(m, k, device=dev, generator=gen)
    w = torch.randn(g, n, k, device=dev, generator=gen)
    out = torch.full((m, n), float("nan"), device=dev, dtype=torch.bfloat16)
    if kind == "fp8":
        a, b = quant_token_group(x), _quant_b(w)
        grouped_gemm_fp8_contiguous(a, b, gi, out=out, config=config)
        want = ref.grouped_contiguous_ref(a, b, gi)
    else:
        a, b = x.bfloat16(), w.bfloat16()
        grouped_gemm_bf16_contiguous(a, b, gi, out=out, config=config)
        want = ref.grouped_contiguous_ref(a, b, gi, fp8=False)
    off = 0
    for i, (c, r) in enumerate(zip(counts, rows)):
        c_al = -(-c // al) * al
        if c:
            err = ref.rel_err(out[off:off + c], want[off:off + c])
            assert err <= ref.bf16_output_bound(want[off:off + c]), (i, c, n, k, err)
            assert (out[off + c:off + c_al] == 0).all(), "padding rows must be zero"
        assert torch.isnan(out[off + c_al:off + r].float()).all(), "whole padding blocks must stay untouched"
        off += r


def _masked_case(kind, masked, max_m, n, k, seed, expected_m=None, config=None):
    from jitkern.ops.gemm import grouped_gemm_bf16_masked, grouped_gemm_fp8_masked
    dev = "cuda"
    gen = torch.Generator(device=dev).manual_seed(seed)
    g = len(masked)
    mm = torch.tensor(masked, dtype=torch.int32, device=dev)
    x = torch.randn(g * max_m, k, device=dev, generator=gen)
    w = torch.randn(g, n, k, device=dev, generator=gen)
    out = torch.full((g, max_m, n), float("nan"), device=dev, dtype=torch.bfloat16)
    em = expected_m if expected_m is not None else max(1, sum(masked) // max(1, g))
    if kind == "fp8":
        qa, sa = quant_token_group(x)
        a = (qa.view(g, max_m, k), sa.view(g, max_m, -1))
        b = _quant_b(w)
        grouped_gemm_fp8_masked(a, b, mm, em, out=out, config=config)
        want = ref.grouped_masked_ref(a, b, mm)
    else:
        a, b = x.bfloat16().view(g, max_m, k), w.bfloat16()
        grouped_gemm_bf16_masked(a, b, mm, em, out=out, config=config)
        want = ref.grouped_masked_ref(a, b, mm, fp8=False)
    for i, c in enumerate(masked):
        c = max(0, min(c, max_m))
        if c:
            err = ref.rel_err(out[i, :c], want[i, :c])
            assert err <= ref.bf16_output_bound(want[i, :c]), (i, c, n, k, err)
        assert torch.isnan(out[i, c:].float()).all(), "rows past masked_m must stay untouched"


@pytest.mark.gpu
@settings(max_examples=int(os.environ.get("GEMM_EXAMPLES", "15")))
@given(kind=st.sampled_from(["fp8", "bf16"]),
       counts=st.lists(st.one_of(st.just(0), st.just(1), st.integers(0, 700)), min_size=1, max_size=12),
       nk=st.sampled_from(NK), seed=st.integers(0, 2**31 - 1))
def test_grouped_contiguous_hypothesis(kind, counts, nk, seed):
    if sum(counts) == 0:
        counts = counts + [3]
    _contiguous_case(kind, counts, *nk, seed)


# 256-row contiguous tiles (gemm.cuh ContigSlot): 128-row blocks b, slots of blocks (2p, 2p + 1).
# (counts, extra whole padding blocks after each group, labels), block layout in the comments.
CONTIG_256_CASES = [
    ([1000], None, None),                      # G=1, 8 blocks (even), partial padding in the last
    ([896], None, None),                       # G=1, 7 blocks (odd), no padding: last slot past M
    ([128], None, None),                       # G=1, one block: a 256-row tile on a 128-row matrix
    ([128, 300, 513, 256, 1], None, None),     # 1 | 3 from b1 | 5 from b4 | 2 from b9 (two halves) | b11
    ([128] * 7, None, None),                   # every slot split; b6's slot ends at M
    ([0, 200, 0, 129, 384, 1], [1, 1, 2, 0, 1, 0], None),  # padding blocks b0, b3, b4, b5, b11
    ([640, 384, 130], [0, 1, 0], [2, 0, 1]),   # labels not ascending; b8 padding splits slot 4
    ([1500, 129, 1024, 383], [0, 0, 1, 0], None),
]
CONTIG_256_CFGS = [heuristics.GemmConfig(256, 128, 3), heuristics.GemmConfig(256, 96, 3),
                   heuristics.GemmConfig(256, 64, 4)]  # 256x64: pipelined promotion (idle wave computed)


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", CONTIG_256_CFGS, ids=lambda c: c.label())
@pytest.mark.parametrize("n,k", [(576, 512), (2112, 1536)])
@pytest.mark.parametrize("case", range(len(CONTIG_256_CASES)))
def test_grouped_contiguous_256(case, n, k, cfg):
    counts, extra, labels = CONTIG_256_CASES[case]
    _contiguous_case("fp8", counts, n, k, random.randrange(1 << 30), config=cfg, extra=extra, labels=labels)


@pytest.mark.gpu
@settings(max_examples=int(os.environ.get("GEMM_EXAMPLES", "15")))
@given(groups=st.lists(st.tuples(st.one_of(st.just(0), st.just(128), st.just(256), st.integers(1, 1100)),
                                 st.integers(0, 2)), min_size=1, max_size=10),
       nk=st.sampled_from(NK), seed=st.integers(0, 2**31 - 1))
def test_grouped_contiguous_256_hypothesis(groups, nk, seed):
    counts, extra = [c for c, _ in groups], [e for _, e in groups]
    if sum(counts) == 0:
        counts[-1] = 3
    _contiguous_case("fp8", counts, *nk, seed, config=heuristics.GemmConfig(256, 128, 3), extra=extra)


@pytest.mark.gpu
@settings(max_examples=int(os.environ.get("GEMM_EXAMPLES", "15")))
@given(kind=st.sampled_from(["fp8", "bf16"]),
       masked=st.lists(st.one_of(st.just(0), st.just(1), st.integers(0, 300)), min_size=1, max_size=16),
       max_m=st.sampled_from([64, 128, 200, 256]), nk=st.sampled_from(NK), seed=st.integers(0, 2**31 - 1))
def test_grouped_masked_hypothesis(kind, masked, max_m, nk, seed):
    _masked_case(kind, masked, max_m, *nk, seed)  # masked_m > max_m is clamped


# Row counts on both sides of every 64-row wave edge of 128- and 256-row tiles: a wave (or a whole
# warpgroup) past masked_m computes nothing but must keep the smem ring in step.
WAVE_EDGE_COUNTS = [0, 1, 63, 64, 65, 127, 128, 129, 191, 192, 193, 255, 256, 257, 320, 999]
MASKED_CFGS = [("fp8", heuristics.GemmConfig(256, 128, 4)), ("fp8", heuristics.GemmConfig(256, 96, 4)),
               ("fp8", heuristics.GemmConfig(128, 128, 6)), ("fp8", heuristics.GemmConfig(128, 112, 6)),
               ("bf16", heuristics.GemmConfig(128, 128, 5))]


@pytest.mark.gpu
@pytest.mark.parametrize("kind,cfg", MASKED_CFGS, ids=lambda c: c if isinstance(c, str) else c.label())
@pytest.mark.parametrize("n,k", [(576, 512), (2112, 1536)])
def test_grouped_masked_wave_edges(kind, cfg, n, k):
    # max_m 320 is not a multiple of 256: a group's second 256-row tile reads the next group's A rows
    _masked_case(kind, random.sample(WAVE_EDGE_COUNTS, len(WAVE_EDGE_COUNTS)), 320, n, k,
                 random.randrange(1 << 30), expected_m=192, config=cfg)


def test_masked_fp8_default_tiles():
    from jitkern.ops.gemm import _grouped_config
    from jitkern.runtime.arch import target_for_arch
    t = target_for_arch("sm_90a")
    assert _grouped_config("fp8", 192, 32, 6144, 7168, t, None, masked=True).block_m == 256
    assert _grouped_config("fp8", 100, 32, 6144, 7168, t, None, masked=True).block_m == 128
    assert _grouped_config("bf16", 192, 32, 6144, 7168, t, None, masked=True).block_m == 128
    assert _grouped_config("fp8", 192, 32, 6144, 7168, t, None).block_m == 128  # contiguous: 128-row groups


def test_contiguous_fp8_default_tiles():
    from jitkern.bench.grouped import CONTIGUOUS
    from jitkern.ops.gemm import CONTIG_256_MIN_ROWS, _grouped_config
    from jitkern.runtime.arch import target_for_arch
    t = target_for_arch("sm_90a")
    for g, m, n, k in CONTIGUOUS:  # rows per group as grouped_gemm_fp8_contiguous computes them
        cfg = _grouped_config("fp8", max(65, m // g), g, n, k, t, None)
        # as measured (scripts/contig_ab.py, gemm NOTES): 256-row tiles win at G=4, 8, lose at G=32
        want = (256, 128, 3) if g in (4, 8) else (128, 128, 5)
        assert (cfg.block_m, cfg.block_n, cfg.stages) == want, (g, m, n, k, cfg)
        assert cfg.stages == heuristics.gemm_max_stages("fp8", cfg.block_m, 128)  # TMA-store budget
        assert _grouped_config("bf16", max(65, m // g), g, n, k, t, None).block_m == 128
    assert _grouped_config("fp8", CONTIG_256_MIN_ROWS - 1, 8, 7168, 2048, t, None).block_m == 128
    assert _grouped_config("fp8", CONTIG_256_MIN_ROWS, 8, 7168, 2048, t, None).block_m == 256
    # one wave of tiles either way: the 128-row tiles split the rows over twice the CTAs
    assert _grouped_config("fp8", 1024, 1, 576, 512, t, None).block_m == 128
    forced = heuristics.GemmConfig(256, 128, 3)
    assert _grouped_config("fp8", 200, 4, 576, 512, t, forced) is forced
    for kind, cfg in (("bf16", forced), ("fp8", heuristics.GemmConfig(256, 192, 2))):
        with pytest.raises(ValueError, match="^config: BLOCK_M 256"):
            _grouped_config(kind, 2048, 4, 576, 512, t, cfg)


@pytest.mark.gpu
def test_grouped_masked_graph_capture():
    from jitkern.ops.gemm import grouped_gemm_fp8_masked
    dev = "cuda"
    g, max_m, n, k = 4, 128, 576, 512
    qa, sa = quant_token_group(torch.randn(g * max_m, k, device=dev))
    a = (qa.view(g, max_m, k), sa.view(g, max_m, -1))
    b = _quant_b(torch.randn(g, n, k, device=dev))
    mm = torch.tensor([1, 0, 77, 128], dtype=torch.int32, device=dev)
    out = torch.empty(g, max_m, n, device=dev, dtype=torch.bfloat16)
    grouped_gemm_fp8_masked(a, b, mm, 64, out=out)
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s), torch.cuda.graph(graph, stream=s):
        grouped_gemm_fp8_masked(a, b, mm, 64, out=out)
    mm.copy_(torch.tensor([5, 128, 0, 3], dtype=torch.int32))  # new counts, same graph
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    want = ref.grouped_masked_ref(a, b, mm)
    for i, c in enumerate([5, 128, 0, 3]):
        if c:
            assert ref.rel_err(out[i, :c], want[i, :c]) <= ref.bf16_output_bound(want[i, :c])
        assert torch.isnan(out[i, c:].float()).all()
